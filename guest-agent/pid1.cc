#include "guest-agent/pid1.h"

#include <fcntl.h>
#include <linux/magic.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <cerrno>
#include <fstream>
#include <sstream>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/status.h"
#include "common/unique_fd.h"

namespace kapsel::agent {
namespace {

struct InitMount {
  const char* source;
  const char* target;
  const char* type;
  unsigned long flags;
  const char* data;
};

constexpr InitMount kMounts[] = {
    {"proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, nullptr},
    {"sysfs", "/sys", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, nullptr},
    {"devtmpfs", "/dev", "devtmpfs", MS_NOSUID, "mode=0755"},
    {"devpts", "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620"},
    {"tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777"},
    {"tmpfs", "/run", "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755"},
    {"tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777"},
    {"cgroup2", "/sys/fs/cgroup", "cgroup2", MS_NOSUID | MS_NODEV | MS_NOEXEC, nullptr},
};

absl::Status MountOne(const InitMount& m) {
  if (mkdir(m.target, 0755) != 0 && errno != EEXIST) {
    return ErrnoError(absl::StrCat("mkdir ", m.target));
  }
  if (mount(m.source, m.target, m.type, m.flags, m.data) != 0 && errno != EBUSY) {
    return ErrnoError(absl::StrCat("mount ", m.type, " on ", m.target));
  }
  return absl::OkStatus();
}

absl::Status EnableCgroupControllers() {
  std::ifstream in("/sys/fs/cgroup/cgroup.controllers");
  std::stringstream text;
  text << in.rdbuf();
  std::string enable;
  for (absl::string_view c :
       absl::StrSplit(text.str(), absl::ByAnyChar(" \n"), absl::SkipEmpty())) {
    absl::StrAppend(&enable, enable.empty() ? "" : " ", "+", c);
  }
  if (enable.empty()) return absl::OkStatus();
  std::ofstream out("/sys/fs/cgroup/cgroup.subtree_control");
  out << enable;
  out.flush();
  if (!out) return absl::InternalError(absl::StrCat("cannot enable cgroup controllers: ", enable));
  return absl::OkStatus();
}

}  // namespace

absl::Status LeaveInitramfsRoot() {
  // Booted from a root image (kapsel-vmm --pmem IMAGE,root), / is a real mount already.
  struct statfs root;
  if (statfs("/", &root) != 0) return ErrnoError("statfs /");
  if (root.f_type != RAMFS_MAGIC && root.f_type != TMPFS_MAGIC) return absl::OkStatus();
  constexpr char kNewRoot[] = "/.kapsel-root";
  if (mkdir(kNewRoot, 0755) != 0 && errno != EEXIST) return ErrnoError("mkdir the new root");
  // A bind mount of the initramfs root itself: the same files, nothing copied, but a mount that
  // has a parent, which is all pivot_root asks of the root it leaves.
  if (mount("/", kNewRoot, nullptr, MS_BIND, nullptr) != 0) {
    return ErrnoError("bind-mount the initramfs root");
  }
  if (chdir(kNewRoot) != 0) return ErrnoError("chdir the new root");
  if (mount(kNewRoot, "/", nullptr, MS_MOVE, nullptr) != 0) return ErrnoError("move the new root");
  if (chroot(".") != 0 || chdir("/") != 0) return ErrnoError("chroot into the new root");
  rmdir(kNewRoot);  // its mount point, an empty directory of the same tree
  return absl::OkStatus();
}

absl::Status SetUpAsInit() {
  for (const InitMount& m : kMounts) RETURN_IF_ERROR(MountOne(m));
  // /dev/ptmx must be the devpts instance's, for containers' terminals.
  unlink("/dev/ptmx");
  if (symlink("pts/ptmx", "/dev/ptmx") != 0) return ErrnoError("symlink /dev/ptmx");
  int console = open("/dev/console", O_RDWR | O_CLOEXEC);
  if (console >= 0) {
    for (int fd = 0; fd < 3; ++fd) dup2(console, fd);
    if (console > 2) close(console);
  }
  return EnableCgroupControllers();
}

void PowerOff() {
  sync();
  reboot(RB_AUTOBOOT);
  // Not reached when reboot works; a PID 1 must not return.
  while (true) pause();
}

}  // namespace kapsel::agent
