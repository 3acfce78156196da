// Pod networking, kapsel beside runc in the same environment and run: a pod on the CNI bridge
// (tests/support/private-containerd --cri, driven with kapsel-cri) runs busybox httpd serving a
// --mib MiB file from a tmpfs; from the node's side of the bridge (containerd's network namespace):
//   - download: `busybox wget -O /dev/null` of that file from the pod's IP (median of --runs),
//   - upload: the pod pipes --mib MiB into `nc` to a listener on the node (median of --runs),
//   - node to pod: the pod wgets --mib MiB from a server on the node (median of --runs),
//   - small GET: one HTTP request for a tiny file, connect to close (median of --gets).
// kapsel's pod traffic crosses its VM's virtio-net device (a tap, tc-redirected from the pod's
// veth, no offloads); runc's stays in the host kernel. Prints the figures and the kapsel/runc
// ratios; asserts nothing about them, but a failed transfer ends the run with exit 1.
// The node-side ends of upload, node-to-pod and small GETs are sockets of this process, created in
// containerd's network namespace (setns around socket()), so they time the transfer itself and
// leave no process behind.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <future>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/unique_fd.h"
#include "tests/support/subprocess.h"

ABSL_FLAG(int, mib, 32, "size of the file served by the pod, and of each transfer (MiB)");
ABSL_FLAG(int, runs, 3, "transfers per direction and runtime (the median is printed)");
ABSL_FLAG(int, gets, 20, "small GETs per runtime (the median is printed)");

namespace {

using kapsel::UniqueFd;
using kapsel::testing::ProcessResult;

constexpr char kCri[] = KAPSEL_CRI_BIN;
constexpr char kImage[] = "kapsel.test/busybox:latest";
constexpr const char* kRuntimes[] = {"kapsel", "runc"};
// The node's address for the pod to reach (on the node's loopback, outside the bridge's subnet:
// the pod reaches it through its default route), as in cri_e2e.
constexpr char kNodeAddress[] = "192.0.2.1";
constexpr int kPodPort = 8080;
constexpr absl::Duration kTransferTimeout = absl::Seconds(300);

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? -1 : v[v.size() / 2];
}

absl::Status ErrnoError(const std::string& what) { return absl::ErrnoToStatus(errno, what); }

std::string Describe(const ProcessResult& r) {
  return absl::StrCat("exit ", r.exit_code, r.timed_out ? " (timed out)" : "",
                      "; stdout: ", r.out.substr(0, 1000), "; stderr: ", r.err.substr(0, 2000));
}

ProcessResult Run(const std::vector<std::string>& argv,
                  absl::Duration timeout = absl::Seconds(300)) {
  absl::StatusOr<ProcessResult> r = kapsel::testing::RunProcess(argv, timeout);
  if (!r.ok()) {
    ProcessResult failed;
    failed.err = r.status().ToString();
    return failed;
  }
  return *r;
}

ProcessResult Sh(const std::string& script, absl::Duration timeout = absl::Seconds(300)) {
  return Run({"/bin/bash", "-c", script}, timeout);
}

// Polls `fd` for `events` until `deadline` or `cancel`.
absl::Status WaitFd(int fd, short events, absl::Time deadline,
                    const std::atomic<bool>* cancel = nullptr) {
  for (;;) {
    if (cancel != nullptr && cancel->load()) return absl::CancelledError("cancelled");
    const absl::Duration left = deadline - absl::Now();
    if (left <= absl::ZeroDuration()) return absl::DeadlineExceededError("timed out");
    pollfd p = {fd, events, 0};
    const int n =
        poll(&p, 1, static_cast<int>(std::min<int64_t>(absl::ToInt64Milliseconds(left) + 1, 100)));
    if (n < 0 && errno != EINTR) return ErrnoError("poll");
    if (n > 0) return absl::OkStatus();
  }
}

// Writes all of `data` to the non-blocking `fd` by `deadline`.
absl::Status WriteAll(int fd, const char* data, size_t size, absl::Time deadline) {
  while (size > 0) {
    const ssize_t n = send(fd, data, size, MSG_NOSIGNAL);
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
      if (absl::Status s = WaitFd(fd, POLLOUT, deadline); !s.ok()) return s;
      continue;
    }
    if (n < 0) return ErrnoError("send");
    data += n;
    size -= n;
  }
  return absl::OkStatus();
}

