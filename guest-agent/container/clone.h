// clone3(2) for the agent's helper and container processes.
#ifndef KAPSEL_GUEST_AGENT_CONTAINER_CLONE_H_
#define KAPSEL_GUEST_AGENT_CONTAINER_CLONE_H_

#include <signal.h>
#include <sys/types.h>

#include <cstdint>

namespace kapsel::agent {

// Like fork(), with clone3 flags: returns the child's pid in the parent (and its pidfd in
// *pidfd when pidfd is not null), 0 in the child, -1 with errno on failure. cgroup_fd >= 0 starts
// the child in that cgroup (CLONE_INTO_CGROUP). The child is a copy of the caller (no shared
// memory) but no atfork handlers run: it must not allocate (another thread of the parent may have
// held an allocator lock) and should only make system calls before it execs or exits.
pid_t Clone3(uint64_t flags, int exit_signal, int cgroup_fd, int* pidfd);

// Blocks every signal in the calling thread for its lifetime, so a cloned child starts with all
// signals blocked and no handler of the parent can run in it before it resets them.
class ScopedBlockAllSignals {
 public:
  ScopedBlockAllSignals();
  ~ScopedBlockAllSignals();
  ScopedBlockAllSignals(const ScopedBlockAllSignals&) = delete;
  ScopedBlockAllSignals& operator=(const ScopedBlockAllSignals&) = delete;

 private:
  sigset_t old_;
};

}  // namespace kapsel::agent

#endif  // KAPSEL_GUEST_AGENT_CONTAINER_CLONE_H_
