#include "common/ttrpc/call_context.h"

namespace kapsel::ttrpc {

std::vector<std::string> MetadataValues(const Metadata& metadata, absl::string_view key) {
  std::vector<std::string> values;
  for (const auto& [k, v] : metadata) {
    if (k == key) values.push_back(v);
  }
  return values;
}

std::optional<std::string> FirstMetadataValue(const Metadata& metadata, absl::string_view key) {
  for (const auto& [k, v] : metadata) {
    if (k == key) return v;
  }
  return std::nullopt;
}

bool CallContext::WaitForCancellation(absl::Time until) const {
  if (cancelled == nullptr) {
    absl::Duration left = until - absl::Now();
    if (left > absl::ZeroDuration() && left != absl::InfiniteDuration()) absl::SleepFor(left);
    return false;
  }
  return cancelled->WaitForNotificationWithDeadline(until);
}

}  // namespace kapsel::ttrpc
