#include "guest-agent/process_table.h"

#include <fcntl.h>
#include <unistd.h>

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "guest-agent/child_reaper.h"

namespace kapsel::agent {
namespace {

constexpr size_t kMaxEarlyExits = 4096;

std::string Name(const std::string& container_id, const std::string& exec_id) {
  return exec_id.empty() ? absl::StrCat("container ", container_id)
                         : absl::StrCat("exec ", exec_id, " of container ", container_id);
}

absl::Status Pipe(UniqueFd* reader, UniqueFd* writer) {
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) return ErrnoError("pipe2");
  reader->reset(fds[0]);
  writer->reset(fds[1]);
  return absl::OkStatus();
}

}  // namespace

absl::Status MakeStdioPipes(bool with_stdin, ProcessIo* io, ChildStdio* child) {
  absl::MutexLock lock(&io->mu);
  if (with_stdin) RETURN_IF_ERROR(Pipe(&child->stdin_fd, &io->stdin_writer));
  RETURN_IF_ERROR(Pipe(&io->stdout_reader, &child->stdout_fd));
  RETURN_IF_ERROR(Pipe(&io->stderr_reader, &child->stderr_fd));
  return absl::OkStatus();
}

absl::Status ProcessTable::Add(const std::string& container_id, const std::string& exec_id,
                               pid_t pid, std::shared_ptr<ProcessIo> io) {
  absl::MutexLock lock(&mu_);
  Key key{container_id, exec_id};
  if (entries_.count(key) != 0) {
    return absl::AlreadyExistsError(absl::StrCat(Name(container_id, exec_id), " already exists"));
  }
  Entry entry{pid, std::move(io)};
  for (auto it = early_exits_.begin(); it != early_exits_.end(); ++it) {
    if (it->second.first == pid) {
      entry.exited = true;
      entry.exit = it->second.second;
      early_exits_.erase(it);
      break;
    }
  }
  entries_.emplace(key, std::move(entry));
  by_pid_[pid] = key;
  return absl::OkStatus();
}

void ProcessTable::OnExit(pid_t pid, int wait_status) {
  ExitInfo info{ExitStatusOf(wait_status), absl::Now()};
  absl::MutexLock lock(&mu_);
  auto it = by_pid_.find(pid);
  if (it == by_pid_.end()) {
    early_exits_[early_exit_seq_++] = {pid, info};
    if (early_exits_.size() > kMaxEarlyExits) early_exits_.erase(early_exits_.begin());
    return;
  }
  Entry& entry = entries_.at(it->second);
  entry.exited = true;
  entry.exit = info;
  by_pid_.erase(it);  // the pid may be reused from now on
  changed_.SignalAll();
}

absl::StatusOr<ProcessTable::Entry*> ProcessTable::Find(const std::string& container_id,
                                                        const std::string& exec_id) {
  auto it = entries_.find(Key{container_id, exec_id});
  if (it == entries_.end()) {
    return absl::NotFoundError(absl::StrCat(Name(container_id, exec_id), " does not exist"));
  }
  return &it->second;
}

absl::StatusOr<ExitInfo> ProcessTable::Wait(const std::string& container_id,
                                            const std::string& exec_id, absl::Time deadline,
                                            const std::function<bool()>& cancelled) {
  absl::MutexLock lock(&mu_);
  while (true) {
    ASSIGN_OR_RETURN(Entry * entry, Find(container_id, exec_id));
    if (entry->exited) return entry->exit;
    if (cancelled && cancelled()) return absl::CancelledError("wait cancelled");
    if (absl::Now() >= deadline) {
      return absl::DeadlineExceededError(
          absl::StrCat(Name(container_id, exec_id), " is still running"));
    }
    // Wake up regularly to notice cancellation; an exit wakes us at once.
    const absl::Time until = std::min(deadline, absl::Now() + absl::Milliseconds(100));
    changed_.WaitWithDeadline(&mu_, until);
  }
}

absl::StatusOr<pid_t> ProcessTable::Pid(const std::string& container_id,
                                        const std::string& exec_id) {
  absl::MutexLock lock(&mu_);
  ASSIGN_OR_RETURN(Entry * entry, Find(container_id, exec_id));
  return entry->pid;
}

absl::StatusOr<bool> ProcessTable::Exited(const std::string& container_id,
                                          const std::string& exec_id) {
  absl::MutexLock lock(&mu_);
  ASSIGN_OR_RETURN(Entry * entry, Find(container_id, exec_id));
  return entry->exited;
}

absl::StatusOr<std::shared_ptr<ProcessIo>> ProcessTable::Io(const std::string& container_id,
                                                            const std::string& exec_id) {
  absl::MutexLock lock(&mu_);
  ASSIGN_OR_RETURN(Entry * entry, Find(container_id, exec_id));
  return entry->io;
}

absl::Status ProcessTable::Remove(const std::string& container_id, const std::string& exec_id) {
  absl::MutexLock lock(&mu_);
  ASSIGN_OR_RETURN(Entry * entry, Find(container_id, exec_id));
  if (!entry->exited) {
    return absl::FailedPreconditionError(
        absl::StrCat(Name(container_id, exec_id), " is still running"));
  }
  entries_.erase(Key{container_id, exec_id});
  changed_.SignalAll();
  return absl::OkStatus();
}

void ProcessTable::RemoveContainer(const std::string& container_id) {
  absl::MutexLock lock(&mu_);
  for (auto it = entries_.begin(); it != entries_.end();) {
    if (it->first.first != container_id) {
      ++it;
      continue;
    }
    if (!it->second.exited) by_pid_.erase(it->second.pid);
    it = entries_.erase(it);
  }
  changed_.SignalAll();
}

}  // namespace kapsel::agent
