// Agent side of starting a container process: clone the launcher (child_main.h), receive the new
// process's pid and pidfd, reap the launcher.
#ifndef KAPSEL_GUEST_AGENT_CONTAINER_LAUNCH_H_
#define KAPSEL_GUEST_AGENT_CONTAINER_LAUNCH_H_

#include <sys/types.h>

#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/unique_fd.h"
#include "guest-agent/container/child_main.h"

namespace kapsel::agent {

struct LaunchedProcess {
  pid_t pid = -1;
  UniqueFd pidfd;
  UniqueFd sync;  // the agent's end of the sync socket; the process holds the other until execve
};

// spec.sync_fd and spec.stdio are filled in here (stdio: -1 becomes /dev/null). The launcher
// starts in the cgroup of cgroup_fd, so the process does too. The process waits for
// SendProceed() before it does anything.
absl::StatusOr<LaunchedProcess> LaunchProcess(child::LaunchSpec spec, const int stdio[3],
                                              int cgroup_fd, absl::Duration timeout);

// Lets the launched process go on (SyncType::kProceed).
absl::Status SendProceed(const LaunchedProcess& process);

// For errors about a container process that does not answer: what it (and its children) wait
// for in the kernel, "pid N: wchan W, syscall S, user U system S ticks; ..."; a process busy on
// a CPU is stopped for a moment to show its system call and instruction pointer.
std::string DescribeStuck(pid_t pid);

}  // namespace kapsel::agent

#endif  // KAPSEL_GUEST_AGENT_CONTAINER_LAUNCH_H_
