#include "guest-agent/container/child_rootfs.h"

#include <fcntl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstring>

#include "guest-agent/container/child_util.h"

namespace kapsel::agent::child {
namespace {

// The per-mount flags currently set on the mount at path (kept on a bind remount: in a user
// namespace the kernel refuses to clear flags that were locked by a more privileged namespace).
unsigned long CurrentMountFlags(const char* path) {
  struct statfs st;
  if (statfs(path, &st) != 0) return 0;
  unsigned long flags = 0;
  if (st.f_flags & ST_RDONLY) flags |= MS_RDONLY;
  if (st.f_flags & ST_NOSUID) flags |= MS_NOSUID;
  if (st.f_flags & ST_NODEV) flags |= MS_NODEV;
  if (st.f_flags & ST_NOEXEC) flags |= MS_NOEXEC;
  if (st.f_flags & ST_NOATIME) flags |= MS_NOATIME;
  if (st.f_flags & ST_NODIRATIME) flags |= MS_NODIRATIME;
  if (st.f_flags & ST_RELATIME) flags |= MS_RELATIME;
  return flags;
}

// MS_REMOUNT | MS_BIND with `flags`; on EPERM again with the locked flags kept.
int RemountBind(const char* path, unsigned long flags) {
  if (mount(nullptr, path, nullptr, MS_REMOUNT | MS_BIND | flags, nullptr) == 0) return 0;
  if (errno != EPERM) return errno;
  unsigned long current = CurrentMountFlags(path);
  if ((flags & MS_RDONLY) == 0) current &= ~MS_RDONLY;
  if (mount(nullptr, path, nullptr, MS_REMOUNT | MS_BIND | flags | current, nullptr) == 0) return 0;
  return errno;
}

void Mount(int root_fd, const MountStep& step) {
  int fd = OpenInRoot(root_fd, step.destination.c_str(),
                      step.destination_is_file ? Create::kFile : Create::kDirectory);
  if (fd < 0) Fail(-fd, "creating the mount point", step.destination.c_str());
  {
    FdPath target(fd);
    if (step.kind == MountKind::kBind) {
      unsigned long flags = MS_BIND | (step.recursive ? MS_REC : 0);
      if (mount(step.source.c_str(), target.c_str(), nullptr, flags, nullptr) != 0) {
        Text what;
        what.Add("bind mounting ").Add(step.source.c_str()).Add(" on");
        Fail(errno, what.c_str(), step.destination.c_str());
      }
    } else {
      if (mount(step.source.c_str(), target.c_str(), step.type.c_str(), step.flags,
                step.data.empty() ? nullptr : step.data.c_str()) != 0) {
        Text what;
        what.Add("mounting ").Add(step.type.c_str()).Add(" on");
        Fail(errno, what.c_str(), step.destination.c_str());
      }
    }
  }
  close(fd);
  if (!step.needs_remount && step.propagation == 0) return;
  // The fd above is the covered directory; look the destination up again to reach the new mount.
  fd = OpenInRoot(root_fd, step.destination.c_str(), Create::kNothing);
  if (fd < 0) Fail(-fd, "reopening the mount point", step.destination.c_str());
  FdPath target(fd);
  if (step.needs_remount) {
    int err = RemountBind(target.c_str(), step.flags);
    if (err != 0) Fail(err, "remounting with the mount's options", step.destination.c_str());
  }
  if (step.propagation != 0 &&
      mount(nullptr, target.c_str(), nullptr, step.propagation, nullptr) != 0) {
    Fail(errno, "setting the propagation of", step.destination.c_str());
  }
  close(fd);
}

// Splits "/a/b/name" into an fd of /a/b (created inside root) and "name".
int OpenParent(int root_fd, const char* path, char (&name)[NAME_MAX + 1]) {
  char parent[PATH_MAX];
  size_t len = strlen(path);
  if (len >= sizeof parent) return -ENAMETOOLONG;
  memcpy(parent, path, len + 1);
  char* slash = strrchr(parent, '/');
  if (slash == nullptr || slash[1] == '\0' || strlen(slash + 1) > NAME_MAX) return -EINVAL;
  memcpy(name, slash + 1, strlen(slash + 1) + 1);
  if (slash == parent) {
    parent[1] = '\0';
  } else {
    *slash = '\0';
  }
  return OpenInRoot(root_fd, parent, Create::kDirectory);
}

void MakeDevice(int root_fd, const DeviceStep& device) {
  char name[NAME_MAX + 1];
  int parent = OpenParent(root_fd, device.path.c_str(), name);
  if (parent < 0) Fail(-parent, "creating the directory of device", device.path.c_str());
  if (mknodat(parent, name, device.mode, device.rdev) == 0) {
    if (fchownat(parent, name, device.uid, device.gid, AT_SYMLINK_NOFOLLOW) != 0) {
      Fail(errno, "chown of device", device.path.c_str());
    }
    if (fchmodat(parent, name, device.mode & 07777, 0) != 0) {
      Fail(errno, "chmod of device", device.path.c_str());
    }
  } else if (errno == EEXIST) {
    struct stat st;
    if (fstatat(parent, name, &st, AT_SYMLINK_NOFOLLOW) != 0 ||
        (st.st_mode & S_IFMT) != (device.mode & S_IFMT) || st.st_rdev != device.rdev) {
      Fail(EEXIST, "a different file is in the way of device", device.path.c_str());
    }
  } else if (errno == EPERM) {
    // No mknod here (a user namespace): bind the agent's own device node instead.
    int file = openat(parent, name, O_CREAT | O_WRONLY | O_NOFOLLOW | O_CLOEXEC, 0644);
    if (file < 0) Fail(errno, "creating the bind target of device", device.path.c_str());
    close(file);
    int fd = OpenInRoot(root_fd, device.path.c_str(), Create::kNothing);
    if (fd < 0) Fail(-fd, "opening the bind target of device", device.path.c_str());
    FdPath target(fd);
    if (mount(device.host_path.c_str(), target.c_str(), nullptr, MS_BIND, nullptr) != 0) {
      Fail(errno, "bind mounting the device", device.host_path.c_str());
    }
    close(fd);
  } else {
    Fail(errno, "mknod", device.path.c_str());
  }
  close(parent);
}

void MakeSymlink(int root_fd, const SymlinkStep& link) {
  char name[NAME_MAX + 1];
  int parent = OpenParent(root_fd, link.path.c_str(), name);
  if (parent < 0) Fail(-parent, "creating the directory of", link.path.c_str());
  if (symlinkat(link.target.c_str(), parent, name) != 0 && errno != EEXIST) {
    Fail(errno, "creating the symlink", link.path.c_str());
  }
  close(parent);
}

}  // namespace

void SetupRootfs(const InitPlan& plan) {
  // Nothing done in this mount namespace may propagate back to the agent's.
  if (mount(nullptr, "/", nullptr, plan.host_propagation, nullptr) != 0) {
    Fail(errno, "making the mount tree private to the container");
  }
  const char* rootfs = plan.rootfs.c_str();
  if (mount(rootfs, rootfs, nullptr, MS_BIND | MS_REC, nullptr) != 0) {
    Fail(errno, "bind mounting the rootfs", rootfs);
  }
  int root_fd = open(rootfs, O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (root_fd < 0) Fail(errno, "opening the rootfs", rootfs);
  for (const MountStep& step : plan.mounts) Mount(root_fd, step);
  for (const DeviceStep& device : plan.devices) MakeDevice(root_fd, device);
  for (const SymlinkStep& link : plan.symlinks) MakeSymlink(root_fd, link);
  // The init's working directory is created when missing (0755, by root, before the rootfs may
  // become read-only), as runc and crun do: `docker run -w` and Kubernetes' workingDir may name
  // a directory the image lacks. An exec's must exist.
  int cwd = OpenInRoot(root_fd, plan.process.cwd.c_str(), Create::kDirectory);
  if (cwd < 0) Fail(-cwd, "creating process.cwd", plan.process.cwd.c_str());
  close(cwd);

  // pivot_root(".", "."): the old root ends up stacked under the new one and is detached.
  if (fchdir(root_fd) != 0) Fail(errno, "entering the rootfs", rootfs);
  close(root_fd);
  if (syscall(SYS_pivot_root, ".", ".") != 0) {
    Fail(errno,
         "pivot_root into the rootfs (the agent's own root must not be the initramfs rootfs; "
         "switch to a tmpfs root at boot)",
         rootfs);
  }
  if (mount(nullptr, ".", nullptr, MS_SLAVE | MS_REC, nullptr) != 0) {
    Fail(errno, "making the old root a slave");
  }
  if (umount2(".", MNT_DETACH) != 0) Fail(errno, "detaching the old root");
  if (chdir("/") != 0) Fail(errno, "chdir to the new root");
}

void WriteSysctls(const InitPlan& plan) {
  for (const SysctlStep& sysctl : plan.sysctls) {
    int err = WriteFile(sysctl.proc_path.c_str(), sysctl.value.c_str());
    if (err != 0) Fail(err, "writing the sysctl", sysctl.proc_path.c_str());
  }
}

void BindConsole(int pts_number) {
  Text pts;
  pts.Add("/dev/pts/").AddInt(pts_number);
  int file = open("/dev/console", O_CREAT | O_WRONLY | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (file < 0) Fail(errno, "creating", "/dev/console");
  close(file);
  if (mount(pts.c_str(), "/dev/console", nullptr, MS_BIND, nullptr) != 0) {
    Fail(errno, "bind mounting the terminal on", "/dev/console");
  }
}

void FinishRootfs(const InitPlan& plan) {
  for (const std::string& path : plan.masked_paths) {
    struct stat st;
    if (stat(path.c_str(), &st) != 0) {
      if (errno == ENOENT) continue;
      Fail(errno, "looking up the masked path", path.c_str());
    }
    int rc = S_ISDIR(st.st_mode) ? mount("tmpfs", path.c_str(), "tmpfs",
                                         MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, nullptr)
                                 : mount("/dev/null", path.c_str(), nullptr, MS_BIND, nullptr);
    if (rc != 0) Fail(errno, "masking", path.c_str());
  }
  for (const std::string& path : plan.readonly_paths) {
    struct stat st;
    if (stat(path.c_str(), &st) != 0) {
      if (errno == ENOENT) continue;
      Fail(errno, "looking up the read-only path", path.c_str());
    }
    if (mount(path.c_str(), path.c_str(), nullptr, MS_BIND | MS_REC, nullptr) != 0) {
      Fail(errno, "bind mounting the read-only path", path.c_str());
    }
    int err = RemountBind(path.c_str(), MS_RDONLY);
    if (err != 0) Fail(err, "remounting read-only", path.c_str());
  }
  if (plan.rootfs_readonly) {
    int err = RemountBind("/", MS_RDONLY | CurrentMountFlags("/"));
    if (err != 0) Fail(err, "remounting the root read-only");
  }
  if (plan.rootfs_propagation != 0 &&
      mount(nullptr, "/", nullptr, plan.rootfs_propagation, nullptr) != 0) {
    Fail(errno, "setting linux.rootfsPropagation on /");
  }
}

}  // namespace kapsel::agent::child
