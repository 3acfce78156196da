// Capability names (CAP_*, capabilities(7)) to numbers, and the OCI capability sets to bit masks.
#ifndef KAPSEL_GUEST_AGENT_CONTAINER_CAPABILITIES_H_
#define KAPSEL_GUEST_AGENT_CONTAINER_CAPABILITIES_H_

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/oci/spec.pb.h"
#include "guest-agent/container/plan.h"

namespace kapsel::agent {

// The number of a capability name such as "CAP_NET_ADMIN"; NotFound for an unknown name.
absl::StatusOr<int> CapabilityNumber(absl::string_view name);

// The highest capability this kernel knows (/proc/sys/kernel/cap_last_cap).
absl::StatusOr<int> LastCapability();

// The five sets of process.capabilities as masks. An unknown name is an error naming the set;
// capabilities newer than the kernel (above last_cap) are left out.
absl::StatusOr<CapabilitySets> CapabilitySetsFromSpec(const oci::v1::Capabilities& caps,
                                                      int last_cap);

}  // namespace kapsel::agent

#endif  // KAPSEL_GUEST_AGENT_CONTAINER_CAPABILITIES_H_
