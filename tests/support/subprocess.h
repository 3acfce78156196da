// Child processes for tests: start a program with its stdout and stderr captured, wait for text to
// appear, signal it, wait for its exit with a timeout. The destructor kills and reaps a child that
// is still running, so no test leaves a process behind.
#ifndef KAPSEL_TESTS_SUPPORT_SUBPROCESS_H_
#define KAPSEL_TESTS_SUPPORT_SUBPROCESS_H_

#include <sys/types.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/unique_fd.h"

namespace kapsel::testing {

struct ProcessResult {
  // The exit status, or 128 + N when killed by signal N.
  int exit_code = -1;
  bool timed_out = false;  // killed by Wait() after its timeout
  std::string out;
  std::string err;
};

class Subprocess {
 public:
  // Starts argv[0] (searched in PATH) with stdin from /dev/null.
  static absl::StatusOr<std::unique_ptr<Subprocess>> Start(const std::vector<std::string>& argv);
  ~Subprocess();

  pid_t pid() const { return pid_; }
  // Reads output until stdout or stderr contains `text`; false on timeout or exit without it.
  bool WaitForOutput(const std::string& text, absl::Duration timeout);
  void Signal(int signal);
  // Waits for the exit, reading all output; kills the child (SIGKILL) after `timeout`.
  ProcessResult Wait(absl::Duration timeout);

 private:
  Subprocess(pid_t pid, UniqueFd out, UniqueFd err)
      : pid_(pid), out_fd_(std::move(out)), err_fd_(std::move(err)) {}
  // Reads what is available within `timeout`; returns false when both pipes are closed.
  bool Pump(absl::Duration timeout);

  pid_t pid_;
  bool reaped_ = false;
  UniqueFd out_fd_;
  UniqueFd err_fd_;
  ProcessResult result_;
};

// Start + Wait.
absl::StatusOr<ProcessResult> RunProcess(const std::vector<std::string>& argv,
                                         absl::Duration timeout);

}  // namespace kapsel::testing

#endif  // KAPSEL_TESTS_SUPPORT_SUBPROCESS_H_
