// linux.sysctl: only sysctls that belong to a namespace the container owns are accepted.
#ifndef KAPSEL_GUEST_AGENT_CONTAINER_SYSCTL_H_
#define KAPSEL_GUEST_AGENT_CONTAINER_SYSCTL_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "google/protobuf/map.h"
#include "guest-agent/container/plan.h"

namespace kapsel::agent {

// Checks each name (dotted, e.g. net.ipv4.ip_forward) against the namespaces in namespace_flags
// (net.* needs a network namespace; kernel.shm*, kernel.msg*, kernel.sem and fs.mqueue.* an
// IPC namespace) and returns the /proc/sys writes, sorted by name. kernel.hostname and
// kernel.domainname are refused: the spec's hostname/domainname fields set them.
absl::StatusOr<std::vector<SysctlStep>> SysctlSteps(
    const google::protobuf::Map<std::string, std::string>& sysctls, uint64_t namespace_flags);

}  // namespace kapsel::agent

#endif  // KAPSEL_GUEST_AGENT_CONTAINER_SYSCTL_H_
