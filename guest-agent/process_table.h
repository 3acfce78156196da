// The agent's record of the processes it started (a container's init, its execs): pid, the agent's
// ends of their stdio, and how they ended. The child reaper reports exits here; WaitProcess waits
// here; the stdio router takes stdio ends from here.
#ifndef KAPSEL_GUEST_AGENT_PROCESS_TABLE_H_
#define KAPSEL_GUEST_AGENT_PROCESS_TABLE_H_

#include <sys/types.h>

#include <functional>
#include <map>
#include <memory>
#include <string>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/unique_fd.h"

namespace kapsel::agent {

// The agent's ends of a process's stdio. Each stream end is taken (moved out) by the stdio
// router when its stream attaches, so a stream attaches at most once. Guarded by `mu`: the router
// and the RPCs (CloseStdin, TtyWinResize) use it from different threads.
struct ProcessIo {
  absl::Mutex mu;
  UniqueFd stdin_writer ABSL_GUARDED_BY(mu);  // empty: no stdin (/dev/null), or attached
  UniqueFd stdout_reader ABSL_GUARDED_BY(mu);
  UniqueFd stderr_reader ABSL_GUARDED_BY(mu);
  UniqueFd terminal ABSL_GUARDED_BY(mu);  // the pty master in terminal mode (then no pipes)
  // The attached stdin (or terminal) connection, to cut its input on CloseStdin; -1 when none.
  int input_connection ABSL_GUARDED_BY(mu) = -1;
  bool stdin_closed ABSL_GUARDED_BY(mu) = false;
};

// The process's ends, handed to the code that starts it (and closed by the agent afterwards).
struct ChildStdio {
  UniqueFd stdin_fd;  // empty: /dev/null
  UniqueFd stdout_fd;
  UniqueFd stderr_fd;
};

// Pipes for a process without a terminal: `io` keeps the agent's ends, `child` the process's.
absl::Status MakeStdioPipes(bool with_stdin, ProcessIo* io, ChildStdio* child);

struct ExitInfo {
  int exit_status;  // exit code, or 128 + signal
  absl::Time exited_at;
};

class ProcessTable {
 public:
  // Registers a started process. AlreadyExists if (container, exec) is taken.
  absl::Status Add(const std::string& container_id, const std::string& exec_id, pid_t pid,
                   std::shared_ptr<ProcessIo> io);
  // The reaper saw `pid` end. Exits of pids not (yet) registered are kept briefly, so a process
  // that ends before Add is not missed.
  void OnExit(pid_t pid, int wait_status);

  // Waits until the process ended; Cancelled when `cancelled` turns true, DeadlineExceeded at
  // `deadline`, NotFound for an unknown process.
  absl::StatusOr<ExitInfo> Wait(const std::string& container_id, const std::string& exec_id,
                                absl::Time deadline, const std::function<bool()>& cancelled);
  absl::StatusOr<pid_t> Pid(const std::string& container_id, const std::string& exec_id);
  // Whether it ended (NotFound for an unknown process).
  absl::StatusOr<bool> Exited(const std::string& container_id, const std::string& exec_id);
  absl::StatusOr<std::shared_ptr<ProcessIo>> Io(const std::string& container_id,
                                                const std::string& exec_id);
  // Forgets one process that ended (its stdio ends close when the last user lets go):
  // FailedPrecondition while it runs, NotFound for an unknown process.
  absl::Status Remove(const std::string& container_id, const std::string& exec_id);
  // Forgets every process of the container (their stdio ends close when the last user lets go).
  void RemoveContainer(const std::string& container_id);

 private:
  struct Entry {
    pid_t pid;
    std::shared_ptr<ProcessIo> io;
    bool exited = false;
    ExitInfo exit{};
  };
  using Key = std::pair<std::string, std::string>;
  absl::StatusOr<Entry*> Find(const std::string& container_id, const std::string& exec_id)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  absl::Mutex mu_;
  absl::CondVar changed_;  // an exit was recorded or entries were removed
  std::map<Key, Entry> entries_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<pid_t, Key> by_pid_ ABSL_GUARDED_BY(mu_);
  // Exits of unregistered pids (orphans, or a process faster than its registration), oldest first.
  std::map<uint64_t, std::pair<pid_t, ExitInfo>> early_exits_ ABSL_GUARDED_BY(mu_);
  uint64_t early_exit_seq_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace kapsel::agent

#endif  // KAPSEL_GUEST_AGENT_PROCESS_TABLE_H_
