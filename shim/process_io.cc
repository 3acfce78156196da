#include "shim/process_io.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <cerrno>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/agent/dialer.h"
#include "common/status.h"
#include "shim/log.h"

namespace kapsel::shim {
namespace {

using agent::v1::StdioHello;
constexpr size_t kBufferSize = 64 * 1024;
constexpr absl::Duration kDialTimeout = absl::Seconds(10);

absl::StatusOr<std::string> LocalPath(const std::string& uri) {
  if (absl::StartsWith(uri, "file://")) return uri.substr(7);
  if (absl::StrContains(uri, "://")) {
    return absl::UnimplementedError(absl::StrCat("stdio URI '", uri, "': only fifos and files"));
  }
  return uri;
}

// An output: a fifo opened read-write (never blocks, never EPIPE when containerd reopens), or a
// file appended to.
absl::StatusOr<UniqueFd> OpenOutput(const std::string& uri) {
  if (uri.empty()) return UniqueFd();
  ASSIGN_OR_RETURN(std::string path, LocalPath(uri));
  struct stat st;
  const bool fifo = stat(path.c_str(), &st) == 0 && S_ISFIFO(st.st_mode);
  UniqueFd fd(
      fifo ? open(path.c_str(), O_RDWR | O_NONBLOCK | O_CLOEXEC)
           : open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_NONBLOCK | O_CLOEXEC, 0640));
  if (!fd) return ErrnoError(absl::StrCat("open stdio ", path));
  return fd;
}

// stdin: a fifo opened read-only without waiting for the writer (poll tells when it comes and
// when it leaves), or a file read once.
absl::StatusOr<UniqueFd> OpenInput(const std::string& uri) {
  if (uri.empty()) return UniqueFd();
  ASSIGN_OR_RETURN(std::string path, LocalPath(uri));
  UniqueFd fd(open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC));
  if (!fd) return ErrnoError(absl::StrCat("open stdin ", path));
  return fd;
}

void SetNonBlocking(int fd) { fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK); }

enum class Ready { kReady, kCancelled, kFinish };

// Waits until `fd` is ready for `events` (kReady), `cancel` fires (kCancelled: stop now) or
// `finish` fires (kFinish: copy what is already there, then stop).
Ready WaitReady(int fd, short events, int cancel, int finish) {
  pollfd p[3] = {{fd, events, 0}, {cancel, POLLIN, 0}, {finish, POLLIN, 0}};
  while (true) {
    const int n = poll(p, finish >= 0 ? 3 : 2, -1);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 || p[1].revents != 0) return Ready::kCancelled;
    if (p[0].revents != 0) return Ready::kReady;
    if (finish >= 0 && p[2].revents != 0) return Ready::kFinish;
  }
}

}  // namespace

