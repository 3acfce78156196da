// Entry points of the processes the agent clones for a container (child side).
//
//   agent ──clone3(CLONE_INTO_CGROUP, no exit signal)──> launcher
//   launcher: closes foreign fds, joins namespaces (setns), clone3(new namespaces)──> process
//   launcher: sends the process's pid and pidfd to the agent, exits (the agent reaps it by pidfd)
//   process:  container init (RunInit) or exec'd process (RunExec); it is reparented to the agent,
//             which must therefore be PID 1 or a child subreaper.
#ifndef KAPSEL_GUEST_AGENT_CONTAINER_CHILD_MAIN_H_
#define KAPSEL_GUEST_AGENT_CONTAINER_CHILD_MAIN_H_

#include <cstdint>
#include <vector>

#include "guest-agent/container/plan.h"

namespace kapsel::agent::child {

struct LaunchSpec {
  int sync_fd = -1;
  int stdio[3] = {-1, -1, -1};  // valid fds (the agent substitutes /dev/null)
  // Namespaces to join: by path (Create) ...
  const std::vector<JoinNamespace>* join_paths = nullptr;
  // ... or those of a running process (Exec): setns(pidfd, flags).
  int join_pidfd = -1;
  int join_flags = 0;
  uint64_t clone_flags = 0;           // new namespaces for the process
  const InitPlan* init = nullptr;     // set: the container's init
  const ProcessPlan* exec = nullptr;  // set: an exec'd process
};

[[noreturn]] void RunLauncher(const LaunchSpec& spec);

}  // namespace kapsel::agent::child

#endif  // KAPSEL_GUEST_AGENT_CONTAINER_CHILD_MAIN_H_
