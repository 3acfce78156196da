#include "guest-agent/pid1.h"

#include <fcntl.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/stat.h>
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

absl::Status CopyFile(const char* from, const char* to, mode_t mode) {
  UniqueFd in(open(from, O_RDONLY | O_CLOEXEC));
  if (!in) return ErrnoError(absl::StrCat("open ", from));
  UniqueFd out(open(to, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode));
  if (!out) return ErrnoError(absl::StrCat("create ", to));
  char buffer[1 << 16];
  while (true) {
    ssize_t n = read(in.get(), buffer, sizeof(buffer));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return ErrnoError(absl::StrCat("read ", from));
    if (n == 0) return absl::OkStatus();
    if (write(out.get(), buffer, static_cast<size_t>(n)) != n) {
      return ErrnoError(absl::StrCat("write ", to));
    }
  }
}

}  // namespace

absl::Status MoveRootToTmpfs(char** argv) {
  if (getenv(kRootMovedEnv) != nullptr) return absl::OkStatus();
  constexpr char kNewRoot[] = "/.kapsel-root";
  if (mkdir(kNewRoot, 0755) != 0 && errno != EEXIST) return ErrnoError("mkdir the new root");
  if (mount("tmpfs", kNewRoot, "tmpfs", 0, "mode=0755") != 0) {
    return ErrnoError("mount a tmpfs for the new root");
  }
  for (const char* dir : {"dev", "proc", "sys", "run", "tmp", "mnt", "sbin"}) {
    mkdir(absl::StrCat(kNewRoot, "/", dir).c_str(), 0755);
  }
  RETURN_IF_ERROR(CopyFile("/init", absl::StrCat(kNewRoot, "/sbin/kapsel-agent").c_str(), 0755));
  unlink("/init");  // the initramfs copy is no longer needed: give its memory back
  if (chdir(kNewRoot) != 0) return ErrnoError("chdir the new root");
  if (mount(kNewRoot, "/", nullptr, MS_MOVE, nullptr) != 0) return ErrnoError("move the new root");
  if (chroot(".") != 0 || chdir("/") != 0) return ErrnoError("chroot into the new root");
  setenv(kRootMovedEnv, "1", 1);
  execv("/sbin/kapsel-agent", argv);
  return ErrnoError("re-executing from the new root");
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
