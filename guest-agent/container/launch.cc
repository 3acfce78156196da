#include "guest-agent/container/launch.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "guest-agent/container/clone.h"
#include "guest-agent/container/sync_channel.h"

namespace kapsel::agent {
namespace {

// Waits for the launcher (a child without exit signal) through its pidfd.
void ReapLauncher(int pidfd) {
  siginfo_t info{};
  while (waitid(static_cast<idtype_t>(P_PIDFD), pidfd, &info, WEXITED | __WALL) != 0 &&
         errno == EINTR) {
  }
}

std::string ReadProcFile(pid_t pid, const char* name) {
  std::ifstream in(absl::StrCat("/proc/", pid, "/", name));
  std::string text;
  std::getline(in, text, '\0');
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
  return text;
}

// "user U system S" (clock ticks) from /proc/PID/stat: where a running process spends its time.
std::string CpuTimes(pid_t pid) {
  std::string stat = ReadProcFile(pid, "stat");
  size_t paren = stat.rfind(')');
  if (paren == std::string::npos) return "";
  std::istringstream fields(stat.substr(paren + 1));
  std::string field;
  std::string utime;
  std::string stime;
  // After "(comm)": state is field 3; utime and stime are fields 14 and 15.
  for (int i = 3; i <= 15 && fields >> field; ++i) {
    if (i == 14) utime = field;
    if (i == 15) stime = field;
  }
  return absl::StrCat(", user ", utime, " system ", stime, " ticks");
}

std::string DescribeStuckImpl(pid_t pid, int depth) {
  std::string syscall_line = ReadProcFile(pid, "syscall");
  std::string text = absl::StrCat("pid ", pid, ": wchan ", ReadProcFile(pid, "wchan"), ", syscall ",
                                  syscall_line.substr(0, 40), CpuTimes(pid));
  if (syscall_line == "running") {
    // On a CPU (a busy loop): stopped for a moment, it shows its system call (or -1) and the
    // user stack and instruction pointers, which addr2line on an unstripped agent turns into code.
    if (kill(pid, SIGSTOP) == 0) {
      usleep(100 * 1000);
      absl::StrAppend(&text, ", when stopped: ", ReadProcFile(pid, "syscall"));
      kill(pid, SIGCONT);
    }
  }
  if (depth < 2) {
    std::istringstream children(ReadProcFile(pid, absl::StrCat("task/", pid, "/children").c_str()));
    pid_t child;
    while (children >> child) absl::StrAppend(&text, "; ", DescribeStuckImpl(child, depth + 1));
  }
  return text;
}

}  // namespace

std::string DescribeStuck(pid_t pid) { return DescribeStuckImpl(pid, 0); }

absl::StatusOr<LaunchedProcess> LaunchProcess(child::LaunchSpec spec, const int stdio[3],
                                              int cgroup_fd, absl::Duration timeout) {
  int pair[2];
  if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair) != 0) {
    return ErrnoError("socketpair for the container process");
  }
  UniqueFd agent_end(pair[0]);
  UniqueFd child_end(pair[1]);
  UniqueFd dev_null;
  for (int i = 0; i < 3; ++i) {
    spec.stdio[i] = stdio[i];
    if (stdio[i] >= 0) continue;
    if (!dev_null) {
      dev_null.reset(open("/dev/null", O_RDWR | O_CLOEXEC));
      if (!dev_null) return ErrnoError("opening /dev/null for stdio");
    }
    spec.stdio[i] = dev_null.get();
  }
  spec.sync_fd = child_end.get();

  int launcher_pidfd = -1;
  pid_t launcher;
  {
    ScopedBlockAllSignals blocked;
    launcher = Clone3(0, 0, cgroup_fd, &launcher_pidfd);
    if (launcher == 0) child::RunLauncher(spec);
  }
  if (launcher < 0) {
    return ErrnoError(cgroup_fd >= 0 ? "clone3 into the container's cgroup" : "clone3");
  }
  UniqueFd launcher_fd(launcher_pidfd);
  child_end.reset();
  dev_null.reset();

  absl::StatusOr<std::optional<ReceivedMessage>> received =
      ReceiveSyncMessageWithTimeout(agent_end.get(), timeout);
  if (!received.ok()) {
    const std::string stuck = absl::IsDeadlineExceeded(received.status())
                                  ? absl::StrCat(" (", DescribeStuck(launcher), ")")
                                  : "";
    syscall(SYS_pidfd_send_signal, launcher_fd.get(), SIGKILL, nullptr, 0);
    ReapLauncher(launcher_fd.get());
    return absl::Status(received.status().code(), absl::StrCat(received.status().message(), stuck));
  }
  ReapLauncher(launcher_fd.get());
  if (!received->has_value()) {
    return absl::InternalError("the container process launcher exited without a word");
  }
  ReceivedMessage& message = **received;
  if (message.message.type == SyncType::kError) {
    return SyncMessageStatus(message.message, "starting the container process");
  }
  if (message.message.type != SyncType::kLaunched || !message.fd) {
    return absl::InternalError(absl::StrCat("unexpected message ",
                                            static_cast<int>(message.message.type),
                                            " from the container process launcher"));
  }
  LaunchedProcess process;
  process.pid = static_cast<pid_t>(message.message.value);
  process.pidfd = std::move(message.fd);
  process.sync = std::move(agent_end);
  return process;
}

absl::Status SendProceed(const LaunchedProcess& process) {
  SyncMessage message;
  message.type = SyncType::kProceed;
  if (int err = SendSyncMessage(process.sync.get(), message); err != 0) {
    return ErrnoError(err, "telling the container process to go on");
  }
  return absl::OkStatus();
}

}  // namespace kapsel::agent
