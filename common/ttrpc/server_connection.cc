#include "common/ttrpc/server_connection.h"

#include <sys/socket.h>

#include <utility>

#include "absl/time/clock.h"
#include "common/ttrpc/frame.h"

namespace kapsel::ttrpc {

ServerConnection::ServerConnection(UniqueFd fd, uint64_t id, const HandlerRegistry* registry,
                                   WorkerPool* pool, size_t max_in_flight,
                                   absl::Duration write_timeout)
    : fd_(std::move(fd)),
      id_(id),
      registry_(registry),
      pool_(pool),
      max_in_flight_(max_in_flight == 0 ? 1 : max_in_flight),
      write_timeout_(write_timeout),
      cancelled_(std::make_shared<absl::Notification>()) {}

ServerConnection::~ServerConnection() { Join(); }

void ServerConnection::Start() {
  reader_ = std::thread([this] { ReadLoop(); });
}

void ServerConnection::Close() {
  absl::MutexLock lock(&mu_);
  closing_ = true;
  ::shutdown(fd_.get(), SHUT_RDWR);
  Cancel();
}

void ServerConnection::Join() {
  if (reader_.joinable()) reader_.join();
}

void ServerConnection::Cancel() {
  if (!cancelled_->HasBeenNotified()) cancelled_->Notify();
}

void ServerConnection::ReadLoop() {
  FrameReader reader = FrameReader::ForFd(fd_.get());
  bool clean_end = false;
  while (true) {
    // Any read error (a truncated frame, a failed read) ends the connection: the framing cannot
    // be trusted past it. At a clean end of stream the peer is gone too: calls are cancelled,
    // though handlers already running may still answer (a half-closed peer reads those).
    absl::StatusOr<Frame> frame = reader.Read();
    if (!frame.ok()) {
      clean_end = absl::IsOutOfRange(frame.status());
      break;
    }
    absl::StatusOr<InboundRequest> request = DecodeRequestFrame(*frame, absl::Now());
    if (!request.ok()) {
      Send(frame->header.stream_id, EncodeResponse(request.status(), ""));
      continue;
    }
    {
      absl::MutexLock lock(&mu_);
      mu_.Await(absl::Condition(
          +[](ServerConnection* c) ABSL_EXCLUSIVE_LOCKS_REQUIRED(c->mu_) {
            return c->closing_ || c->in_flight_ < c->max_in_flight_;
          },
          this));
      if (closing_) break;
      ++in_flight_;
    }
    request->context.connection_id = id_;
    request->context.cancelled = cancelled_;
    pool_->Submit([self = shared_from_this(), request = std::move(*request)]() mutable {
      self->Run(std::move(request));
    });
  }
  {
    absl::MutexLock lock(&mu_);
    closing_ = true;
    reader_done_ = true;
    Cancel();
    // The peer sees the connection end once nothing more will be written to it.
    if (!clean_end || in_flight_ == 0) ::shutdown(fd_.get(), SHUT_RDWR);
  }
  finished_.store(true, std::memory_order_release);
}

void ServerConnection::Run(InboundRequest request) {
  // Calls still queued when their connection went away are not started.
  if (!request.context.IsCancelled()) {
    absl::StatusOr<std::string> result = registry_->Invoke(request.payload, request.context);
    Send(request.stream_id, result.ok() ? EncodeResponse(absl::OkStatus(), *result)
                                        : EncodeResponse(result.status(), ""));
    for (std::function<void()>& fn : request.context.after_response) fn();
  }
  absl::MutexLock lock(&mu_);
  if (--in_flight_ == 0 && reader_done_) ::shutdown(fd_.get(), SHUT_RDWR);
}

void ServerConnection::Send(uint32_t stream_id, absl::string_view response_data) {
  absl::MutexLock lock(&write_mu_);
  absl::Status status = WriteFrame(fd_.get(), stream_id, MessageType::kResponse, response_data,
                                   absl::Now() + write_timeout_);
  // The peer is gone, stopped reading, or the socket broke: wake the reader so the connection
  // ends.
  if (!status.ok()) ::shutdown(fd_.get(), SHUT_RDWR);
}

}  // namespace kapsel::ttrpc
