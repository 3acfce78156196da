#include "common/ttrpc/server.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/status.h"
#include "common/ttrpc/server_connection.h"
#include "common/ttrpc/worker_pool.h"

namespace kapsel::ttrpc {

Server::Server(ServerOptions options)
    : options_(options),
      wake_fd_(eventfd(0, EFD_CLOEXEC)),
      pool_(std::make_unique<WorkerPool>(options.max_threads, options.idle_thread_timeout)) {}

Server::~Server() { Shutdown(); }

absl::Status Server::Register(absl::string_view service, absl::string_view method,
                              RawHandler handler) {
  return registry_.Register(service, method, std::move(handler));
}

absl::Status Server::Start(UniqueFd listener) {
  absl::MutexLock lock(&mu_);
  if (shutting_down_) return absl::FailedPreconditionError("ttrpc: the server is shut down");
  accept_threads_.emplace_back([this, fd = listener.release()] {
    // Errors here mean accept failed for good; the server keeps serving its connections.
    absl::Status status = Serve(UniqueFd(fd));
    (void)status;
  });
  return absl::OkStatus();
}

absl::Status Server::Serve(UniqueFd listener) {
  {
    absl::MutexLock lock(&mu_);
    if (shutting_down_) return absl::FailedPreconditionError("ttrpc: the server is shut down");
    ++accept_loops_;
  }
  absl::Status status = AcceptLoop(listener.get());
  listener.reset();
  absl::MutexLock lock(&mu_);
  --accept_loops_;
  return status;
}

absl::Status Server::AcceptLoop(int listener) {
  if (!wake_fd_) return absl::InternalError("ttrpc: no eventfd for the server");
  int flags = fcntl(listener, F_GETFL);
  if (flags < 0 || fcntl(listener, F_SETFL, flags | O_NONBLOCK) < 0) {
    return ErrnoError("ttrpc: cannot make the listening socket non-blocking");
  }
  while (true) {
    pollfd fds[2] = {{wake_fd_.get(), POLLIN, 0}, {listener, POLLIN, 0}};
    if (poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      return ErrnoError("ttrpc: poll");
    }
    if (fds[0].revents != 0) return absl::OkStatus();
    if (fds[1].revents & (POLLERR | POLLNVAL)) {
      return absl::FailedPreconditionError("ttrpc: the listening socket failed");
    }
    int fd = accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) {
      switch (errno) {
        case EINTR:
        case EAGAIN:
        case ECONNABORTED:
        case EPROTO:
          continue;
        case EMFILE:
        case ENFILE:
        case ENOBUFS:
        case ENOMEM:
          // Out of resources: back off instead of spinning on the pending connection.
          absl::SleepFor(absl::Milliseconds(100));
          continue;
        default:
          return ErrnoError("ttrpc: accept");
      }
    }
    absl::Status status = ServeConnection(UniqueFd(fd));
    if (absl::IsFailedPrecondition(status)) return absl::OkStatus();  // shutting down
  }
}

absl::Status Server::ServeConnection(UniqueFd connection) {
  absl::MutexLock lock(&mu_);
  if (shutting_down_) return absl::FailedPreconditionError("ttrpc: the server is shut down");
  ReapFinished();
  if (connections_.size() >= options_.max_connections) {
    return absl::ResourceExhaustedError(
        absl::StrCat("ttrpc: already serving ", connections_.size(), " connections"));
  }
  auto conn = std::make_shared<ServerConnection>(
      std::move(connection), next_connection_id_++, &registry_, pool_.get(),
      options_.max_requests_per_connection, options_.write_timeout);
  conn->Start();
  connections_.push_back(std::move(conn));
  return absl::OkStatus();
}

void Server::ReapFinished() {
  auto finished = std::partition(connections_.begin(), connections_.end(),
                                 [](const auto& conn) { return !conn->finished(); });
  for (auto it = finished; it != connections_.end(); ++it) (*it)->Join();
  connections_.erase(finished, connections_.end());
}

size_t Server::connection_count() {
  absl::MutexLock lock(&mu_);
  ReapFinished();
  return connections_.size();
}

void Server::Shutdown() {
  absl::MutexLock shutdown_lock(&shutdown_mu_);
  std::vector<std::shared_ptr<ServerConnection>> connections;
  std::vector<std::thread> accept_threads;
  {
    absl::MutexLock lock(&mu_);
    if (shutting_down_ && pool_ == nullptr) return;
    shutting_down_ = true;
    if (wake_fd_) {
      uint64_t one = 1;
      while (write(wake_fd_.get(), &one, sizeof(one)) < 0 && errno == EINTR) {
      }
    }
    // Accept loops end promptly (their poll sees the eventfd) and close their listeners.
    mu_.Await(absl::Condition(
        +[](int* loops) { return *loops == 0; }, &accept_loops_));
    connections.swap(connections_);
    accept_threads.swap(accept_threads_);
  }
  for (std::thread& thread : accept_threads) thread.join();
  for (const auto& conn : connections) conn->Close();
  for (const auto& conn : connections) conn->Join();
  // Runs what is queued (cancelled calls are skipped) and joins the workers; their references to
  // the connections go with them.
  pool_.reset();
  connections.clear();
}

}  // namespace kapsel::ttrpc
