#include "guest-agent/container/clone.h"

#include <linux/sched.h>
#include <pthread.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstring>

namespace kapsel::agent {

pid_t Clone3(uint64_t flags, int exit_signal, int cgroup_fd, int* pidfd) {
  clone_args args;
  memset(&args, 0, sizeof args);
  args.flags = flags;
  args.exit_signal = static_cast<uint64_t>(exit_signal);
  if (pidfd != nullptr) {
    *pidfd = -1;
    args.flags |= CLONE_PIDFD;
    args.pidfd = reinterpret_cast<uint64_t>(pidfd);
  }
  if (cgroup_fd >= 0) {
    args.flags |= CLONE_INTO_CGROUP;
    args.cgroup = static_cast<uint64_t>(cgroup_fd);
  }
  return static_cast<pid_t>(syscall(SYS_clone3, &args, sizeof args));
}

ScopedBlockAllSignals::ScopedBlockAllSignals() {
  sigset_t all;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old_);
}

ScopedBlockAllSignals::~ScopedBlockAllSignals() { pthread_sigmask(SIG_SETMASK, &old_, nullptr); }

}  // namespace kapsel::agent