// Reads from the non-blocking `fd` until EOF by `deadline`; appends to `out` when given. Returns
// the byte count.
absl::StatusOr<int64_t> ReadToEof(int fd, absl::Time deadline, std::string* out = nullptr) {
  static thread_local std::vector<char> buffer(256 << 10);
  int64_t total = 0;
  for (;;) {
    const ssize_t n = recv(fd, buffer.data(), buffer.size(), 0);
    if (n == 0) return total;
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
      if (absl::Status s = WaitFd(fd, POLLIN, deadline); !s.ok()) return s;
      continue;
    }
    if (n < 0) return ErrnoError("recv");
    total += n;
    if (out != nullptr) out->append(buffer.data(), n);
  }
}

// containerd's network namespace (the node's side of the CNI bridge): TCP sockets created there.
class NodeNetwork {
 public:
  static absl::StatusOr<NodeNetwork> Open(const char* netns_path) {
    NodeNetwork net;
    net.self_.reset(open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC));
    if (!net.self_) return ErrnoError("open /proc/self/ns/net");
    net.node_.reset(open(netns_path, O_RDONLY | O_CLOEXEC));
    if (!net.node_) return ErrnoError(absl::StrCat("open ", netns_path));
    return net;
  }

  // A non-blocking TCP socket in the node's network namespace (this thread enters it, makes the
  // socket and comes back).
  absl::StatusOr<UniqueFd> Socket() const {
    if (setns(node_.get(), CLONE_NEWNET) != 0) return ErrnoError("setns into the node's netns");
    UniqueFd fd(socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    const int socket_errno = errno;
    if (setns(self_.get(), CLONE_NEWNET) != 0) {
      std::perror("pod_network_bench: setns back into our own netns");
      std::abort();  // everything after would run in the wrong namespace
    }
    if (!fd) return absl::ErrnoToStatus(socket_errno, "socket");
    return fd;
  }

  // A listening socket on kNodeAddress, any port; returns it and sets `port`.
  absl::StatusOr<UniqueFd> Listen(int* port) const {
    absl::StatusOr<UniqueFd> fd = Socket();
    if (!fd.ok()) return fd.status();
    sockaddr_in addr = {};
    addr.sin_family = AF_INET;
    inet_pton(AF_INET, kNodeAddress, &addr.sin_addr);
    socklen_t len = sizeof(addr);
    if (bind(fd->get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
      return ErrnoError(absl::StrCat("bind ", kNodeAddress));
    }
    if (listen(fd->get(), 4) != 0) return ErrnoError("listen");
    if (getsockname(fd->get(), reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
      return ErrnoError("getsockname");
    }
    *port = ntohs(addr.sin_port);
    return fd;
  }

  // GET http://ip:port/path over HTTP/1.0; returns the whole response (status line on).
  absl::StatusOr<std::string> Get(const std::string& ip, int port, const std::string& path,
                                  absl::Duration timeout) const {
    const absl::Time deadline = absl::Now() + timeout;
    absl::StatusOr<UniqueFd> fd = Socket();
    if (!fd.ok()) return fd.status();
    sockaddr_in addr = {};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    if (inet_pton(AF_INET, ip.c_str(), &addr.sin_addr) != 1) {
      return absl::InvalidArgumentError(absl::StrCat("bad IPv4 address ", ip));
    }
    if (connect(fd->get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
      if (errno != EINPROGRESS) return ErrnoError(absl::StrCat("connect ", ip, ":", port));
      if (absl::Status s = WaitFd(fd->get(), POLLOUT, deadline); !s.ok()) return s;
      int error = 0;
      socklen_t len = sizeof(error);
      getsockopt(fd->get(), SOL_SOCKET, SO_ERROR, &error, &len);
      if (error != 0) return absl::ErrnoToStatus(error, absl::StrCat("connect ", ip, ":", port));
    }
    const std::string request = absl::StrCat("GET ", path, " HTTP/1.0\r\nHost: ", ip, "\r\n\r\n");
    if (absl::Status s = WriteAll(fd->get(), request.data(), request.size(), deadline); !s.ok()) {
      return s;
    }
    std::string response;
    if (absl::StatusOr<int64_t> n = ReadToEof(fd->get(), deadline, &response); !n.ok()) {
      return n.status();
    }
    if (!absl::StartsWith(response, "HTTP/1.") || response.find(" 200 ") == std::string::npos) {
      return absl::UnavailableError(absl::StrCat("GET ", path, ": ", response.substr(0, 200)));
    }
    return response;
  }

 private:
  UniqueFd self_;
  UniqueFd node_;
};

// One connection to a node-side listener, from accept to the peer's close.
struct Transfer {
  int64_t bytes = 0;
  absl::Duration time;
};

// Accepts one connection on `listener` and reads it to EOF (the pod's upload).
absl::StatusOr<Transfer> ReceiveOne(int listener, absl::Time deadline,
                                    const std::atomic<bool>* cancel) {
  if (absl::Status s = WaitFd(listener, POLLIN, deadline, cancel); !s.ok()) {
    return absl::Status(s.code(), absl::StrCat("no connection from the pod: ", s.message()));
  }
  UniqueFd conn(accept4(listener, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC));
  if (!conn) return ErrnoError("accept");
  const absl::Time start = absl::Now();
  absl::StatusOr<int64_t> n = ReadToEof(conn.get(), deadline);
  if (!n.ok()) return n.status();
  return Transfer{*n, absl::Now() - start};
}

// Accepts one HTTP request on `listener`, answers it with `bytes` zero bytes and waits for the
// client's close, which tells it got them all (the pod's download from the node).
absl::StatusOr<Transfer> ServeOne(int listener, int64_t bytes, absl::Time deadline,
                                  const std::atomic<bool>* cancel) {
  if (absl::Status s = WaitFd(listener, POLLIN, deadline, cancel); !s.ok()) {
    return absl::Status(s.code(), absl::StrCat("no connection from the pod: ", s.message()));
  }
  UniqueFd conn(accept4(listener, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC));
  if (!conn) return ErrnoError("accept");
  const absl::Time start = absl::Now();
  std::string request;
  char buffer[4096];
  while (request.find("\r\n\r\n") == std::string::npos) {
    const ssize_t n = recv(conn.get(), buffer, sizeof(buffer), 0);
    if (n == 0) return absl::UnavailableError("the pod closed before its request ended");
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
      if (absl::Status s = WaitFd(conn.get(), POLLIN, deadline); !s.ok()) return s;
      continue;
    }
    if (n < 0) return ErrnoError("recv");
    request.append(buffer, n);
  }
  const std::string header = absl::StrCat(
      "HTTP/1.0 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: ", bytes,
      "\r\n\r\n");
  if (absl::Status s = WriteAll(conn.get(), header.data(), header.size(), deadline); !s.ok()) {
    return s;
  }
  static const std::vector<char> zeros(256 << 10);
  for (int64_t left = bytes; left > 0;) {
    const size_t chunk = std::min<int64_t>(left, zeros.size());
    if (absl::Status s = WriteAll(conn.get(), zeros.data(), chunk, deadline); !s.ok()) return s;
    left -= chunk;
  }
  shutdown(conn.get(), SHUT_WR);
  if (absl::StatusOr<int64_t> n = ReadToEof(conn.get(), deadline); !n.ok()) return n.status();
  return Transfer{bytes, absl::Now() - start};
}

// A pod on the CNI network (network, pid and ipc namespaces of its own) with the `handler`
// runtime; stopped and removed when destroyed.
class Pod {
 public:
  static absl::StatusOr<std::unique_ptr<Pod>> Start(const std::string& handler,
                                                    const std::string& dir) {
    auto pod = std::unique_ptr<Pod>(new Pod(dir));
    const std::string name = absl::StrCat("net-", handler);
    pod->config_ = absl::StrCat(dir, "/", name, ".json");
    std::ofstream(pod->config_) << absl::StrCat(
        R"({"metadata":{"name":")", name, R"(","uid":")", name,
        R"(-uid","namespace":"default"},"logDirectory":")", dir,
        R"(/logs","linux":{"securityContext":{"namespaceOptions":)", kNamespaces, "}}}");
    ProcessResult r = Run({kCri, "runp", pod->config_, handler});
    if (r.exit_code != 0) return absl::InternalError(absl::StrCat("runp: ", Describe(r)));
    pod->id_ = std::string(absl::StripAsciiWhitespace(r.out));

    r = Run({kCri, "podip", pod->id_});
    if (r.exit_code != 0) return absl::InternalError(absl::StrCat("no pod IP: ", Describe(r)));
    pod->ip_ = std::string(absl::StripAsciiWhitespace(r.out));
    return pod;
  }

  ~Pod() {
    if (id_.empty()) return;
    ProcessResult r = Sh(absl::StrCat(kCri, " stopp ", id_, " && ", kCri, " rmp ", id_));
    if (r.exit_code != 0) {
      std::fprintf(stderr, "pod_network_bench: removing pod %s: %s\n", id_.c_str(),
                   Describe(r).c_str());
    }
  }

  const std::string& ip() const { return ip_; }

  // Creates and starts a container running `sh -c script` (no quotes or backslashes in it).
  absl::StatusOr<std::string> StartContainer(const std::string& name, const std::string& script) {
    const std::string config = absl::StrCat(dir_, "/", name, ".json");
    std::ofstream(config) << absl::StrCat(
        R"({"metadata":{"name":")", name, R"("},"image":{"image":")", kImage,
        R"("},"command":["/bin/sh","-c",")", script, R"("],"logPath":")", name,
        R"(.log","linux":{"securityContext":{"namespaceOptions":)", kNamespaces, "}}}");
    ProcessResult r = Run({kCri, "create", id_, config, config_});
    if (r.exit_code != 0) return absl::InternalError(absl::StrCat("create: ", Describe(r)));
    const std::string container(absl::StripAsciiWhitespace(r.out));
    r = Run({kCri, "start", container});
    if (r.exit_code != 0) return absl::InternalError(absl::StrCat("start: ", Describe(r)));
    return container;
  }

  // `sh -c script` in `container` (CRI ExecSync).
  static ProcessResult Exec(const std::string& container, const std::string& script) {
    return Run({kCri, "exec", container, "/bin/sh", "-c", script}, kTransferTimeout);
  }

 private:
  static constexpr char kNamespaces[] = R"({"network":"POD","pid":"POD","ipc":"POD"})";

  explicit Pod(std::string dir) : dir_(std::move(dir)) {}

  std::string dir_;
  std::string config_;
  std::string id_;
  std::string ip_;
};

