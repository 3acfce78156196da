#include "common/ttrpc/request_codec.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "common/ttrpc/proto/ttrpc.pb.h"

namespace kapsel::ttrpc {
namespace {

// How much of an error message too long for a response is kept.
constexpr size_t kTruncatedMessageSize = 4096;

}  // namespace

google::rpc::Status StatusToProto(const absl::Status& status) {
  google::rpc::Status proto;
  proto.set_code(static_cast<int32_t>(status.code()));
  proto.set_message(std::string(status.message()));
  return proto;
}

absl::Status StatusFromProto(const google::rpc::Status& status) {
  int32_t code = status.code();
  if (code == 0) return absl::OkStatus();
  if (code < 0 || code > static_cast<int32_t>(absl::StatusCode::kUnauthenticated)) {
    return absl::UnknownError(absl::StrCat("code ", code, ": ", status.message()));
  }
  return absl::Status(static_cast<absl::StatusCode>(code), status.message());
}

absl::StatusOr<InboundRequest> DecodeRequestFrame(const Frame& frame, absl::Time now) {
  const FrameHeader& header = frame.header;
  if (header.type != static_cast<uint8_t>(MessageType::kRequest)) {
    return absl::InvalidArgumentError(
        absl::StrCat("ttrpc: expected a request, got message type ", header.type));
  }
  if (header.stream_id % 2 != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("ttrpc: client stream ids must be odd, got ", header.stream_id));
  }
  if (frame.oversized) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "ttrpc: message of ", header.length, " bytes exceeds the limit of ", kMaxMessageSize));
  }
  ::ttrpc::Request request;
  if (!request.ParseFromString(frame.data)) {
    return absl::InvalidArgumentError("ttrpc: cannot decode the request");
  }
  InboundRequest inbound;
  inbound.stream_id = header.stream_id;
  inbound.payload = std::move(*request.mutable_payload());
  CallContext& context = inbound.context;
  context.service = std::move(*request.mutable_service());
  context.method = std::move(*request.mutable_method());
  context.metadata.reserve(static_cast<size_t>(request.metadata_size()));
  for (::ttrpc::KeyValue& kv : *request.mutable_metadata()) {
    context.metadata.emplace_back(std::move(*kv.mutable_key()), std::move(*kv.mutable_value()));
  }
  if (request.timeout_nano() > 0) {
    context.deadline = now + absl::Nanoseconds(request.timeout_nano());
  }
  return inbound;
}

absl::StatusOr<std::string> EncodeRequest(absl::string_view service, absl::string_view method,
                                          absl::string_view payload, absl::Duration timeout,
                                          const Metadata& metadata) {
  ::ttrpc::Request request;
  request.set_service(std::string(service));
  request.set_method(std::string(method));
  request.set_payload(std::string(payload));
  if (timeout != absl::InfiniteDuration() && timeout > absl::ZeroDuration()) {
    request.set_timeout_nano(absl::ToInt64Nanoseconds(timeout));
  }
  for (const auto& [key, value] : metadata) {
    ::ttrpc::KeyValue* kv = request.add_metadata();
    kv->set_key(key);
    kv->set_value(value);
  }
  size_t size = request.ByteSizeLong();
  if (size > kMaxMessageSize) {
    return absl::ResourceExhaustedError(absl::StrCat("ttrpc: request ", service, "/", method,
                                                     " of ", size, " bytes exceeds the limit of ",
                                                     kMaxMessageSize));
  }
  return request.SerializeAsString();
}

std::string EncodeResponse(const absl::Status& status, absl::string_view payload) {
  ::ttrpc::Response response;
  *response.mutable_status() = StatusToProto(status);
  if (status.ok()) response.set_payload(std::string(payload));
  if (response.ByteSizeLong() > kMaxMessageSize) {
    if (status.ok()) {
      return EncodeResponse(absl::ResourceExhaustedError(
                                absl::StrCat("ttrpc: response of ", payload.size(),
                                             " bytes exceeds the limit of ", kMaxMessageSize)),
                            "");
    }
    // Only a huge error message gets here: keep its beginning.
    response.mutable_status()->mutable_message()->resize(kTruncatedMessageSize);
  }
  return response.SerializeAsString();
}

absl::StatusOr<std::string> DecodeResponse(absl::string_view data) {
  ::ttrpc::Response response;
  if (!response.ParseFromArray(data.data(), static_cast<int>(data.size()))) {
    return absl::InternalError("ttrpc: cannot decode the response");
  }
  absl::Status status = StatusFromProto(response.status());
  if (!status.ok()) return status;
  return std::move(*response.mutable_payload());
}

}  // namespace kapsel::ttrpc
