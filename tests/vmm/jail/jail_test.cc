// kapsel-vmm's jail, entered in forked children (namespaces cannot be left again): they report,
// one "key=value" line each, what they can still reach, and the test compares.
#include "vmm/jail/jail.h"

#include <dirent.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <functional>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/unique_fd.h"
#include "gtest/gtest.h"

namespace kapsel::vmm {
namespace {

using Report = std::map<std::string, std::string>;

// Forks; the child runs `body`, which appends "key=value" lines to its argument, and sends them
// to the parent. Returns them by key.
Report RunInChild(const std::function<void(std::string*)>& body) {
  int fds[2];
  EXPECT_EQ(pipe2(fds, O_CLOEXEC), 0);
  const pid_t pid = fork();
  if (pid == 0) {
    close(fds[0]);
    std::string out;
    body(&out);
    const char* p = out.data();
    size_t left = out.size();
    while (left > 0) {
      const ssize_t n = write(fds[1], p, left);
      if (n <= 0) break;
      p += n;
      left -= static_cast<size_t>(n);
    }
    _exit(0);
  }
  close(fds[1]);
  std::string text;
  char buf[4096];
  ssize_t n;
  while ((n = read(fds[0], buf, sizeof(buf))) > 0) text.append(buf, static_cast<size_t>(n));
  close(fds[0]);
  int status = 0;
  EXPECT_EQ(waitpid(pid, &status, 0), pid);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "child status " << status;
  Report report;
  for (absl::string_view line : absl::StrSplit(text, '\n', absl::SkipEmpty())) {
    std::pair<std::string, std::string> kv = absl::StrSplit(line, absl::MaxSplits('=', 1));
    report[kv.first] = kv.second;
  }
  return report;
}

std::string Result(bool ok) { return ok ? "ok" : strerrorname_np(errno); }

sockaddr_un Address(const std::string& path, bool abstract = false) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path + (abstract ? 1 : 0), path.data(), path.size());
  return addr;
}

UniqueFd Listen(const std::string& path, bool abstract = false) {
  UniqueFd fd(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_un addr = Address(path, abstract);
  const socklen_t len =
      static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + (abstract ? 1 : 0) + path.size());
  EXPECT_EQ(bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), len), 0) << path;
  EXPECT_EQ(listen(fd.get(), 4), 0);
  return fd;
}

std::string Connect(const std::string& path, bool abstract = false) {
  UniqueFd fd(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_un addr = Address(path, abstract);
  const socklen_t len =
      static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + (abstract ? 1 : 0) + path.size());
  return Result(connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), len) == 0);
}

std::string List(const std::string& dir) {
  std::vector<std::string> names;
  if (DIR* d = opendir(dir.c_str())) {
    while (dirent* e = readdir(d)) {
      if (std::strcmp(e->d_name, ".") != 0 && std::strcmp(e->d_name, "..") != 0) {
        names.push_back(e->d_name);
      }
    }
    closedir(d);
  } else {
    return Result(false);
  }
  std::sort(names.begin(), names.end());
  return absl::StrJoin(names, ",");
}

class JailTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (geteuid() != 0) {
      GTEST_SKIP() << "the jail needs root";
    }
    char inside[] = "/tmp/kapsel-jail-in-XXXXXX";
    char outside[] = "/tmp/kapsel-jail-out-XXXXXX";
    ASSERT_NE(mkdtemp(inside), nullptr);
    ASSERT_NE(mkdtemp(outside), nullptr);
    inside_ = inside;
    outside_ = outside;
    ASSERT_EQ(mkdir((inside_ + "/sub").c_str(), 0755), 0);
    // A mount below the visible directory, which the jail must not carry along.
    ASSERT_EQ(mount("tmpfs", (inside_ + "/sub").c_str(), "tmpfs", 0, "size=16k"), 0);
    sub_mounted_ = true;
    ASSERT_EQ(close(open((inside_ + "/sub/hidden").c_str(), O_CREAT | O_WRONLY, 0644)), 0);
    ASSERT_EQ(close(open((outside_ + "/file").c_str(), O_CREAT | O_WRONLY, 0644)), 0);
  }

  void TearDown() override {
    if (sub_mounted_) {
      EXPECT_EQ(umount2((inside_ + "/sub").c_str(), 0), 0);
    }
    for (const std::string& dir : {inside_, outside_}) {
      if (dir.empty()) continue;
      EXPECT_EQ(std::system(absl::StrCat("rm -rf ", dir).c_str()), 0);
    }
  }

  std::string inside_;
  std::string outside_;
  bool sub_mounted_ = false;
};

