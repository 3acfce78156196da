// Helpers for code that runs in a cloned child before execve: no allocation, only system calls
// on data the parent prepared. A failure is reported to the agent over the sync socket
// (SyncType::kError) and ends the process.
#ifndef KAPSEL_GUEST_AGENT_CONTAINER_CHILD_UTIL_H_
#define KAPSEL_GUEST_AGENT_CONTAINER_CHILD_UTIL_H_

#include <cstddef>
#include <cstdint>

#include <sys/types.h>

namespace kapsel::agent::child {

// The socket Fail() reports on (set first thing in each child).
void SetSyncFd(int fd);
int SyncFd();

// Sends "what[ path]: errno" to the agent and exits with status 1.
[[noreturn]] void Fail(int err, const char* what, const char* path = nullptr);

// A fixed-size string builder (truncates).
class Text {
 public:
  Text& Add(const char* s);
  Text& AddInt(int64_t value);
  const char* c_str() const { return buf_; }

 private:
  char buf_[512] = {};
  size_t len_ = 0;
};

// "/proc/self/fd/N"
class FdPath {
 public:
  explicit FdPath(int fd);
  const char* c_str() const { return text_.c_str(); }

 private:
  Text text_;
};

// Every signal handler back to the default, then the signal mask cleared.
void ResetSignals();

// Closes every fd except those in keep[0..n) (n <= 16).
void CloseFdsExcept(const int* keep, int n);

// Moves fds[0..3) to 0, 1, 2 (any of them may already be one of 0..2), clearing close-on-exec.
void InstallStdio(const int fds[3]);

// Creates the path kind asked for inside root (no symlink leaves root: every lookup is
// openat2 RESOLVE_IN_ROOT), creating missing parents as directories. Returns an O_PATH fd of
// the resolved path, or -errno.
enum class Create { kNothing, kDirectory, kFile };
int OpenInRoot(int root_fd, const char* path, Create create);

// setgroups, setresgid and setresuid as bare system calls (0 or -1 with errno). glibc's wrappers
// must not be used here: in a process it believes multi-threaded (a raw clone of the agent keeps
// the agent's thread list) they broadcast SIGSETXID with tgkill(getpid(), tid) to the agent's
// thread ids, which in the child's pid namespace can name the child itself (the agent as PID 1:
// its main thread's tid 1 is the container init's pid), and then retry forever. The kernel
// calls change only the calling thread's credentials, which is all a child has.
int SetGroups(size_t count, const gid_t* gids);
int SetResGid(gid_t gid);
int SetResUid(uid_t uid);

// Writes a whole string to a file; returns 0 or errno.
int WriteFile(const char* path, const char* value);

}  // namespace kapsel::agent::child

#endif  // KAPSEL_GUEST_AGENT_CONTAINER_CHILD_UTIL_H_
