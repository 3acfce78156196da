#include "shim/block_rootfs.h"

#include <sys/stat.h>

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "common/status.h"

namespace kapsel::shim {
namespace {

constexpr const char* kDiskFilesystems[] = {"ext2", "ext3", "ext4", "xfs", "btrfs"};

}  // namespace

absl::StatusOr<std::optional<BlockRootfs>> AsBlockRootfs(
    const std::vector<containerd::types::Mount>& mounts) {
  if (mounts.size() != 1) return std::nullopt;
  const containerd::types::Mount& m = mounts[0];
  if (std::find(std::begin(kDiskFilesystems), std::end(kDiskFilesystems), m.type()) ==
      std::end(kDiskFilesystems)) {
    return std::nullopt;
  }
  BlockRootfs rootfs;
  rootfs.source = m.source();
  rootfs.fs_type = m.type();
  bool loop = false;
  for (const std::string& option : m.options()) {
    if (option == "loop") {
      loop = true;
      continue;
    }
    if (option == "ro") rootfs.read_only = true;
    rootfs.options.push_back(option);
  }
  struct stat st;
  if (stat(m.source().c_str(), &st) != 0) {
    return ErrnoError(absl::StrCat("rootfs ", m.type(), " mount source ", m.source()));
  }
  rootfs.image_file = S_ISREG(st.st_mode);
  if (S_ISBLK(st.st_mode) || (loop && rootfs.image_file)) return rootfs;
  return absl::InvalidArgumentError(
      absl::StrCat("rootfs ", m.type(), " mount source ", m.source(),
                   loop ? " is not a regular file" : " is not a block device",
                   " (kapsel hands a block rootfs to the VM as a disk)"));
}

}  // namespace kapsel::shim
