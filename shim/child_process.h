// A program the shim starts and owns (kapsel-vmm, virtiofsd): spawned with its output appended to a
// log file, watched through a pidfd, and always reaped. The destructor kills (SIGKILL) and reaps a
// child still running, so no path leaves one behind.
#ifndef KAPSEL_SHIM_CHILD_PROCESS_H_
#define KAPSEL_SHIM_CHILD_PROCESS_H_

#include <sys/types.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/unique_fd.h"

namespace kapsel::shim {

class ChildProcess {
 public:
  // Starts argv[0] (an absolute path) with stdin from /dev/null and stdout+stderr appended to
  // `log_path` (/dev/null when empty), in its own process group. The child gets SIGKILL if the
  // shim dies (PR_SET_PDEATHSIG; it is forked on a thread that lives as long as the shim, since
  // the signal follows the thread that forked, not the process: the calling thread may end). The
  // child inherits the descriptors in `inherit_fds` (above 2) under the same numbers; every other
  // descriptor of the shim is close-on-exec. With `cgroup_procs_fd` (a cgroup v2 cgroup.procs open
  // for writing) the child moves itself into that cgroup before exec; if it cannot, it says so in
  // the log and exits with 127.
  static absl::StatusOr<std::unique_ptr<ChildProcess>> Spawn(
      const std::vector<std::string>& argv, const std::string& log_path,
      const std::vector<int>& inherit_fds = {}, int cgroup_procs_fd = -1);
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;
  ~ChildProcess();

  pid_t pid() const { return pid_; }
  const std::string& name() const { return name_; }

  // Waits up to `timeout` for the exit; the exit code (128 + N for signal N) once it exited,
  // nullopt while it runs. Thread-safe; any number of threads may wait.
  std::optional<int> Wait(absl::Duration timeout);
  // Sends `signal` unless the child was already reaped.
  void Signal(int signal);
  // SIGTERM, up to `grace` for the exit, then SIGKILL; returns the exit code.
  int Stop(absl::Duration grace);

 private:
  ChildProcess(pid_t pid, UniqueFd pidfd, std::string name)
      : pid_(pid), pidfd_(std::move(pidfd)), name_(std::move(name)) {}
  // Reaps the child if it exited (under mu_).
  bool TryReap() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const pid_t pid_;
  const UniqueFd pidfd_;
  const std::string name_;
  absl::Mutex mu_;
  std::optional<int> exit_code_ ABSL_GUARDED_BY(mu_);
};

}  // namespace kapsel::shim

#endif  // KAPSEL_SHIM_CHILD_PROCESS_H_
