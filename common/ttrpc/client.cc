#include "common/ttrpc/client.h"

#include <sys/socket.h>

#include <utility>

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "common/ttrpc/address.h"
#include "common/ttrpc/frame.h"
#include "common/ttrpc/request_codec.h"

namespace kapsel::ttrpc {

Client::Client(UniqueFd connection) : fd_(std::move(connection)) {
  reader_ = std::thread([this] { ReadLoop(); });
}

absl::StatusOr<std::unique_ptr<Client>> Client::Dial(absl::string_view address) {
  ASSIGN_OR_RETURN(UniqueFd fd, DialUnix(address));
  return std::make_unique<Client>(std::move(fd));
}

Client::~Client() { Close(); }

void Client::Close() {
  absl::MutexLock close_lock(&close_mu_);
  {
    absl::MutexLock lock(&mu_);
    if (closed_status_.ok()) FailAll(absl::UnavailableError("ttrpc: the client was closed"));
  }
  ::shutdown(fd_.get(), SHUT_RDWR);
  if (reader_.joinable()) reader_.join();
}

bool Client::closed() {
  absl::MutexLock lock(&mu_);
  return !closed_status_.ok();
}

void Client::FailAll(const absl::Status& status) {
  closed_status_ = status;
  for (auto& [id, call] : pending_) {
    call->result = status;
    call->done = true;
  }
  pending_.clear();
}

uint32_t Client::NextStreamId() {
  // Odd ids from 1, +2 per call; after wrapping around, ids still in use are skipped.
  while (true) {
    uint32_t id = next_stream_id_;
    next_stream_id_ += 2;
    if (!pending_.contains(id)) return id;
  }
}

void Client::ReadLoop() {
  FrameReader reader = FrameReader::ForFd(fd_.get());
  absl::Status end;
  while (true) {
    absl::StatusOr<Frame> frame = reader.Read();
    if (!frame.ok()) {
      end = absl::IsOutOfRange(frame.status())
                ? absl::UnavailableError("ttrpc: the connection was closed by the server")
                : absl::UnavailableError(
                      absl::StrCat("ttrpc: connection lost: ", frame.status().message()));
      break;
    }
    if (frame->header.type != static_cast<uint8_t>(MessageType::kResponse)) continue;
    absl::StatusOr<std::string> result = frame->oversized
                                             ? absl::ResourceExhaustedError(absl::StrCat(
                                                   "ttrpc: response of ", frame->header.length,
                                                   " bytes exceeds the limit of ", kMaxMessageSize))
                                             : DecodeResponse(frame->data);
    absl::MutexLock lock(&mu_);
    auto it = pending_.find(frame->header.stream_id);
    if (it == pending_.end()) continue;  // the caller gave up (timeout); drop the answer
    it->second->result = std::move(result);
    it->second->done = true;
    pending_.erase(it);
  }
  absl::MutexLock lock(&mu_);
  if (closed_status_.ok()) FailAll(end);
}

absl::StatusOr<std::string> Client::CallRaw(absl::string_view service, absl::string_view method,
                                            absl::string_view payload, const CallOptions& options) {
  if (options.timeout <= absl::ZeroDuration()) {
    return absl::DeadlineExceededError(
        absl::StrCat("ttrpc: ", service, "/", method, " called with no time left"));
  }
  const absl::Time deadline = options.timeout == absl::InfiniteDuration()
                                  ? absl::InfiniteFuture()
                                  : absl::Now() + options.timeout;
  ASSIGN_OR_RETURN(std::string data,
                   EncodeRequest(service, method, payload, options.timeout, options.metadata));
  PendingCall call;
  uint32_t stream_id;
  {
    absl::MutexLock lock(&mu_);
    if (!closed_status_.ok()) return closed_status_;
    stream_id = NextStreamId();
    pending_[stream_id] = &call;
  }
  absl::Status sent;
  size_t written = 0;
  {
    absl::MutexLock lock(&write_mu_);
    sent = WriteFrame(fd_.get(), stream_id, MessageType::kRequest, data, deadline, &written);
  }
  absl::MutexLock lock(&mu_);
  if (!sent.ok()) {
    if (!call.done) pending_.erase(stream_id);
    // A partly written frame breaks the framing: the connection is over.
    if (written > 0) ::shutdown(fd_.get(), SHUT_RDWR);
    return absl::Status(
        absl::IsDeadlineExceeded(sent) ? absl::StatusCode::kDeadlineExceeded
                                       : absl::StatusCode::kUnavailable,
        absl::StrCat("ttrpc: cannot send ", service, "/", method, ": ", sent.message()));
  }
  mu_.AwaitWithDeadline(absl::Condition(&call.done), deadline);
  if (!call.done) {
    pending_.erase(stream_id);
    return absl::DeadlineExceededError(absl::StrCat("ttrpc: ", service, "/", method,
                                                    " got no answer within ",
                                                    absl::FormatDuration(options.timeout)));
  }
  return std::move(call.result);
}

absl::Status Client::Call(absl::string_view service, absl::string_view method,
                          const google::protobuf::MessageLite& request,
                          google::protobuf::MessageLite* response, const CallOptions& options) {
  std::string payload;
  if (!request.SerializeToString(&payload)) {
    return absl::InvalidArgumentError(
        absl::StrCat("ttrpc: cannot encode the ", request.GetTypeName(), " request"));
  }
  ASSIGN_OR_RETURN(std::string answer, CallRaw(service, method, payload, options));
  if (response != nullptr && !response->ParseFromString(answer)) {
    return absl::InternalError(absl::StrCat("ttrpc: cannot decode the ", service, "/", method,
                                            " response as ", response->GetTypeName()));
  }
  return absl::OkStatus();
}

}  // namespace kapsel::ttrpc
