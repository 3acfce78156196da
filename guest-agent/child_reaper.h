// Reaps the agent's children. As PID 1 (or a child subreaper) the agent inherits every orphan, so
// it must wait for all of them; a thread reads SIGCHLD from a signalfd and collects every exited
// (non-"clone") child with waitpid(-1), handing each (pid, wait status) to a callback.
//
// Contract with code that forks helpers and waits for them itself: create them as "clone" children
// (clone/clone3 with an exit signal other than SIGCHLD, e.g. 0) and wait with __WCLONE; waitpid(-1)
// here never collects those.
#ifndef KAPSEL_GUEST_AGENT_CHILD_REAPER_H_
#define KAPSEL_GUEST_AGENT_CHILD_REAPER_H_

#include <sys/types.h>

#include <functional>
#include <memory>
#include <thread>

#include "absl/status/statusor.h"
#include "common/unique_fd.h"

namespace kapsel::agent {

class ChildReaper {
 public:
  using ExitCallback = std::function<void(pid_t pid, int wait_status)>;

  // Blocks SIGCHLD in the calling thread; call it before any other thread starts so that every
  // thread inherits the mask (a signal unblocked in some thread would bypass the signalfd).
  static void BlockChildSignal();

  static absl::StatusOr<std::unique_ptr<ChildReaper>> Start(ExitCallback on_exit);
  ~ChildReaper();  // stops and joins the thread

 private:
  ChildReaper(UniqueFd signal_fd, UniqueFd stop_fd, ExitCallback on_exit);
  void Loop();
  void ReapAll();

  UniqueFd signal_fd_;
  UniqueFd stop_fd_;
  ExitCallback on_exit_;
  std::thread thread_;
};

// The conventional exit status of a wait status: the exit code, or 128 + the signal.
int ExitStatusOf(int wait_status);

}  // namespace kapsel::agent

#endif  // KAPSEL_GUEST_AGENT_CHILD_REAPER_H_
