// What a server handler knows about the call it serves: metadata, deadline, connection, and
// whether the call was cancelled (its connection closed or the server shut down).
#ifndef KAPSEL_COMMON_TTRPC_CALL_CONTEXT_H_
#define KAPSEL_COMMON_TTRPC_CALL_CONTEXT_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/string_view.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"

namespace kapsel::ttrpc {

// Request metadata: key/value pairs in wire order; a key may repeat.
using Metadata = std::vector<std::pair<std::string, std::string>>;

// The key under which containerd sends the namespace of a call.
inline constexpr absl::string_view kNamespaceMetadataKey = "containerd-namespace-ttrpc";

// Every value of `key`, in order.
std::vector<std::string> MetadataValues(const Metadata& metadata, absl::string_view key);
// The first value of `key`, if any.
std::optional<std::string> FirstMetadataValue(const Metadata& metadata, absl::string_view key);

struct CallContext {
  std::string service;
  std::string method;
  Metadata metadata;
  // When the client stops waiting: arrival + timeout_nano, or InfiniteFuture without a timeout.
  absl::Time deadline = absl::InfiniteFuture();
  // Identifies the connection within its server (1, 2, ...).
  uint64_t connection_id = 0;
  // Notified when the connection closes or the server shuts down; may be null (no cancellation).
  std::shared_ptr<const absl::Notification> cancelled;

  bool IsCancelled() const { return cancelled != nullptr && cancelled->HasBeenNotified(); }
  // Blocks until cancelled or `until`, whichever is first; true when cancelled. Handlers that wait
  // for something slow should wait through this so server shutdown is prompt.
  bool WaitForCancellation(absl::Time until) const;

  // Leaves `fn` for after the response: the server runs it on the handler's thread once the
  // response was written (or writing it failed), in the order given. For an effect that must not
  // overtake the answer, such as shutting the server down.
  void RunAfterResponse(std::function<void()> fn) const { after_response.push_back(std::move(fn)); }
  // What RunAfterResponse left; the server runs it (mutable: handlers see the context as const).
  mutable std::vector<std::function<void()>> after_response;
};

}  // namespace kapsel::ttrpc

#endif  // KAPSEL_COMMON_TTRPC_CALL_CONTEXT_H_
