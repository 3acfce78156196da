#include "guest-agent/child_reaper.h"

#include <poll.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/status.h"

namespace kapsel::agent {

void ChildReaper::BlockChildSignal() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGCHLD);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
}

absl::StatusOr<std::unique_ptr<ChildReaper>> ChildReaper::Start(ExitCallback on_exit) {
  BlockChildSignal();
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGCHLD);
  UniqueFd signal_fd(signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK));
  if (!signal_fd) return ErrnoError("signalfd(SIGCHLD)");
  UniqueFd stop_fd(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!stop_fd) return ErrnoError("eventfd");
  return std::unique_ptr<ChildReaper>(
      new ChildReaper(std::move(signal_fd), std::move(stop_fd), std::move(on_exit)));
}

ChildReaper::ChildReaper(UniqueFd signal_fd, UniqueFd stop_fd, ExitCallback on_exit)
    : signal_fd_(std::move(signal_fd)), stop_fd_(std::move(stop_fd)), on_exit_(std::move(on_exit)) {
  thread_ = std::thread([this] { Loop(); });
}

ChildReaper::~ChildReaper() {
  const uint64_t one = 1;
  [[maybe_unused]] ssize_t n = write(stop_fd_.get(), &one, sizeof(one));
  thread_.join();
}

void ChildReaper::Loop() {
  ReapAll();  // children that exited before the signalfd existed
  while (true) {
    pollfd fds[2] = {{signal_fd_.get(), POLLIN, 0}, {stop_fd_.get(), POLLIN, 0}};
    if (poll(fds, 2, -1) < 0) continue;
    if (fds[1].revents & POLLIN) return;
    if (fds[0].revents & POLLIN) {
      signalfd_siginfo info;
      while (read(signal_fd_.get(), &info, sizeof(info)) == sizeof(info)) {
      }
      ReapAll();
    }
  }
}

void ChildReaper::ReapAll() {
  while (true) {
    int status;
    pid_t pid = waitpid(-1, &status, WNOHANG);
    if (pid <= 0) return;
    on_exit_(pid, status);
  }
}

int ExitStatusOf(int wait_status) {
  if (WIFEXITED(wait_status)) return WEXITSTATUS(wait_status);
  if (WIFSIGNALED(wait_status)) return 128 + WTERMSIG(wait_status);
  return -1;
}

}  // namespace kapsel::agent
