// The agent's listening sockets: "unix:PATH" (tests, and any host without vsock) or "vsock:PORT"
// (in the VM: the host reaches it through the VMM's hybrid vsock).
#ifndef KAPSEL_GUEST_AGENT_LISTENER_H_
#define KAPSEL_GUEST_AGENT_LISTENER_H_

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/unique_fd.h"

namespace kapsel::agent {

inline constexpr uint32_t kAgentVsockPort = 1024;
inline constexpr uint32_t kStdioVsockPort = 1025;

// A listening stream socket for `address`; errors name the address.
absl::StatusOr<UniqueFd> Listen(absl::string_view address);

// The stdio listener's address for an API address: vsock:1024 -> vsock:1025, unix:P ->
// unix:P.stdio.
absl::StatusOr<std::string> StdioAddressFor(absl::string_view api_address);

}  // namespace kapsel::agent

#endif  // KAPSEL_GUEST_AGENT_LISTENER_H_
