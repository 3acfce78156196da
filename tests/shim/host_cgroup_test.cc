// HostCgroup on a cgroup v2 hierarchy: /sys/fs/cgroup when it is one, else the hybrid layout's
// /sys/fs/cgroup/unified (this machine's). Needs root.
#include "shim/host_cgroup.h"

#include <linux/magic.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <fstream>
#include <sstream>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "shim/child_process.h"

namespace kapsel::shim {
namespace {

using ::testing::HasSubstr;

std::string Read(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

bool IsCgroup2(const std::string& dir) {
  struct statfs fs;
  return statfs(dir.c_str(), &fs) == 0 && fs.f_type == CGROUP2_SUPER_MAGIC;
}

class HostCgroupTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (geteuid() != 0) {
      GTEST_SKIP() << "needs root";
    }
    for (const char* root : {"/sys/fs/cgroup", "/sys/fs/cgroup/unified"}) {
      if (IsCgroup2(root)) {
        root_ = root;
        break;
      }
    }
    if (root_.empty()) {
      GTEST_SKIP() << "no cgroup v2 hierarchy";
    }
    parent_ = absl::StrCat("/kapsel-cgroup-test-", getpid());
  }
  void TearDown() override {
    if (!root_.empty()) rmdir((root_ + parent_).c_str());
  }
  // The cgroup v2 path of `pid` ("/a/b") once it is `want` (the child moves itself after the fork,
  // which Spawn does not wait for), or as it is after 10 s.
  std::string CgroupOf(pid_t pid, const std::string& want) {
    std::string path;
    for (int i = 0; i < 1000 && (path = CgroupOf(pid)) != want; ++i) {
      absl::SleepFor(absl::Milliseconds(10));
    }
    return path;
  }
  std::string CgroupOf(pid_t pid) {
    std::ifstream in(absl::StrCat("/proc/", pid, "/cgroup"));
    std::string line;
    while (std::getline(in, line)) {
      if (line.rfind("0::", 0) == 0) return line.substr(3);
    }
    return "";
  }

  std::string root_;
  std::string parent_;
};

TEST_F(HostCgroupTest, ChildrenStartInsideAndRemoveKillsLeftovers) {
  absl::StatusOr<std::unique_ptr<HostCgroup>> cgroup =
      HostCgroup::Create(parent_ + "/sandbox", root_);
  ASSERT_TRUE(cgroup.ok()) << cgroup.status();
  ASSERT_NE(*cgroup, nullptr);
  const std::string dir = (*cgroup)->dir();
  EXPECT_EQ(dir, root_ + parent_ + "/sandbox");
  absl::StatusOr<std::unique_ptr<ChildProcess>> child =
      ChildProcess::Spawn({"/bin/sleep", "1000"}, "", {}, (*cgroup)->procs_fd());
  ASSERT_TRUE(child.ok()) << child.status();
  EXPECT_EQ(CgroupOf((*child)->pid(), parent_ + "/sandbox"), parent_ + "/sandbox");
  EXPECT_THAT(Read(dir + "/cgroup.events"), HasSubstr("populated 1"));
  // What a dead shim leaves: Remove kills it and removes the cgroup.
  ASSERT_TRUE(HostCgroup::Remove(dir).ok());
  EXPECT_EQ((*child)->Wait(absl::Seconds(10)), 128 + 9);
  EXPECT_NE(access(dir.c_str(), F_OK), 0);
  EXPECT_TRUE(HostCgroup::Remove(dir).ok()) << "removing it twice is fine";
  cgroup->reset();  // already gone: nothing to complain about
}

TEST_F(HostCgroupTest, DestructorRemovesTheEmptyCgroup) {
  std::string dir;
  {
    absl::StatusOr<std::unique_ptr<HostCgroup>> cgroup =
        HostCgroup::Create(parent_ + "//a/../sandbox/", root_);
    ASSERT_TRUE(cgroup.ok()) << cgroup.status();
    dir = (*cgroup)->dir();
    EXPECT_EQ(dir, root_ + parent_ + "/sandbox");
    auto child = ChildProcess::Spawn({"/bin/true"}, "", {}, (*cgroup)->procs_fd());
    ASSERT_TRUE(child.ok()) << child.status();
    EXPECT_EQ((*child)->Wait(absl::Seconds(10)), 0);
  }
  EXPECT_NE(access(dir.c_str(), F_OK), 0);
}

TEST_F(HostCgroupTest, NothingToDoOrBadPaths) {
  EXPECT_EQ(*HostCgroup::Create("", root_), nullptr);
  EXPECT_EQ(*HostCgroup::Create("kubepods.slice:cri-containerd:abc", root_), nullptr);
  EXPECT_EQ(*HostCgroup::Create(parent_ + "/x", "/tmp"), nullptr) << "not cgroup v2";
  // ".." cannot climb above the root ("/.." is "/"); the root itself is refused.
  absl::Status root = HostCgroup::Create("/a/../..", root_).status();
  EXPECT_EQ(root.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(root.message(), HasSubstr("linux.cgroupsPath '/a/../..' names the root cgroup"));
}

TEST_F(HostCgroupTest, ARelativePathIsBelowTheShimsOwnCgroup) {
  const std::string own = CgroupOf(getpid());
  absl::StatusOr<std::unique_ptr<HostCgroup>> cgroup =
      HostCgroup::Create(absl::StrCat("kapsel-cgroup-test-rel-", getpid()), root_);
  ASSERT_TRUE(cgroup.ok()) << cgroup.status();
  ASSERT_NE(*cgroup, nullptr);
  EXPECT_EQ((*cgroup)->dir(),
            absl::StrCat(root_, own == "/" ? "" : own, "/kapsel-cgroup-test-rel-", getpid()));
}

}  // namespace
}  // namespace kapsel::shim
