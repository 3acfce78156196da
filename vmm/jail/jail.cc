#include "vmm/jail/jail.h"

#include <dirent.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <filesystem>

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "common/unique_fd.h"

namespace kapsel::vmm {
namespace {

// Where the new root is assembled before pivot_root, in the private mount namespace (the host's
// /dev is untouched). Any directory would do; /dev exists, since /dev/kvm was opened from it.
constexpr char kStaging[] = "/dev";

absl::Status CheckSingleThreaded() {
  DIR* dir = opendir("/proc/self/task");
  if (dir == nullptr) return ErrnoError("jail: listing /proc/self/task");
  int threads = 0;
  while (dirent* entry = readdir(dir)) {
    if (entry->d_name[0] != '.') ++threads;
  }
  closedir(dir);
  if (threads != 1) {
    return absl::FailedPreconditionError(absl::StrCat(
        "jail: the process has ", threads, " threads; it must be entered single-threaded"));
  }
  return absl::OkStatus();
}

// `dir` as the absolute, lexically normal path it is mounted at in the jail.
absl::StatusOr<std::string> VisiblePath(const std::string& dir) {
  const std::filesystem::path path = std::filesystem::path(dir).lexically_normal();
  if (!path.is_absolute()) {
    return absl::InvalidArgumentError(absl::StrCat("jail: ", dir, " is not an absolute path"));
  }
  std::string normal = path.string();
  while (normal.size() > 1 && normal.back() == '/') normal.pop_back();
  if (normal == "/") {
    return absl::InvalidArgumentError("jail: the host's root directory cannot be made visible");
  }
  return normal;
}

// mkdir -p of `path` (absolute) below the staging directory.
absl::Status MakeDirs(const std::string& path) {
  std::string at = kStaging;
  for (const auto& part : std::filesystem::path(path).relative_path()) {
    at += "/" + part.string();
    if (mkdir(at.c_str(), 0755) != 0 && errno != EEXIST) {
      return ErrnoError(absl::StrCat("jail: mkdir ", at));
    }
  }
  return absl::OkStatus();
}

absl::Status DropCapabilities() {
  // The bounding set first: dropping from it needs CAP_SETPCAP, which goes with the rest below.
  for (int cap = 0;; ++cap) {
    if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0) {
      if (errno == EINVAL) break;  // past the kernel's last capability
      return ErrnoError(absl::StrCat("jail: dropping capability ", cap, " from the bounding set"));
    }
  }
  if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0) {
    return ErrnoError("jail: clearing the ambient capabilities");
  }
  __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
  __user_cap_data_struct none[_LINUX_CAPABILITY_U32S_3] = {};
  if (syscall(SYS_capset, &header, none) != 0) return ErrnoError("jail: capset");
  return absl::OkStatus();
}

}  // namespace

absl::Status EnterJail(const JailConfig& config) {
  std::vector<std::string> paths;
  for (const std::string& dir : config.visible_dirs) {
    ASSIGN_OR_RETURN(std::string path, VisiblePath(dir));
    paths.push_back(std::move(path));
  }
  RETURN_IF_ERROR(CheckSingleThreaded());

  if (unshare(CLONE_NEWNS | CLONE_NEWNET) != 0) {
    const int err = errno;
    return ErrnoError(err, err == EPERM ? "jail: new mount and network namespaces (this needs "
                                          "CAP_SYS_ADMIN: run kapsel-vmm as root)"
                                        : "jail: new mount and network namespaces");
  }
  // Nothing mounted or unmounted from here on reaches the host's namespace.
  if (mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) {
    return ErrnoError("jail: making every mount private");
  }
  // Copies of the visible directories, without what is mounted below them, taken before the
  // staging directory is covered.
  std::vector<UniqueFd> trees;
  for (const std::string& path : paths) {
    UniqueFd tree(open_tree(AT_FDCWD, path.c_str(), OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC));
    if (!tree) return ErrnoError(absl::StrCat("jail: bind ", path));
    mount_attr attr{};
    attr.attr_set = MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC;
    if (mount_setattr(tree.get(), "", AT_EMPTY_PATH, &attr, sizeof(attr)) != 0) {
      return ErrnoError(absl::StrCat("jail: nosuid,nodev,noexec on ", path));
    }
    trees.push_back(std::move(tree));
  }
  if (mount("kapsel-jail", kStaging, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC,
            "mode=0755,size=64k,nr_inodes=256") != 0) {
    return ErrnoError(absl::StrCat("jail: tmpfs on ", kStaging));
  }
  for (size_t i = 0; i < paths.size(); ++i) {
    RETURN_IF_ERROR(MakeDirs(paths[i]));
    const std::string target = kStaging + paths[i];
    if (move_mount(trees[i].get(), "", AT_FDCWD, target.c_str(), MOVE_MOUNT_F_EMPTY_PATH) != 0) {
      return ErrnoError(absl::StrCat("jail: mounting ", paths[i]));
    }
  }
  // The tmpfs becomes "/" and the host's root, stacked under it, is detached.
  if (chdir(kStaging) != 0) return ErrnoError(absl::StrCat("jail: chdir ", kStaging));
  if (syscall(SYS_pivot_root, ".", ".") != 0) return ErrnoError("jail: pivot_root");
  if (umount2(".", MNT_DETACH) != 0) return ErrnoError("jail: detaching the host's root");
  if (chdir("/") != 0) return ErrnoError("jail: chdir /");
  if (mount(nullptr, "/", nullptr,
            MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, nullptr) != 0) {
    return ErrnoError("jail: making the root read-only");
  }
  return DropCapabilities();
}

}  // namespace kapsel::vmm
