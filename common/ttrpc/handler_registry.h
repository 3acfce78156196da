// Server handlers by (service, method): the raw form works on payload bytes, the typed form on
// protobuf messages.
#ifndef KAPSEL_COMMON_TTRPC_HANDLER_REGISTRY_H_
#define KAPSEL_COMMON_TTRPC_HANDLER_REGISTRY_H_

#include <functional>
#include <memory>
#include <string>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "common/ttrpc/call_context.h"

namespace kapsel::ttrpc {

// Answers one call: the response payload, or the status to send to the client. Runs on a server
// worker thread, possibly concurrently with other calls (of the same method too).
using RawHandler =
    std::function<absl::StatusOr<std::string>(const std::string& payload, const CallContext&)>;

template <typename Request, typename Response>
using TypedHandler =
    std::function<absl::StatusOr<Response>(const Request& request, const CallContext&)>;

// Adapts a typed handler: a payload that does not parse as Request is InvalidArgument.
template <typename Request, typename Response>
RawHandler MakeRawHandler(TypedHandler<Request, Response> handler) {
  return [handler = std::move(handler)](const std::string& payload,
                                        const CallContext& context) -> absl::StatusOr<std::string> {
    Request request;
    if (!request.ParseFromString(payload)) {
      return absl::InvalidArgumentError(absl::StrCat("ttrpc: cannot decode ", context.service, "/",
                                                     context.method, " request as ",
                                                     request.GetTypeName()));
    }
    absl::StatusOr<Response> response = handler(request, context);
    if (!response.ok()) return response.status();
    std::string out;
    if (!response->SerializeToString(&out)) {
      return absl::InternalError(
          absl::StrCat("ttrpc: cannot encode the response ", response->GetTypeName()));
    }
    return out;
  };
}

// Thread-safe: handlers may be registered while calls are dispatched.
class HandlerRegistry {
 public:
  // AlreadyExists if (service, method) has a handler.
  absl::Status Register(absl::string_view service, absl::string_view method, RawHandler handler);

  // Runs the handler for context.service/context.method; Unimplemented when there is none.
  absl::StatusOr<std::string> Invoke(const std::string& payload, const CallContext& context) const;

 private:
  using MethodMap = absl::flat_hash_map<std::string, std::shared_ptr<const RawHandler>>;
  mutable absl::Mutex mu_;
  absl::flat_hash_map<std::string, MethodMap> services_ ABSL_GUARDED_BY(mu_);
};

}  // namespace kapsel::ttrpc

#endif  // KAPSEL_COMMON_TTRPC_HANDLER_REGISTRY_H_
