// Which containerd rootfs mounts the shim hands to the VM as a disk.
#include "shim/block_rootfs.h"

#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace kapsel::shim {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

containerd::types::Mount MountOf(const std::string& type, const std::string& source,
                                 const std::vector<std::string>& options) {
  containerd::types::Mount m;
  m.set_type(type);
  m.set_source(source);
  for (const std::string& o : options) m.add_options(o);
  return m;
}

class BlockRootfsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char path[] = "/tmp/kapsel-block-rootfs-XXXXXX";
    const int fd = mkstemp(path);
    ASSERT_GE(fd, 0);
    close(fd);
    image_ = path;
  }
  void TearDown() override { unlink(image_.c_str()); }
  std::string image_;
};

TEST_F(BlockRootfsTest, ImageFileWithLoopIsADisk) {
  absl::StatusOr<std::optional<BlockRootfs>> r =
      AsBlockRootfs({MountOf("ext4", image_, {"loop", "ro", "noatime"})});
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_TRUE(r->has_value());
  EXPECT_EQ((*r)->source, image_);
  EXPECT_EQ((*r)->fs_type, "ext4");
  EXPECT_TRUE((*r)->read_only);
  EXPECT_TRUE((*r)->image_file);
  EXPECT_THAT((*r)->options, ElementsAre("ro", "noatime"));  // loop is the host's business
}

TEST_F(BlockRootfsTest, OtherRootfsMountsAreNotDisks) {
  for (const std::vector<containerd::types::Mount>& mounts :
       std::vector<std::vector<containerd::types::Mount>>{
           {},
           {MountOf("overlay", "overlay", {"lowerdir=/a", "upperdir=/b", "workdir=/c"})},
           {MountOf("bind", "/tmp", {"rbind"})},
           {MountOf("ext4", image_, {"loop"}), MountOf("ext4", image_, {"loop"})}}) {
    absl::StatusOr<std::optional<BlockRootfs>> r = AsBlockRootfs(mounts);
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_FALSE(r->has_value());
  }
}

TEST_F(BlockRootfsTest, UnusableSourcesAreClearErrors) {
  // A regular file without `loop`, a character device, a missing file.
  for (const auto& [source, options, message] :
       std::vector<std::tuple<std::string, std::vector<std::string>, std::string>>{
           {image_, {}, "is not a block device"},
           {"/dev/null", {}, "is not a block device"},
           {"/dev/null", {"loop"}, "is not a regular file"},
           {"/no/such/image", {"loop"}, "/no/such/image"}}) {
    absl::StatusOr<std::optional<BlockRootfs>> r = AsBlockRootfs({MountOf("xfs", source, options)});
    EXPECT_FALSE(r.ok()) << source;
    EXPECT_THAT(r.status().message(), HasSubstr(message)) << source;
    EXPECT_THAT(r.status().message(), HasSubstr(source));
  }
}

}  // namespace
}  // namespace kapsel::shim