struct Figures {
  double download_mib_s = 0;
  double upload_mib_s = 0;
  double node_to_pod_mib_s = 0;
  double get_ms = 0;
};

// Runs the pod and measures; the pod is gone when it returns.
absl::StatusOr<Figures> Measure(const std::string& handler, const NodeNetwork& node,
                                const std::string& in_node, const std::string& dir) {
  const int mib = absl::GetFlag(FLAGS_mib);
  const int64_t bytes = int64_t{mib} << 20;
  absl::StatusOr<std::unique_ptr<Pod>> pod = Pod::Start(handler, dir);
  if (!pod.ok()) return pod.status();
  const std::string ip = (*pod)->ip();
  // The files live in the container's /dev, a tmpfs (in kapsel's VM too), so that serving them
  // reads no disk or virtio-fs.
  absl::StatusOr<std::string> server = (*pod)->StartContainer(
      "server", absl::StrCat("mkdir -p /dev/www && dd if=/dev/zero of=/dev/www/big bs=1048576 "
                             "count=",
                             mib,
                             " 2>/dev/null && echo ok > /dev/www/tiny && "
                             "exec httpd -f -p ",
                             kPodPort, " -h /dev/www"));
  if (!server.ok()) return server.status();

  // Ready when the tiny file (written after the big one) is served.
  absl::Status ready;
  for (const absl::Time deadline = absl::Now() + absl::Seconds(120); absl::Now() < deadline;) {
    absl::StatusOr<std::string> got = node.Get(ip, kPodPort, "/tiny", absl::Seconds(5));
    ready = got.status();
    if (ready.ok()) break;
    absl::SleepFor(absl::Milliseconds(200));
  }
  if (!ready.ok()) {
    return absl::Status(ready.code(), absl::StrCat("the pod's httpd at ", ip, ":", kPodPort,
                                                   " never answered: ", ready.message()));
  }

  Figures f;
  std::vector<double> times;
  for (int i = 0; i < absl::GetFlag(FLAGS_gets); ++i) {
    const absl::Time start = absl::Now();
    absl::StatusOr<std::string> got = node.Get(ip, kPodPort, "/tiny", absl::Seconds(30));
    if (!got.ok() || !absl::EndsWith(*got, "\r\n\r\nok\n")) {
      return absl::UnavailableError(
          absl::StrCat("small GET of http://", ip, ":", kPodPort, "/tiny: ",
                       got.ok() ? absl::StrCat("unexpected answer ", got->substr(0, 200))
                                : got.status().ToString()));
    }
    times.push_back(absl::ToDoubleMilliseconds(absl::Now() - start));
  }
  f.get_ms = Median(times);

  // Download: the node fetches the big file (Debian's busybox wget crashes with -T: `timeout`).
  times.clear();
  for (int i = 0; i < absl::GetFlag(FLAGS_runs); ++i) {
    const absl::Time start = absl::Now();
    ProcessResult r =
        Sh(absl::StrCat(in_node, "timeout ", absl::ToInt64Seconds(kTransferTimeout),
                        " busybox wget -q -O /dev/null http://", ip, ":", kPodPort, "/big"),
           kTransferTimeout + absl::Seconds(10));
    const double seconds = absl::ToDoubleSeconds(absl::Now() - start);
    if (r.exit_code != 0) {
      return absl::UnavailableError(
          absl::StrCat("download of http://", ip, ":", kPodPort, "/big failed: ", Describe(r)));
    }
    times.push_back(mib / seconds);
  }
  f.download_mib_s = Median(times);

  // Upload: the pod pipes zeros into nc to the node, which reads them to EOF; and the other way,
  // the pod wgets from the node. The node's end is a socket of ours (connection to close).
  struct Direction {
    const char* name;
    bool upload;
    double* figure;
  };
  for (const Direction& d :
       {Direction{"upload (pod nc to the node)", true, &f.upload_mib_s},
        Direction{"node to pod (pod wget from the node)", false, &f.node_to_pod_mib_s}}) {
    times.clear();
    for (int i = 0; i < absl::GetFlag(FLAGS_runs); ++i) {
      int port = 0;
      absl::StatusOr<UniqueFd> listener = node.Listen(&port);
      if (!listener.ok()) return listener.status();
      const std::string url = absl::StrCat(kNodeAddress, ":", port);
      std::atomic<bool> cancel{false};
      const absl::Time deadline = absl::Now() + kTransferTimeout;
      const int fd = listener->get();
      std::future<absl::StatusOr<Transfer>> node_end = std::async(std::launch::async, [&, fd]() {
        return d.upload ? ReceiveOne(fd, deadline, &cancel)
                        : ServeOne(fd, bytes, deadline, &cancel);
      });
      const std::string script =
          d.upload ? absl::StrCat("dd if=/dev/zero bs=65536 count=", mib * 16,
                                  " 2>/dev/null | timeout ", absl::ToInt64Seconds(kTransferTimeout),
                                  " nc ", kNodeAddress, " ", port)
                   : absl::StrCat("timeout ", absl::ToInt64Seconds(kTransferTimeout),
                                  " wget -q -O /dev/null http://", url, "/zeros");
      ProcessResult r = Pod::Exec(*server, script);
      if (r.exit_code != 0) cancel = true;
      absl::StatusOr<Transfer> t = node_end.get();
      if (r.exit_code != 0 || !t.ok()) {
        return absl::UnavailableError(
            absl::StrCat(d.name, " failed: in the pod `", script, "`: ", Describe(r),
                         "; on the node: ", t.ok() ? "ok" : t.status().ToString()));
      }
      if (t->bytes != bytes) {
        return absl::UnavailableError(
            absl::StrCat(d.name, ": the node got ", t->bytes, " bytes, not ", bytes));
      }
      times.push_back(mib / absl::ToDoubleSeconds(t->time));
    }
    *d.figure = Median(times);
  }
  return f;
}

