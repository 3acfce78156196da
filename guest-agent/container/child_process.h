// The last steps of a container process before execve (child side): terminal, stdio, rlimits,
// oom_score_adj, user and groups, capabilities, cwd, no_new_privs, seccomp.
#ifndef KAPSEL_GUEST_AGENT_CONTAINER_CHILD_PROCESS_H_
#define KAPSEL_GUEST_AGENT_CONTAINER_CHILD_PROCESS_H_

#include "guest-agent/container/plan.h"

namespace kapsel::agent::child {

// Opens a pty pair through /dev/ptmx of the current root, sets the window size, sends the master
// to the agent (SyncType::kPtyMaster) and returns the slave; *pts_number gets N of /dev/pts/N.
int OpenTerminal(const ProcessPlan& plan, int* pts_number);

// A new session; the terminal (when tty >= 0) as controlling terminal and stdio, else
// stdio[0..3); then rlimits, oom_score_adj, user, capabilities, cwd and no_new_privs.
void PrepareProcess(const ProcessPlan& plan, const int stdio[3], int tty);

// seccomp (and the final capability drop it may need), then execve. Does not return.
[[noreturn]] void Exec(const ProcessPlan& plan);

}  // namespace kapsel::agent::child

#endif  // KAPSEL_GUEST_AGENT_CONTAINER_CHILD_PROCESS_H_
