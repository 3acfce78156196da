// The pod's network inside the VM: the shim's CNI result (CreateSandboxRequest.interfaces/routes)
// applied to the VM's virtio-net devices with plain ioctls (IPv4 only; no netlink library, to keep
// the static agent small).
#ifndef KAPSEL_GUEST_AGENT_NETWORK_H_
#define KAPSEL_GUEST_AGENT_NETWORK_H_

#include "absl/status/status.h"
#include "common/agent/agent.pb.h"
#include "guest-agent/lite_protos.h"

namespace kapsel::agent {

static_assert(kIsLiteMessage<v1::NetworkInterface>,
              "the guest uses the lite copy of common/agent/agent.proto");

using NetworkInterfaces = google::protobuf::RepeatedPtrField<v1::NetworkInterface>;
using Routes = google::protobuf::RepeatedPtrField<v1::Route>;

// Checks every field without touching the system: names (1..IFNAMSIZ-1 bytes, no '/', ':' or
// space; alias labels "NAME:N" of additional addresses must fit too), unique unicast MACs, MTUs
// (0 or 68..65535), unicast IPv4 addresses with a prefix of 1..32, route destinations as CIDRs
// without host bits, gateways, and route devices naming one of `interfaces`. InvalidArgument names
// the bad field and value.
absl::Status ValidateNetwork(const NetworkInterfaces& interfaces, const Routes& routes);

// Configures the calling process's network namespace: validates (above), finds each interface's
// link by MAC (NotFound listing the links seen; nothing is changed before every MAC is found),
// brings `lo` up, then per interface: down, renamed (through a temporary name when it differs, so
// two devices can swap names), MTU (when nonzero), the first address on NAME and the next ones on
// alias labels NAME:1, NAME:2..., up. Then the routes: on-link ones (no gateway) first, so a
// gateway reached through one (Calico's 169.254.1.1) is routable when its route is added; a route
// the kernel already made for an address's subnet is skipped. Errors name the interface ("interface
// eth0: ...") or the route ("route 0.0.0.0/0 via 10.0.0.1 dev eth0: ...") and the failed ioctl.
absl::Status ConfigureNetwork(const NetworkInterfaces& interfaces, const Routes& routes);

}  // namespace kapsel::agent

#endif  // KAPSEL_GUEST_AGENT_NETWORK_H_