// Removes the node address and the bench's files whatever happens.
struct Cleanup {
  std::string in_node;
  std::string dir;
  ~Cleanup() {
    if (!in_node.empty()) {
      Sh(absl::StrCat(in_node, "ip addr del ", kNodeAddress, "/32 dev lo"));
    }
    if (!dir.empty()) {
      std::error_code ignored;
      std::filesystem::remove_all(dir, ignored);
    }
  }
};

// Whether this runs in the test host (no hardware KVM on the machine), and why, as
// tests/testhost/probe says it.
std::string Environment() {
  if (std::getenv("KAPSEL_IN_TESTHOST") != nullptr) {
    return "ran in the nested test host (QEMU TCG with nested SVM): this machine's /dev/kvm is PVM "
           "or missing, so both runtimes ran on an emulated CPU and kapsel's VM on emulated SVM; "
           "hardware KVM figures will differ";
  }
  return "ran directly on this machine's KVM";
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  if (absl::GetFlag(FLAGS_mib) < 1 || absl::GetFlag(FLAGS_mib) > 48 ||
      absl::GetFlag(FLAGS_runs) < 1 || absl::GetFlag(FLAGS_gets) < 1) {
    std::fprintf(stderr,
                 "pod_network_bench: --mib must be 1..48 (the file lives in the container's "
                 "64 MiB /dev tmpfs), --runs and --gets >= 1\n");
    return 2;
  }
  const char* netns = std::getenv("KAPSEL_CONTAINERD_NETNS");
  if (netns == nullptr) {
    std::fprintf(stderr, "pod_network_bench: run under tests/support/private-containerd --cri\n");
    return 2;
  }
  absl::StatusOr<NodeNetwork> node = NodeNetwork::Open(netns);
  if (!node.ok()) {
    std::fprintf(stderr, "pod_network_bench: %s\n", node.status().ToString().c_str());
    return 1;
  }
  const std::string in_node = absl::StrCat("nsenter --net=", netns, " ");
  char dir_template[] = "pod-network-XXXXXX";
  if (mkdtemp(dir_template) == nullptr) {
    std::perror("pod_network_bench: mkdtemp");
    return 1;
  }
  Cleanup cleanup;
  cleanup.dir = std::filesystem::absolute(dir_template).string();
  std::filesystem::create_directory(cleanup.dir + "/logs");
  ProcessResult r = Sh(absl::StrCat(in_node, "ip addr add ", kNodeAddress, "/32 dev lo"));
  if (r.exit_code != 0) {
    std::fprintf(stderr, "pod_network_bench: adding %s to the node's lo: %s\n", kNodeAddress,
                 Describe(r).c_str());
    return 1;
  }
  cleanup.in_node = in_node;

  std::map<std::string, Figures> figures;
  for (const char* handler : kRuntimes) {
    absl::StatusOr<Figures> f = Measure(handler, *node, in_node, cleanup.dir);
    if (!f.ok()) {
      std::fprintf(stderr, "pod_network_bench: %s: %s\n", handler, f.status().ToString().c_str());
      return 1;
    }
    figures[handler] = *f;
  }
  // Nothing of kapsel may outlive its pod.
  r =
      Sh("for i in $(seq 50); do pgrep -f '[c]ontainerd-shim-kapsel-v2|[k]apsel-vmm|[v]irtiofsd' "
         ">/dev/null || exit 0; sleep 0.2; done; ps -eo pid,args | grep -E "
         "'[c]ontainerd-shim-kapsel-v2|[k]apsel-vmm|[v]irtiofsd'; exit 1");
  if (r.exit_code != 0) {
    std::fprintf(stderr, "pod_network_bench: kapsel processes left after the pods: %s\n",
                 r.out.c_str());
    return 1;
  }

  const Figures& k = figures["kapsel"];
  const Figures& c = figures["runc"];
  std::printf(
      "pod network over the CNI bridge, from the node's side (%d MiB transfers, median of %d; "
      "small GETs: median of %d)\n",
      absl::GetFlag(FLAGS_mib), absl::GetFlag(FLAGS_runs), absl::GetFlag(FLAGS_gets));
  std::printf(
      "  download: node `busybox wget -O /dev/null` of the pod's httpd file (incl. wget start)\n");
  std::printf("  upload: the pod's `dd | nc` to the node (node socket: accept to EOF)\n");
  std::printf(
      "  node->pod: the pod's `wget -O /dev/null` from the node (node socket: accept to close)\n");
  std::printf(
      "  small GET: HTTP/1.0 GET of a 3-byte file from the pod's httpd, connect to close\n");
  std::printf("%-12s %15s %13s %16s %13s\n", "runtime", "download MiB/s", "upload MiB/s",
              "node->pod MiB/s", "small GET ms");
  for (const char* handler : kRuntimes) {
    const Figures& f = figures[handler];
    std::printf("%-12s %15.1f %13.1f %16.1f %13.2f\n", handler, f.download_mib_s, f.upload_mib_s,
                f.node_to_pod_mib_s, f.get_ms);
  }
  std::printf("%-12s %15.2f %13.2f %16.2f %13.2f\n", "kapsel/runc",
              k.download_mib_s / c.download_mib_s, k.upload_mib_s / c.upload_mib_s,
              k.node_to_pod_mib_s / c.node_to_pod_mib_s, k.get_ms / c.get_ms);
  std::printf("%s\n", Environment().c_str());
  return 0;
}
