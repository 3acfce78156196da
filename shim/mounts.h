// Host mounts the shim makes: containerd's rootfs mounts (overlay from the snapshotter, or a
// bind), bind mounts that share host paths into the VM, and their removal.
#ifndef KAPSEL_SHIM_MOUNTS_H_
#define KAPSEL_SHIM_MOUNTS_H_

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "shim/api/types.pb.h"

namespace kapsel::shim {

// Mounts each of `mounts` on `target` in order (containerd's mount.All); the first failure
// unmounts what was mounted and names the mount.
absl::Status MountAll(const std::vector<containerd::types::Mount>& mounts,
                      const std::string& target);

// A recursive bind mount of `source` (a directory or a file) on `target`, created as needed.
absl::Status BindMount(const std::string& source, const std::string& target, bool read_only);

// Unmounts everything at or below `path` (deepest first, lazily); no error when nothing is mounted.
absl::Status UnmountAll(const std::string& path);

// Removes `path` recursively without crossing into mounts (an error if one remains below it).
absl::Status RemoveTree(const std::string& path);

// Creates `path` and its missing parents. Safe against RemoveDirIfEmpty of a parent by another
// process at the same time (the mkdirs start over).
absl::Status MkdirAll(const std::string& path);
// Removes `path` if it is an empty directory; nothing otherwise (a namespace directory that
// another sandbox still uses, or is creating its directory in).
void RemoveDirIfEmpty(const std::string& path);

}  // namespace kapsel::shim

#endif  // KAPSEL_SHIM_MOUNTS_H_