TEST_F(JailTest, OnlyTheVisibleDirectoryIsLeft) {
  UniqueFd in_listener = Listen(inside_ + "/in.sock");
  UniqueFd out_listener = Listen(outside_ + "/out.sock");
  const std::string abstract_name = absl::StrCat("kapsel-jail-test-", getpid());
  UniqueFd abstract_listener = Listen(abstract_name, /*abstract=*/true);
  // The host can reach all three.
  ASSERT_EQ(Connect(outside_ + "/out.sock"), "ok");
  ASSERT_EQ(Connect(abstract_name, /*abstract=*/true), "ok");

  const std::string inside = inside_;
  const std::string outside = outside_;
  Report r = RunInChild([&](std::string* out) {
    absl::Status jailed = EnterJail({.visible_dirs = {inside + "/"}});
    absl::StrAppend(out, "status=", jailed.ToString(), "\n");
    if (!jailed.ok()) return;
    char cwd[256] = "";
    absl::StrAppend(out, "cwd=", getcwd(cwd, sizeof(cwd)) ? cwd : "?", "\n");
    absl::StrAppend(out, "root=", List("/"), "\n");
    absl::StrAppend(out, "tmp=", List("/tmp"), "\n");
    absl::StrAppend(out, "inside=", List(inside), "\n");
    absl::StrAppend(out, "sub=", List(inside + "/sub"), "\n");
    absl::StrAppend(out, "connect_inside=", Connect(inside + "/in.sock"), "\n");
    absl::StrAppend(out, "connect_outside=", Connect(outside + "/out.sock"), "\n");
    absl::StrAppend(out, "connect_abstract=", Connect(abstract_name, true), "\n");
    absl::StrAppend(out, "unlink_outside=", Result(unlink((outside + "/file").c_str()) == 0), "\n");
    struct stat st;
    absl::StrAppend(out, "stat_etc_passwd=", Result(stat("/etc/passwd", &st) == 0), "\n");
    absl::StrAppend(out, "stat_proc=", Result(stat("/proc/self", &st) == 0), "\n");
    absl::StrAppend(out, "mkdir_root=", Result(mkdir("/new", 0755) == 0), "\n");
    const int fd = open((inside + "/written").c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
    absl::StrAppend(out, "create_inside=", Result(fd >= 0), "\n");
    if (fd >= 0) close(fd);
    absl::StrAppend(out, "mount=", Result(mount("t", inside.c_str(), "tmpfs", 0, nullptr) == 0),
                    "\n");
    __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
    __user_cap_data_struct caps[_LINUX_CAPABILITY_U32S_3] = {};
    syscall(SYS_capget, &header, caps);
    uint64_t all = 0;
    for (const auto& c : caps) all |= c.effective | c.permitted | c.inheritable;
    absl::StrAppend(out, "caps=", all, "\n");
    absl::StrAppend(out, "bounding_sys_admin=", prctl(PR_CAPBSET_READ, CAP_SYS_ADMIN), "\n");
  });
  ASSERT_EQ(r["status"], "OK");
  EXPECT_EQ(r["cwd"], "/");
  EXPECT_EQ(r["root"], "tmp");
  EXPECT_EQ(r["tmp"], inside_.substr(5));
  EXPECT_EQ(r["inside"], "in.sock,sub");
  EXPECT_EQ(r["sub"], "") << "a mount below the visible directory came along";
  EXPECT_EQ(r["connect_inside"], "ok");
  EXPECT_EQ(r["connect_outside"], "ENOENT");
  EXPECT_EQ(r["connect_abstract"], "ECONNREFUSED");
  EXPECT_EQ(r["unlink_outside"], "ENOENT");
  EXPECT_EQ(r["stat_etc_passwd"], "ENOENT");
  EXPECT_EQ(r["stat_proc"], "ENOENT");
  EXPECT_EQ(r["mkdir_root"], "EROFS");
  EXPECT_EQ(r["create_inside"], "ok");
  EXPECT_EQ(r["mount"], "EPERM");
  EXPECT_EQ(r["caps"], "0");
  EXPECT_EQ(r["bounding_sys_admin"], "0");
  // The host's side is untouched.
  EXPECT_EQ(access((outside_ + "/file").c_str(), F_OK), 0);
  EXPECT_EQ(access((inside_ + "/written").c_str(), F_OK), 0);
  EXPECT_EQ(access((inside_ + "/sub/hidden").c_str(), F_OK), 0);
  EXPECT_EQ(Connect(outside_ + "/out.sock"), "ok");
}

TEST_F(JailTest, NothingVisibleLeavesAnEmptyRoot) {
  Report r = RunInChild([](std::string* out) {
    absl::Status jailed = EnterJail({});
    absl::StrAppend(out, "status=", jailed.ToString(), "\n", "root=", List("/"), "\n");
  });
  EXPECT_EQ(r["status"], "OK");
  EXPECT_EQ(r["root"], "");
}

TEST_F(JailTest, BadDirectoriesAreNamed) {
  const std::string inside = inside_;
  Report r = RunInChild([&](std::string* out) {
    absl::StrAppend(out, "relative=", EnterJail({.visible_dirs = {"tmp/x"}}).ToString(), "\n");
    absl::StrAppend(out, "root=", EnterJail({.visible_dirs = {"/"}}).ToString(), "\n");
    absl::StrAppend(out, "root_dotdot=", EnterJail({.visible_dirs = {"/tmp/.."}}).ToString(), "\n");
    absl::StrAppend(out, "missing=", EnterJail({.visible_dirs = {inside + "/missing"}}).ToString(),
                    "\n");
  });
  EXPECT_EQ(r["relative"], "INVALID_ARGUMENT: jail: tmp/x is not an absolute path");
  EXPECT_EQ(r["root"], "INVALID_ARGUMENT: jail: the host's root directory cannot be made visible");
  EXPECT_EQ(r["root_dotdot"],
            "INVALID_ARGUMENT: jail: the host's root directory cannot be made visible");
  EXPECT_EQ(r["missing"],
            absl::StrCat("NOT_FOUND: jail: bind ", inside_, "/missing: No such file or directory"));
}

TEST_F(JailTest, AThreadedProcessIsRefused) {
  Report r = RunInChild([](std::string* out) {
    int fds[2];
    if (pipe(fds) != 0) return;
    std::thread waiter([&] {
      char c;
      (void)read(fds[0], &c, 1);
    });
    absl::StrAppend(out, "status=", EnterJail({}).ToString(), "\n");
    close(fds[1]);
    waiter.join();
  });
  EXPECT_EQ(r["status"],
            "FAILED_PRECONDITION: jail: the process has 2 threads; it must be entered "
            "single-threaded");
}

TEST_F(JailTest, WithoutCapSysAdminTheErrorSaysSo) {
  Report r = RunInChild([](std::string* out) {
    if (setresuid(65534, 65534, 65534) != 0) return;
    absl::StrAppend(out, "status=", EnterJail({}).ToString(), "\n");
  });
  EXPECT_EQ(r["status"],
            "PERMISSION_DENIED: jail: new mount and network namespaces (this needs CAP_SYS_ADMIN: "
            "run kapsel-vmm as root): Operation not permitted");
}

}  // namespace
}  // namespace kapsel::vmm
