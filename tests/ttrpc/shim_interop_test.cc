// Interoperability with Go's ttrpc: calls containerd-shim-runc-v2 (Debian's containerd package),
// started as containerd starts it. containerd itself need not run.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "common/ttrpc/client.h"
#include "gtest/gtest.h"
#include "tests/ttrpc/echo_service.h"
#include "google/protobuf/empty.pb.h"
#include "shim/api/task.pb.h"

extern char** environ;

namespace kapsel::ttrpc {
namespace {

using ::containerd::task::v2::ConnectRequest;
using ::containerd::task::v2::ConnectResponse;
using ::containerd::task::v2::ShutdownRequest;
using ::google::protobuf::Empty;
using ::kapsel::ttrpc::testing::TempDir;

constexpr char kShim[] = "/usr/bin/containerd-shim-runc-v2";
constexpr char kTaskService[] = "containerd.task.v2.Task";
constexpr char kNamespace[] = "kapseltest";
constexpr char kSocketDir[] = "/run/containerd/s";

bool Exists(const std::string& path) {
  struct stat st;
  return lstat(path.c_str(), &st) == 0;
}

// Waits for `pid` (our child) to exit; SIGKILLs it after `timeout`. True if it exited by itself.
bool ReapWithin(pid_t pid, absl::Duration timeout) {
  absl::Time deadline = absl::Now() + timeout;
  while (absl::Now() < deadline) {
    pid_t got = waitpid(pid, nullptr, WNOHANG);
    if (got == pid || (got < 0 && errno == ECHILD)) return true;
    absl::SleepFor(absl::Milliseconds(20));
  }
  kill(pid, SIGKILL);
  waitpid(pid, nullptr, 0);
  return false;
}

// Runs `shim start` in `bundle` like containerd does; returns the address it prints.
std::string StartShim(const std::string& bundle, const std::string& id) {
  int out[2];
  if (pipe2(out, O_CLOEXEC) != 0) return "";
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&actions, out[1], 1);
  posix_spawn_file_actions_addchdir_np(&actions, bundle.c_str());
  std::vector<std::string> argv = {"containerd-shim-runc-v2",
                                   "-namespace",
                                   kNamespace,
                                   "-address",
                                   "/run/containerd/containerd.sock",
                                   "-publish-binary",
                                   "/usr/bin/containerd",
                                   "-id",
                                   id,
                                   "start"};
  std::vector<std::string> env = {"TTRPC_ADDRESS=/run/containerd/containerd.sock.ttrpc"};
  for (char** e = environ; *e != nullptr; ++e) {
    if (!absl::StartsWith(*e, "TTRPC_ADDRESS=")) env.push_back(*e);
  }
  std::vector<char*> args, envp;
  for (std::string& a : argv) args.push_back(a.data());
  args.push_back(nullptr);
  for (std::string& e : env) envp.push_back(e.data());
  envp.push_back(nullptr);
  pid_t pid;
  int rc = posix_spawn(&pid, kShim, &actions, nullptr, args.data(), envp.data());
  posix_spawn_file_actions_destroy(&actions);
  close(out[1]);
  if (rc != 0) {
    close(out[0]);
    ADD_FAILURE() << "cannot start " << kShim << ": " << strerror(rc);
    return "";
  }
  std::string output;
  absl::Time deadline = absl::Now() + absl::Seconds(20);
  while (absl::Now() < deadline) {
    pollfd pfd = {out[0], POLLIN, 0};
    if (poll(&pfd, 1, 100) <= 0) continue;
    char buffer[512];
    ssize_t n = read(out[0], buffer, sizeof(buffer));
    if (n <= 0) break;
    output.append(buffer, static_cast<size_t>(n));
  }
  close(out[0]);
  EXPECT_TRUE(ReapWithin(pid, absl::Seconds(10))) << "shim start did not exit";
  return std::string(absl::StripAsciiWhitespace(output));
}

TEST(ShimInteropTest, GoTtrpcServer) {
  if (access(kShim, X_OK) != 0) GTEST_SKIP() << kShim << " is not installed";
  if (geteuid() != 0) GTEST_SKIP() << "the shim's socket goes under /run/containerd: needs root";

  const bool had_run_containerd = Exists("/run/containerd");
  const bool had_socket_dir = Exists(kSocketDir);
  TempDir bundle;
  { std::ofstream(bundle.path() + "/config.json") << "{}"; }
  // The shim logs into the fifo "log" of its bundle, which containerd creates and reads.
  ASSERT_EQ(mkfifo((bundle.path() + "/log").c_str(), 0600), 0);
  int log_fd = open((bundle.path() + "/log").c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  ASSERT_GE(log_fd, 0);
  std::string log;
  std::atomic<bool> stop_log{false};
  std::thread log_reader([&] {
    while (!stop_log.load()) {
      char buffer[4096];
      ssize_t n = read(log_fd, buffer, sizeof(buffer));
      if (n > 0) {
        log.append(buffer, static_cast<size_t>(n));
      } else {
        absl::SleepFor(absl::Milliseconds(20));
      }
    }
  });
  // The daemonized shim is reparented to us, so we can reap it.
  ASSERT_EQ(prctl(PR_SET_CHILD_SUBREAPER, 1), 0);

  const std::string id = absl::StrCat("test1-", getpid());
  std::string address;
  pid_t shim_pid = 0;
  absl::Cleanup cleanup = [&] {
    if (shim_pid > 0 && !ReapWithin(shim_pid, absl::Seconds(10))) {
      ADD_FAILURE() << "the shim did not exit after Shutdown; killed it";
    }
    prctl(PR_SET_CHILD_SUBREAPER, 0);
    std::string socket(absl::StripPrefix(address, "unix://"));
    if (absl::StartsWith(socket, kSocketDir)) unlink(socket.c_str());
    if (!had_socket_dir) rmdir(kSocketDir);
    if (!had_run_containerd) rmdir("/run/containerd");
    stop_log = true;
    log_reader.join();
    close(log_fd);
    if (::testing::Test::HasFailure()) std::cerr << "shim log:\n" << log;
  };

  address = StartShim(bundle.path(), id);
  ASSERT_TRUE(absl::StartsWith(address, absl::StrCat("unix://", kSocketDir, "/"))) << address;

  absl::StatusOr<std::unique_ptr<Client>> client = Client::Dial(address);
  ASSERT_TRUE(client.ok()) << client.status();
  CallOptions options = CallOptions::WithTimeout(absl::Seconds(10));
  options.metadata = {{std::string(kNamespaceMetadataKey), kNamespace}};

  ConnectRequest connect;
  connect.set_id(id);
  ConnectResponse connected;
  absl::Status status = (*client)->Call(kTaskService, "Connect", connect, &connected, options);
  ASSERT_TRUE(status.ok()) << status;
  shim_pid = static_cast<pid_t>(connected.shim_pid());
  EXPECT_GT(shim_pid, 0);
  EXPECT_EQ(connected.task_pid(), 0u);  // no container was created

  // Go's answers for what it does not serve.
  Empty empty;
  status = (*client)->Call(kTaskService, "NoSuchMethod", connect, &empty, options);
  EXPECT_TRUE(absl::IsUnimplemented(status)) << status;
  EXPECT_TRUE(absl::StrContains(status.message(), "NoSuchMethod")) << status;
  status = (*client)->Call("containerd.task.v9.Nope", "Connect", connect, &empty, options);
  EXPECT_TRUE(absl::IsUnimplemented(status)) << status;
  // A Go handler's error: the task does not exist.
  status = (*client)->Call(kTaskService, "State", connect, &empty, options);
  EXPECT_FALSE(status.ok());
  EXPECT_FALSE(absl::IsUnimplemented(status)) << status;

  // Concurrent calls on the one connection.
  std::vector<std::thread> threads;
  std::atomic<int> good{0};
  for (int i = 0; i < 8; ++i) {
    threads.emplace_back([&] {
      for (int j = 0; j < 10; ++j) {
        ConnectResponse again;
        if ((*client)->Call(kTaskService, "Connect", connect, &again, options).ok() &&
            again.shim_pid() == connected.shim_pid()) {
          ++good;
        }
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_EQ(good.load(), 80);

  // The shim exits on Shutdown; the answer may or may not make it out before.
  ShutdownRequest shutdown;
  shutdown.set_id(id);
  shutdown.set_now(true);
  status = (*client)->Call(kTaskService, "Shutdown", shutdown, &empty, options);
  EXPECT_TRUE(status.ok() || absl::IsUnavailable(status)) << status;
}

}  // namespace
}  // namespace kapsel::ttrpc
