#include "shim/child_process.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <thread>

#include "absl/functional/function_ref.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "common/status.h"

namespace kapsel::shim {
namespace {

// PR_SET_PDEATHSIG fires when the thread that forked the child ends, not the process: a child
// forked by a ttrpc worker would be killed as soon as that worker ended after a while idle. So
// every child is forked on this thread, which lives as long as the shim.
class ForkThread {
 public:
  // fork() on the thread, the child running `child_fn` (which must not return); the child's pid,
  // or -errno.
  static pid_t Fork(absl::FunctionRef<void()> child_fn) {
    static ForkThread* const thread = new ForkThread;  // never destroyed, like the thread
    return thread->Run(child_fn);
  }

 private:
  ForkThread() {
    std::thread([this] { Loop(); }).detach();
  }

  pid_t Run(absl::FunctionRef<void()> child_fn) {
    absl::MutexLock call(&call_mu_);  // one fork at a time
    absl::MutexLock lock(&mu_);
    child_fn_ = &child_fn;
    done_ = false;
    mu_.Await(absl::Condition(&done_));
    return pid_;
  }

  void Loop() {
    absl::MutexLock lock(&mu_);
    while (true) {
      mu_.Await(absl::Condition(
          +[](ForkThread* t)
               ABSL_EXCLUSIVE_LOCKS_REQUIRED(t->mu_) { return t->child_fn_ != nullptr; },
          this));
      const pid_t pid = fork();
      if (pid == 0) {
        (*child_fn_)();  // does not return
        _exit(127);
      }
      pid_ = pid < 0 ? -errno : pid;
      child_fn_ = nullptr;
      done_ = true;
    }
  }

  absl::Mutex call_mu_;
  absl::Mutex mu_;
  const absl::FunctionRef<void()>* child_fn_ ABSL_GUARDED_BY(mu_) = nullptr;
  bool done_ ABSL_GUARDED_BY(mu_) = false;
  pid_t pid_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace

absl::StatusOr<std::unique_ptr<ChildProcess>> ChildProcess::Spawn(
    const std::vector<std::string>& argv, const std::string& log_path,
    const std::vector<int>& inherit_fds, int cgroup_procs_fd) {
  if (argv.empty() || argv[0].empty() || argv[0][0] != '/') {
    return absl::InvalidArgumentError("ChildProcess: argv[0] must be an absolute path");
  }
  if (access(argv[0].c_str(), X_OK) != 0) return ErrnoError(absl::StrCat("cannot run ", argv[0]));
  const std::string log = log_path.empty() ? "/dev/null" : log_path;
  UniqueFd log_fd(open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640));
  if (!log_fd) return ErrnoError(absl::StrCat("open ", log));
  UniqueFd null_fd(open("/dev/null", O_RDONLY | O_CLOEXEC));
  if (!null_fd) return ErrnoError("open /dev/null");

  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  const pid_t parent = getpid();
  const pid_t pid = ForkThread::Fork([&] {
    // The child: only async-signal-safe calls from here on.
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(127);
    setpgid(0, 0);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    dup2(null_fd.get(), 0);
    dup2(log_fd.get(), 1);
    dup2(log_fd.get(), 2);
    for (int fd : inherit_fds) {
      if (fd <= 2 || fcntl(fd, F_SETFD, 0) != 0) _exit(127);
    }
    if (cgroup_procs_fd >= 0 && write(cgroup_procs_fd, "0", 1) != 1) {
      static constexpr char kMessage[] = "kapsel: cannot move into the sandbox's cgroup\n";
      [[maybe_unused]] ssize_t n = write(2, kMessage, sizeof(kMessage) - 1);
      _exit(127);
    }
    execv(args[0], args.data());
    _exit(127);
  });
  if (pid < 0) return ErrnoError(-pid, "fork");
  UniqueFd pidfd(static_cast<int>(syscall(SYS_pidfd_open, pid, 0)));
  if (!pidfd) {
    const absl::Status error = ErrnoError("pidfd_open");
    kill(pid, SIGKILL);
    waitpid(pid, nullptr, 0);
    return error;
  }
  const size_t slash = argv[0].rfind('/');
  return std::unique_ptr<ChildProcess>(
      new ChildProcess(pid, std::move(pidfd), argv[0].substr(slash + 1)));
}

ChildProcess::~ChildProcess() {
  absl::MutexLock lock(&mu_);
  if (exit_code_.has_value()) return;
  kill(pid_, SIGKILL);
  int status;
  while (waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
  }
}

bool ChildProcess::TryReap() {
  if (exit_code_.has_value()) return true;
  int status;
  const pid_t r = waitpid(pid_, &status, WNOHANG);
  if (r != pid_) return false;
  exit_code_ = WIFSIGNALED(status) ? 128 + WTERMSIG(status) : WEXITSTATUS(status);
  return true;
}

std::optional<int> ChildProcess::Wait(absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  while (true) {
    {
      absl::MutexLock lock(&mu_);
      if (TryReap()) return exit_code_;
    }
    const absl::Duration left = deadline - absl::Now();
    if (left <= absl::ZeroDuration()) return std::nullopt;
    pollfd p = {pidfd_.get(), POLLIN, 0};
    const int ms = left == absl::InfiniteDuration()
                       ? -1
                       : static_cast<int>(absl::ToInt64Milliseconds(left) + 1);
    poll(&p, 1, ms);
  }
}

void ChildProcess::Signal(int signal) {
  absl::MutexLock lock(&mu_);
  // The pidfd names this very process even if the pid was reused after an unexpected reap.
  if (!exit_code_.has_value()) syscall(SYS_pidfd_send_signal, pidfd_.get(), signal, nullptr, 0);
}

int ChildProcess::Stop(absl::Duration grace) {
  Signal(SIGTERM);
  if (std::optional<int> code = Wait(grace)) return *code;
  Signal(SIGKILL);
  return *Wait(absl::InfiniteDuration());
}

}  // namespace kapsel::shim
