#include "guest-agent/stdio_router.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <iterator>

#include "common/agent/agent.pb.h"
#include "common/status.h"

namespace kapsel::agent {
namespace {

using v1::StdioHello;

constexpr size_t kMaxHello = 4096;
constexpr size_t kChunk = 1 << 16;

bool ReadFull(int fd, void* buffer, size_t size) {
  auto* p = static_cast<uint8_t*>(buffer);
  while (size > 0) {
    ssize_t n = read(fd, p, size);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    p += n;
    size -= static_cast<size_t>(n);
  }
  return true;
}

bool WriteFull(int fd, const uint8_t* data, size_t size) {
  while (size > 0) {
    ssize_t n = write(fd, data, size);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    data += n;
    size -= static_cast<size_t>(n);
  }
  return true;
}

// Reads a varint length and that many bytes, within the socket's receive timeout.
absl::StatusOr<StdioHello> ReadHello(int fd) {
  uint64_t length = 0;
  for (int shift = 0;; shift += 7) {
    uint8_t byte;
    if (shift > 28 || !ReadFull(fd, &byte, 1)) {
      return absl::InvalidArgumentError("stdio: no hello");
    }
    length |= uint64_t{byte & 0x7fu} << shift;
    if (!(byte & 0x80)) break;
  }
  if (length > kMaxHello) return absl::InvalidArgumentError("stdio: hello too large");
  std::string bytes(length, '\0');
  if (!ReadFull(fd, bytes.data(), length)) return absl::InvalidArgumentError("stdio: short hello");
  StdioHello hello;
  if (!hello.ParseFromString(bytes)) return absl::InvalidArgumentError("stdio: bad hello");
  return hello;
}

// Waits until `fd` is ready for `events` (or hung up / in error).
void WaitFor(int fd, short events) {
  pollfd p{fd, events, 0};
  while (poll(&p, 1, -1) < 0 && errno == EINTR) {
  }
}

// Moves bytes from `from` to `to` until EOF or an error; one side must be a pipe.
// Never blocks inside splice(): a blocking splice holds the pipe's lock while it waits for the
// socket, and a process closing its end of that pipe (exiting) would then hang in the kernel,
// unkillable, until the stream moved (a `ctr run` without input never sends stdin).
void Splice(int from, int to) {
  fcntl(from, F_SETFL, fcntl(from, F_GETFL) | O_NONBLOCK);
  fcntl(to, F_SETFL, fcntl(to, F_GETFL) | O_NONBLOCK);
  while (true) {
    ssize_t n = splice(from, nullptr, to, nullptr, kChunk, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
    if (n > 0) continue;
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) {
      // Either side may be the one not ready: wait for room, then for data.
      WaitFor(to, POLLOUT);
      WaitFor(from, POLLIN);
      continue;
    }
    return;
  }
}

// The same through a buffer, for a terminal (a pty master is no pipe).
void Copy(int from, int to) {
  // Not zero-filled: its pages cost guest memory only once output reaches them.
  std::unique_ptr<uint8_t[]> buffer(new uint8_t[kChunk]);
  while (true) {
    ssize_t n = read(from, buffer.get(), kChunk);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0 || !WriteFull(to, buffer.get(), static_cast<size_t>(n))) return;
  }
}

}  // namespace

StdioRouter::~StdioRouter() { Shutdown(); }

absl::Status StdioRouter::Start(UniqueFd listener) {
  // Non-blocking, so a connection that goes away between poll and accept cannot block the loop.
  const int flags = fcntl(listener.get(), F_GETFL);
  if (flags < 0 || fcntl(listener.get(), F_SETFL, flags | O_NONBLOCK) != 0) {
    return ErrnoError("stdio listener: O_NONBLOCK");
  }
  wake_fd_ = UniqueFd(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!wake_fd_) return ErrnoError("stdio listener: eventfd");
  listener_ = std::move(listener);
  accept_thread_ = std::thread([this] { AcceptLoop(); });
  return absl::OkStatus();
}

void StdioRouter::AcceptLoop() {
  while (true) {
    {
      absl::MutexLock lock(&mu_);
      if (shutting_down_) return;
    }
    // Shutdown wakes the poll through wake_fd_.
    pollfd fds[2] = {{wake_fd_.get(), POLLIN, 0}, {listener_.get(), POLLIN, 0}};
    if (poll(fds, 2, -1) <= 0 || fds[0].revents != 0) continue;
    UniqueFd connection(accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC));
    if (connection) HandleConnection(std::move(connection));
  }
}

