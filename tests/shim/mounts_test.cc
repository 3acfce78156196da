// Host mounts as the shim makes them (needs root, like the shim).
#include "shim/mounts.h"

#include <stdlib.h>
#include <sys/stat.h>

#include <fstream>
#include <sstream>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace kapsel::shim {
namespace {

std::string Read(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

bool IsMounted(const std::string& path) {
  return Read("/proc/self/mountinfo").find(" " + path + " ") != std::string::npos;
}

class MountsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "needs root";
    char dir[] = "/tmp/kapsel-mounts-XXXXXX";
    ASSERT_NE(mkdtemp(dir), nullptr);
    dir_ = dir;
  }
  void TearDown() override {
    if (dir_.empty()) return;
    EXPECT_TRUE(UnmountAll(dir_).ok());
    EXPECT_TRUE(RemoveTree(dir_).ok());
  }
  std::string dir_;
};

TEST_F(MountsTest, OverlayLikeContainerdsSnapshotter) {
  for (const char* d : {"/lower", "/upper", "/work"}) mkdir((dir_ + d).c_str(), 0755);
  std::ofstream(dir_ + "/lower/file") << "from lower";
  containerd::types::Mount m;
  m.set_type("overlay");
  m.set_source("overlay");
  m.add_options("index=off");
  m.add_options("workdir=" + dir_ + "/work");
  m.add_options("upperdir=" + dir_ + "/upper");
  m.add_options("lowerdir=" + dir_ + "/lower");
  const std::string target = dir_ + "/shared/c1/rootfs";
  ASSERT_TRUE(MountAll({m}, target).ok());
  EXPECT_EQ(Read(target + "/file"), "from lower");
  std::ofstream(target + "/new") << "written";
  EXPECT_EQ(Read(dir_ + "/upper/new"), "written");

  // Removing a tree with a mount inside is refused; after UnmountAll it works.
  EXPECT_FALSE(RemoveTree(dir_ + "/shared").ok());
  EXPECT_TRUE(IsMounted(target));
  ASSERT_TRUE(UnmountAll(dir_ + "/shared").ok());
  EXPECT_FALSE(IsMounted(target));
  EXPECT_TRUE(RemoveTree(dir_ + "/shared").ok());
  EXPECT_EQ(Read(dir_ + "/upper/new"), "written") << "the upper dir is containerd's, untouched";
}

TEST_F(MountsTest, ReadOnlyBindOfAFile) {
  std::ofstream(dir_ + "/resolv.conf") << "nameserver 10.0.0.1\n";
  const std::string target = dir_ + "/mounts/0";
  ASSERT_TRUE(BindMount(dir_ + "/resolv.conf", target, /*read_only=*/true).ok());
  EXPECT_EQ(Read(target), "nameserver 10.0.0.1\n");
  std::ofstream out(target);
  EXPECT_FALSE(out.good()) << "a read-only bind must refuse writes";
}

TEST_F(MountsTest, BadMountNamesIt) {
  containerd::types::Mount m;
  m.set_type("overlay");
  m.set_source("overlay");
  m.add_options("lowerdir=/no/such/dir");
  absl::Status s = MountAll({m}, dir_ + "/rootfs");
  EXPECT_FALSE(s.ok());
  EXPECT_THAT(s.message(), ::testing::HasSubstr("lowerdir=/no/such/dir"));
  EXPECT_FALSE(IsMounted(dir_ + "/rootfs"));
}

}  // namespace
}  // namespace kapsel::shim
