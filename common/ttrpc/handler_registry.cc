#include "common/ttrpc/handler_registry.h"

namespace kapsel::ttrpc {

absl::Status HandlerRegistry::Register(absl::string_view service, absl::string_view method,
                                       RawHandler handler) {
  if (handler == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("ttrpc: null handler for ", service, "/", method));
  }
  absl::MutexLock lock(&mu_);
  auto [it, inserted] = services_[service].try_emplace(
      method, std::make_shared<const RawHandler>(std::move(handler)));
  if (!inserted) {
    return absl::AlreadyExistsError(
        absl::StrCat("ttrpc: ", service, "/", method, " is already registered"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> HandlerRegistry::Invoke(const std::string& payload,
                                                    const CallContext& context) const {
  std::shared_ptr<const RawHandler> handler;
  {
    absl::ReaderMutexLock lock(&mu_);
    auto service = services_.find(context.service);
    if (service == services_.end()) {
      return absl::UnimplementedError(absl::StrCat("ttrpc: unknown service ", context.service));
    }
    auto method = service->second.find(context.method);
    if (method == service->second.end()) {
      return absl::UnimplementedError(
          absl::StrCat("ttrpc: unknown method ", context.method, " of service ", context.service));
    }
    handler = method->second;
  }
  return (*handler)(payload, context);
}

}  // namespace kapsel::ttrpc