void StdioRouter::Spawn(std::function<void()> work, std::vector<int> fds_to_cut) {
  std::vector<Worker> finished;
  {
    absl::MutexLock lock(&mu_);
    if (shutting_down_) return;
    auto still_running = std::partition(workers_.begin(), workers_.end(),
                                        [](const Worker& w) { return !w.done->load(); });
    std::move(still_running, workers_.end(), std::back_inserter(finished));
    workers_.erase(still_running, workers_.end());
    for (int fd : fds_to_cut) live_fds_.push_back(fd);
    auto done = std::make_shared<std::atomic<bool>>(false);
    workers_.push_back({std::thread([this, work = std::move(work), fds_to_cut, done] {
                          work();
                          absl::MutexLock lock(&mu_);
                          for (int fd : fds_to_cut) std::erase(live_fds_, fd);
                          done->store(true);
                        }),
                        done});
  }
  for (Worker& w : finished) w.thread.join();
}

void StdioRouter::HandleConnection(UniqueFd connection) {
  timeval timeout{5, 0};
  setsockopt(connection.get(), SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
  absl::StatusOr<StdioHello> hello = ReadHello(connection.get());
  if (!hello.ok()) return;  // closing the connection is the answer
  timeval none{0, 0};
  setsockopt(connection.get(), SOL_SOCKET, SO_RCVTIMEO, &none, sizeof(none));
  absl::StatusOr<std::shared_ptr<ProcessIo>> io =
      processes_->Io(hello->container_id(), hello->exec_id());
  if (!io.ok()) return;

  // Take the stream's end out of the process record: a stream attaches once.
  std::shared_ptr<ProcessIo> process = *io;
  UniqueFd end;
  {
    absl::MutexLock lock(&process->mu);
    switch (hello->stream()) {
      case StdioHello::STDIN:
        end = std::move(process->stdin_writer);
        if (end) process->input_connection = connection.get();
        break;
      case StdioHello::STDOUT:
        end = std::move(process->stdout_reader);
        break;
      case StdioHello::STDERR:
        end = std::move(process->stderr_reader);
        break;
      case StdioHello::TERMINAL:
        if (process->terminal && process->input_connection < 0 && !process->stdin_closed) {
          end.reset(fcntl(process->terminal.get(), F_DUPFD_CLOEXEC, 0));
          if (end) process->input_connection = connection.get();
        }
        break;
      default:
        break;
    }
  }
  if (!end) return;

  auto conn = std::make_shared<UniqueFd>(std::move(connection));
  auto stream_end = std::make_shared<UniqueFd>(std::move(end));
  const int conn_fd = conn->get();
  switch (hello->stream()) {
    case StdioHello::STDIN:
      Spawn(
          [conn, stream_end, process] {
            Splice(conn->get(), stream_end->get());
            absl::MutexLock lock(&process->mu);
            process->input_connection = -1;
          },
          {conn_fd});
      break;
    case StdioHello::STDOUT:
    case StdioHello::STDERR:
      Spawn(
          [conn, stream_end] {
            Splice(stream_end->get(), conn->get());
            shutdown(conn->get(), SHUT_WR);
          },
          {conn_fd});
      break;
    case StdioHello::TERMINAL: {
      // Output: master -> connection until the terminal hangs up; input the other way.
      auto input_end = std::make_shared<UniqueFd>(fcntl(stream_end->get(), F_DUPFD_CLOEXEC, 0));
      Spawn(
          [conn, stream_end] {
            Copy(stream_end->get(), conn->get());
            shutdown(conn->get(), SHUT_RDWR);
          },
          {conn_fd});
      Spawn(
          [conn, input_end, process] {
            Copy(conn->get(), input_end->get());
            absl::MutexLock lock(&process->mu);
            process->input_connection = -1;
          },
          {});
      break;
    }
    default:
      break;
  }
}

void StdioRouter::Shutdown() {
  {
    absl::MutexLock lock(&mu_);
    shutting_down_ = true;
  }
  if (wake_fd_) {
    const uint64_t one = 1;
    while (write(wake_fd_.get(), &one, sizeof(one)) < 0 && errno == EINTR) {
    }
  }
  // The accept thread may still be spawning copiers: stop it first, then cut and join them.
  if (accept_thread_.joinable()) accept_thread_.join();
  std::vector<Worker> workers;
  {
    absl::MutexLock lock(&mu_);
    for (int fd : live_fds_) shutdown(fd, SHUT_RDWR);
    workers.swap(workers_);
  }
  for (Worker& w : workers) w.thread.join();
}

}  // namespace kapsel::agent
