// The protobuf side of ttrpc: Request and Response messages to and from frame data, and
// absl::Status to and from google.rpc.Status.
#ifndef KAPSEL_COMMON_TTRPC_REQUEST_CODEC_H_
#define KAPSEL_COMMON_TTRPC_REQUEST_CODEC_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "common/ttrpc/call_context.h"
#include "common/ttrpc/frame.h"
#include "common/ttrpc/proto/status.pb.h"

namespace kapsel::ttrpc {

google::rpc::Status StatusToProto(const absl::Status& status);
// Codes outside gRPC's range become Unknown.
absl::Status StatusFromProto(const google::rpc::Status& status);

// A request frame, decoded and ready to dispatch.
struct InboundRequest {
  uint32_t stream_id = 0;
  std::string payload;
  CallContext context;  // service, method, metadata and deadline set; the rest is the server's
};

// Decodes a frame a server received at `now`. An error is the status to answer with on the
// frame's stream id: InvalidArgument for a wrong type, an even stream id or undecodable data,
// ResourceExhausted for an oversized frame.
absl::StatusOr<InboundRequest> DecodeRequestFrame(const Frame& frame, absl::Time now);

// Request data for a call; ResourceExhausted when it would exceed kMaxMessageSize. `timeout` is
// sent as timeout_nano (0 for InfiniteDuration).
absl::StatusOr<std::string> EncodeRequest(absl::string_view service, absl::string_view method,
                                          absl::string_view payload, absl::Duration timeout,
                                          const Metadata& metadata);

// Response data: the status, and the payload when the status is OK. A response that would exceed
// kMaxMessageSize is replaced by a ResourceExhausted one.
std::string EncodeResponse(const absl::Status& status, absl::string_view payload);

// The outcome of a call from its response data: the payload, or the status the server sent.
absl::StatusOr<std::string> DecodeResponse(absl::string_view data);

}  // namespace kapsel::ttrpc

#endif  // KAPSEL_COMMON_TTRPC_REQUEST_CODEC_H_
