#include "tests/agent/container/container_fixture.h"

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "tests/support/subprocess.h"

namespace kapsel::agent::testing {
namespace {

void WriteFileOrDie(const std::string& path, const std::string& text) {
  std::ofstream out(path);
  out << text;
  ASSERT_TRUE(out.good()) << path;
}

oci::v1::Mount* AddMount(oci::v1::Spec& spec, const std::string& destination,
                         const std::string& type, const std::string& source,
                         const std::vector<std::string>& options) {
  oci::v1::Mount* mount = spec.add_mounts();
  mount->set_destination(destination);
  mount->set_type(type);
  mount->set_source(source);
  for (const std::string& option : options) mount->add_options(option);
  return mount;
}

}  // namespace

int WaitForExit(pid_t pid, absl::Duration timeout) {
  // Like the agent's reaper: reap every child, keep the statuses of those nobody asked for yet.
  static std::map<pid_t, int>* reaped = new std::map<pid_t, int>;
  absl::Time deadline = absl::Now() + timeout;
  for (;;) {
    if (auto it = reaped->find(pid); it != reaped->end()) {
      int status = it->second;
      reaped->erase(it);
      return status;
    }
    int status = 0;
    pid_t rc = waitpid(-1, &status, WNOHANG);
    if (rc > 0) {
      (*reaped)[rc] = status;
      continue;
    }
    if (rc < 0 && errno != EINTR) return -1;
    if (absl::Now() > deadline) return -1;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
}

std::string ReadAll(int fd, absl::Duration timeout) {
  std::string text;
  absl::Time deadline = absl::Now() + timeout;
  for (;;) {
    int64_t ms = absl::ToInt64Milliseconds(deadline - absl::Now());
    if (ms <= 0) break;
    pollfd pfd{fd, POLLIN, 0};
    int rc = poll(&pfd, 1, static_cast<int>(ms));
    if (rc < 0 && errno == EINTR) continue;
    if (rc <= 0) break;
    char buf[4096];
    ssize_t n = read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    text.append(buf, n);
  }
  return text;
}

std::set<std::string> MountPoints(const std::string& own_dir) {
  std::ifstream in("/proc/self/mountinfo");
  std::set<std::string> mounts;
  std::string line;
  while (std::getline(in, line)) {
    std::vector<std::string> fields = absl::StrSplit(line, ' ');
    if (fields.size() <= 4) continue;
    const std::string& path = fields[4];
    // Tests that ctest runs alongside (-j) mount and unmount there: pod_network_test's network
    // namespaces, other tests' directories.
    const bool others = absl::StartsWith(path, "/run/netns/") ||
                        (absl::StartsWith(path, "/tmp/kapsel-") &&
                         !(path == own_dir || absl::StartsWith(path, own_dir + "/")));
    if (!others) mounts.insert(path);
  }
  return mounts;
}

std::set<std::string> OpenFds() {
  std::set<std::string> fds;
  for (const auto& entry : std::filesystem::directory_iterator("/proc/self/fd")) {
    std::error_code ec;
    std::string target = std::filesystem::read_symlink(entry.path(), ec).string();
    fds.insert(absl::StrCat(entry.path().filename().string(), " -> ", target));
  }
  return fds;
}

void ContainerTest::SetUpTestSuite() { ASSERT_EQ(prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0), 0); }

void ContainerTest::SetUp() {
  ASSERT_EQ(getuid(), 0u) << "container tests run as root";
  char tmpl[] = "/tmp/kapsel-ct-XXXXXX";
  ASSERT_NE(mkdtemp(tmpl), nullptr);
  dir_ = tmpl;
  ASSERT_EQ(chmod(dir_.c_str(), 0755), 0);  // user-namespaced containers must reach the rootfs
  rootfs_ = dir_ + "/rootfs";
  for (const char* sub : {"", "/bin", "/proc", "/sys", "/dev", "/tmp", "/etc", "/root", "/mnt"}) {
    ASSERT_EQ(mkdir((rootfs_ + sub).c_str(), 0755), 0) << sub;
  }
  std::filesystem::copy_file("/bin/busybox", rootfs_ + "/bin/busybox");
  absl::StatusOr<kapsel::testing::ProcessResult> list =
      kapsel::testing::RunProcess({"/bin/busybox", "--list"}, absl::Seconds(10));
  ASSERT_TRUE(list.ok()) << list.status();
  for (absl::string_view applet : absl::StrSplit(list->out, '\n', absl::SkipEmpty())) {
    if (applet == "busybox") continue;
    std::string link = absl::StrCat(rootfs_, "/bin/", applet);
    ASSERT_EQ(symlink("busybox", link.c_str()), 0) << link;
  }
  WriteFileOrDie(rootfs_ + "/etc/passwd",
                 "root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000::/tmp:/bin/sh\n");
  WriteFileOrDie(rootfs_ + "/etc/group", "root:x:0:\nuser:x:1000:\nextra:x:2000:\n");

  cgroup_root_ = absl::StrCat("/sys/fs/cgroup/unified/kapsel-test-", getpid());
  ASSERT_EQ(mkdir(cgroup_root_.c_str(), 0755), 0) << cgroup_root_ << ": " << strerror(errno);
  mounts_before_ = MountPoints(dir_);
  fds_before_ = OpenFds();
}

void ContainerTest::TearDown() {
  EXPECT_EQ(MountPoints(dir_), mounts_before_) << "mounts changed on the host";
  EXPECT_EQ(OpenFds(), fds_before_) << "fds leaked";
  // Anything a test left behind fails here: the cgroup root must be empty.
  EXPECT_EQ(rmdir(cgroup_root_.c_str()), 0) << cgroup_root_ << ": " << strerror(errno);
  std::error_code ec;
  std::filesystem::remove_all(dir_, ec);
  EXPECT_FALSE(ec) << ec.message();
}

oci::v1::Spec ContainerTest::BaseSpec(const std::vector<std::string>& args) const {
  oci::v1::Spec spec;
  spec.set_oci_version("1.1.0");
  oci::v1::Process* process = spec.mutable_process();
  for (const std::string& arg : args) process->add_args(arg);
  process->add_env("PATH=/bin");
  process->add_env("HOME=/root");
  process->set_cwd("/");
  spec.mutable_root()->set_path(rootfs_);
  spec.set_hostname("kapsel-test");
  AddMount(spec, "/proc", "proc", "proc", {"nosuid", "noexec", "nodev"});
  AddMount(spec, "/dev", "tmpfs", "tmpfs", {"nosuid", "strictatime", "mode=755", "size=65536k"});
  AddMount(spec, "/dev/pts", "devpts", "devpts",
           {"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"});
  AddMount(spec, "/dev/mqueue", "mqueue", "mqueue", {"nosuid", "noexec", "nodev"});
  AddMount(spec, "/sys", "sysfs", "sysfs", {"nosuid", "noexec", "nodev", "ro"});
  AddMount(spec, "/tmp", "tmpfs", "tmpfs", {"nosuid", "nodev", "mode=1777"});
  for (const char* type : {"pid", "mount", "uts", "ipc", "network", "cgroup"}) {
    spec.mutable_linux()->add_namespaces()->set_type(type);
  }
  return spec;
}

ContainerOptions ContainerTest::Options() const {
  ContainerOptions options;
  options.cgroup_root = cgroup_root_;
  options.timeout = absl::Seconds(20);
  return options;
}

absl::StatusOr<RunResult> ContainerTest::Run(const oci::v1::Spec& spec, const std::string& id) {
  int out[2], err[2];
  if (pipe2(out, O_CLOEXEC) != 0 || pipe2(err, O_CLOEXEC) != 0) {
    return absl::InternalError("pipe2");
  }
  UniqueFd out_read(out[0]), out_write(out[1]), err_read(err[0]), err_write(err[1]);
  ContainerOptions options = Options();
  options.stdio.out = out_write.get();
  options.stdio.err = err_write.get();
  absl::StatusOr<std::unique_ptr<Container>> container = Container::Create(id, spec, options);
  out_write.reset();
  err_write.reset();
  if (!container.ok()) return container.status();
  absl::Status started = (*container)->Start();
  if (!started.ok()) {
    WaitForExit((*container)->init_pid(), absl::Seconds(10));
    return started;
  }
  RunResult result;
  std::thread err_reader([&] { result.err = ReadAll(err_read.get(), absl::Seconds(20)); });
  result.out = ReadAll(out_read.get(), absl::Seconds(20));
  err_reader.join();
  result.status = WaitForExit((*container)->init_pid(), absl::Seconds(20));
  (*container)->OnExit((*container)->init_pid(), result.status);
  absl::Status destroyed = (*container)->Destroy();
  if (!destroyed.ok()) return destroyed;
  return result;
}

}  // namespace kapsel::agent::testing
