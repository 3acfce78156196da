#include "guest-agent/container/child_util.h"

#include <fcntl.h>
#include <linux/openat2.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstring>

#include "guest-agent/container/sync_channel.h"

namespace kapsel::agent::child {
namespace {

int g_sync_fd = -1;

int OpenAt2(int dirfd, const char* path) {
  open_how how;
  memset(&how, 0, sizeof how);
  how.flags = O_PATH | O_CLOEXEC;
  how.resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS;
  long fd;
  do {
    fd = syscall(SYS_openat2, dirfd, path, &how, sizeof how);
  } while (fd < 0 && (errno == EAGAIN || errno == EINTR));
  return fd < 0 ? -errno : static_cast<int>(fd);
}

}  // namespace

void SetSyncFd(int fd) { g_sync_fd = fd; }
int SyncFd() { return g_sync_fd; }

void Fail(int err, const char* what, const char* path) {
  SyncMessage message;
  message.type = SyncType::kError;
  message.err = err;
  Text text;
  text.Add(what);
  if (path != nullptr) text.Add(" ").Add(path);
  const char* from = text.c_str();
  for (size_t i = 0; i + 1 < sizeof message.text && from[i] != '\0'; ++i) message.text[i] = from[i];
  if (g_sync_fd >= 0) SendSyncMessage(g_sync_fd, message);
  _exit(1);
}

Text& Text::Add(const char* s) {
  while (s != nullptr && *s != '\0' && len_ + 1 < sizeof buf_) buf_[len_++] = *s++;
  buf_[len_] = '\0';
  return *this;
}

Text& Text::AddInt(int64_t value) {
  char digits[24];
  int n = 0;
  uint64_t v = value < 0 ? -static_cast<uint64_t>(value) : static_cast<uint64_t>(value);
  do {
    digits[n++] = static_cast<char>('0' + v % 10);
    v /= 10;
  } while (v != 0);
  if (value < 0) digits[n++] = '-';
  char out[24];
  for (int i = 0; i < n; ++i) out[i] = digits[n - 1 - i];
  out[n] = '\0';
  return Add(out);
}

FdPath::FdPath(int fd) { text_.Add("/proc/self/fd/").AddInt(fd); }

void ResetSignals() {
  struct sigaction action;
  memset(&action, 0, sizeof action);
  action.sa_handler = SIG_DFL;
  for (int sig = 1; sig < NSIG; ++sig) {
    if (sig == SIGKILL || sig == SIGSTOP) continue;
    sigaction(sig, &action, nullptr);  // fails harmlessly for glibc's internal signals
  }
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, nullptr);
}

void CloseFdsExcept(const int* keep, int n) {
  int sorted[16];
  int count = 0;
  for (int i = 0; i < n && count < 16; ++i) {
    if (keep[i] < 0) continue;
    int j = count++;
    sorted[j] = keep[i];
    while (j > 0 && sorted[j - 1] > sorted[j]) {
      int t = sorted[j - 1];
      sorted[j - 1] = sorted[j];
      sorted[j] = t;
      --j;
    }
  }
  unsigned int from = 0;
  for (int i = 0; i < count; ++i) {
    unsigned int fd = static_cast<unsigned int>(sorted[i]);
    if (fd > from) syscall(SYS_close_range, from, fd - 1, 0);
    from = fd + 1;
  }
  syscall(SYS_close_range, from, ~0U, 0);
}

void InstallStdio(const int fds[3]) {
  // First move them above 2 so that dup2 below cannot overwrite one that is still needed.
  int high[3];
  for (int i = 0; i < 3; ++i) {
    high[i] = fcntl(fds[i], F_DUPFD_CLOEXEC, 3);
    if (high[i] < 0) Fail(errno, "duplicating a stdio fd");
  }
  for (int i = 0; i < 3; ++i) {
    if (dup2(high[i], i) < 0) Fail(errno, "installing a stdio fd");
  }
  for (int i = 0; i < 3; ++i) close(high[i]);
}

int OpenInRoot(int root_fd, const char* path, Create create) {
  int fd = OpenAt2(root_fd, path);
  if (fd >= 0 || fd != -ENOENT || create == Create::kNothing) return fd;

  // Walk the path from the root, resolving each prefix inside root and creating what is missing.
  char prefix[PATH_MAX];
  size_t prefix_len = 0;
  int parent = fcntl(root_fd, F_DUPFD_CLOEXEC, 3);
  if (parent < 0) return -errno;
  const char* p = path;
  while (*p != '\0') {
    while (*p == '/') ++p;
    if (*p == '\0') break;
    const char* end = p;
    while (*end != '\0' && *end != '/') ++end;
    size_t len = static_cast<size_t>(end - p);
    if (prefix_len + len + 2 >= sizeof prefix || len > NAME_MAX) {
      close(parent);
      return -ENAMETOOLONG;
    }
    char name[NAME_MAX + 1];
    memcpy(name, p, len);
    name[len] = '\0';
    prefix[prefix_len++] = '/';
    memcpy(prefix + prefix_len, p, len);
    prefix_len += len;
    prefix[prefix_len] = '\0';
    bool last = true;
    for (const char* q = end; *q != '\0'; ++q) {
      if (*q != '/') {
        last = false;
        break;
      }
    }
    int next = OpenAt2(root_fd, prefix);
    if (next == -ENOENT && strcmp(name, ".") != 0 && strcmp(name, "..") != 0) {
      int rc;
      if (last && create == Create::kFile) {
        rc = openat(parent, name, O_CREAT | O_EXCL | O_WRONLY | O_NOFOLLOW | O_CLOEXEC, 0644);
        if (rc >= 0) close(rc);
      } else {
        rc = mkdirat(parent, name, 0755);
      }
      if (rc < 0 && errno != EEXIST) {
        int err = errno;
        close(parent);
        return -err;
      }
      next = OpenAt2(root_fd, prefix);
      // Still missing after creating it: the name is a symlink to a missing place.
      if (next == -ENOENT) next = -ELOOP;
    }
    close(parent);
    if (next < 0) return next;
    parent = next;
    p = end;
  }
  return parent;
}

int SetGroups(size_t count, const gid_t* gids) {
  return static_cast<int>(syscall(SYS_setgroups, count, gids));
}

int SetResGid(gid_t gid) { return static_cast<int>(syscall(SYS_setresgid, gid, gid, gid)); }

int SetResUid(uid_t uid) { return static_cast<int>(syscall(SYS_setresuid, uid, uid, uid)); }

int WriteFile(const char* path, const char* value) {
  int fd = open(path, O_WRONLY | O_CLOEXEC);
  if (fd < 0) return errno;
  size_t len = strlen(value);
  ssize_t n;
  do {
    n = write(fd, value, len);
  } while (n < 0 && errno == EINTR);
  int err = n < 0 ? errno : (static_cast<size_t>(n) == len ? 0 : EIO);
  close(fd);
  return err;
}

}  // namespace kapsel::agent::child
