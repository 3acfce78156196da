// A container rootfs that reaches the VM as a virtio-blk disk instead of through virtio-fs: what
// block-based snapshotters give (devmapper: a block device; blockfile/erofs-style: an image file
// with the `loop` option). The guest mounts the disk itself, so the host mounts nothing.
#ifndef KAPSEL_SHIM_BLOCK_ROOTFS_H_
#define KAPSEL_SHIM_BLOCK_ROOTFS_H_

#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "shim/api/types.pb.h"

namespace kapsel::shim {

struct BlockRootfs {
  std::string source;  // the block device or image file on the host (kapsel-vmm --disk)
  std::string fs_type;
  std::vector<std::string> options;  // mount options for the guest (without loop)
  bool read_only = false;
  bool image_file = false;  // a regular file (`loop`), not a block device
};

// nullopt unless `mounts` is one mount of a disk filesystem (ext2/3/4, xfs, btrfs) whose source
// is a block device, or a regular file mounted with `loop`. An error when it looks like one but
// its source cannot be used (missing, not a device).
absl::StatusOr<std::optional<BlockRootfs>> AsBlockRootfs(
    const std::vector<containerd::types::Mount>& mounts);

}  // namespace kapsel::shim

#endif  // KAPSEL_SHIM_BLOCK_ROOTFS_H_