absl::StatusOr<std::unique_ptr<ProcessIo>> ProcessIo::Open(const StdioPaths& paths) {
  std::unique_ptr<ProcessIo> io(new ProcessIo());
  io->terminal_ = paths.terminal;
  ASSIGN_OR_RETURN(io->stdin_, OpenInput(paths.stdin_path));
  io->has_stdin_ = io->stdin_.valid();
  ASSIGN_OR_RETURN(io->stdout_, OpenOutput(paths.stdout_path));
  if (!paths.terminal) {
    ASSIGN_OR_RETURN(io->stderr_, OpenOutput(paths.stderr_path));
  }
  io->cancel_ = UniqueFd(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  io->stdin_cancel_ = UniqueFd(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!io->cancel_ || !io->stdin_cancel_) return ErrnoError("eventfd");
  return io;
}

ProcessIo::~ProcessIo() {
  const uint64_t one = 1;
  [[maybe_unused]] ssize_t n = write(cancel_.get(), &one, sizeof(one));
  for (std::thread& t : threads_) t.join();
}

void ProcessIo::CloseUnattached() {
  stdin_.reset();
  stdout_.reset();
  stderr_.reset();
}

absl::Status ProcessIo::Attach(const std::string& endpoint, const std::string& container_id,
                               const std::string& exec_id) {
  auto dial = [&](StdioHello::Stream stream) -> absl::StatusOr<int> {
    ASSIGN_OR_RETURN(UniqueFd fd,
                     agent::DialStdio(endpoint, container_id, exec_id, stream, kDialTimeout));
    SetNonBlocking(fd.get());
    streams_.push_back(std::move(fd));
    return streams_.back().get();
  };
  if (terminal_) {
    ASSIGN_OR_RETURN(int tty, dial(StdioHello::TERMINAL));
    if (stdout_) StartCopy(tty, std::move(stdout_), /*is_output=*/true, false);
    stdin_stream_ = tty;
  } else {
    if (stdout_) {
      ASSIGN_OR_RETURN(int out, dial(StdioHello::STDOUT));
      StartCopy(out, std::move(stdout_), true, false);
    }
    if (stderr_) {
      ASSIGN_OR_RETURN(int err, dial(StdioHello::STDERR));
      StartCopy(err, std::move(stderr_), true, false);
    }
    if (stdin_) {
      ASSIGN_OR_RETURN(stdin_stream_, dial(StdioHello::STDIN));
    }
  }
  if (stdin_) {
    // The thread owns the fifo; the stream stays in streams_.
    const int from = stdin_.get();
    threads_.emplace_back([this, from, owned = std::move(stdin_)]() mutable {
      Copy(from, stdin_stream_, /*is_output=*/false, /*shutdown_to_on_eof=*/true);
      owned.reset();
    });
  }
  return absl::OkStatus();
}

void ProcessIo::StartCopy(int from, UniqueFd to, bool is_output, bool shutdown_to_on_eof) {
  {
    absl::MutexLock lock(&mu_);
    ++outputs_running_;
  }
  // The thread owns containerd's end and closes it when the stream ends: containerd waits for
  // that EOF before it deletes the task.
  threads_.emplace_back([this, from, to = std::move(to), is_output, shutdown_to_on_eof]() mutable {
    Copy(from, to.get(), is_output, shutdown_to_on_eof);
    to.reset();
    absl::MutexLock lock(&mu_);
    --outputs_running_;
  });
}

void ProcessIo::Copy(int from, int to, bool is_output, bool shutdown_to_on_eof) {
  const int finish = is_output ? -1 : stdin_cancel_.get();
  std::unique_ptr<char[]> buffer(new char[kBufferSize]);
  bool draining = false;  // CloseStdin: copy what the fifo holds without waiting for more
  // An agent stream (send without SIGPIPE) or containerd's fifo or file.
  struct stat st;
  const bool to_socket = fstat(to, &st) == 0 && S_ISSOCK(st.st_mode);
  while (true) {
    if (!draining) {
      const Ready ready = WaitReady(from, POLLIN, cancel_.get(), finish);
      if (ready == Ready::kCancelled) break;
      draining = ready == Ready::kFinish;
    }
    const ssize_t n = read(from, buffer.get(), kBufferSize);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN && !draining) continue;
    if (n <= 0) break;
    size_t done = 0;
    bool failed = false;
    while (done < static_cast<size_t>(n)) {
      const size_t left = static_cast<size_t>(n) - done;
      const ssize_t written = to_socket ? send(to, buffer.get() + done, left, MSG_NOSIGNAL)
                                        : write(to, buffer.get() + done, left);
      if (written < 0 && (errno == EAGAIN || errno == EINTR)) {
        if (WaitReady(to, POLLOUT, cancel_.get(), -1) != Ready::kReady) {
          failed = true;
          break;
        }
        continue;
      }
      if (written < 0) {
        LogDebug("stdio copy ended: ", strerror(errno));
        failed = true;
        break;
      }
      done += static_cast<size_t>(written);
    }
    if (failed) break;
  }
  if (shutdown_to_on_eof) shutdown(to, SHUT_WR);
}

bool ProcessIo::WaitOutput(absl::Duration timeout) {
  absl::MutexLock lock(&mu_);
  return mu_.AwaitWithTimeout(absl::Condition(
                                  +[](int* running) { return *running == 0; }, &outputs_running_),
                              timeout);
}

void ProcessIo::CloseStdin() {
  const uint64_t one = 1;
  [[maybe_unused]] ssize_t n = write(stdin_cancel_.get(), &one, sizeof(one));
  // The copy thread half-closes the stream as it stops; without stdin nothing is open.
}

}  // namespace kapsel::shim
