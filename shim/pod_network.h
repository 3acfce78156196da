// A pod's network, moved into its VM (Kata's "tcfilter" model). The CNI plugins configured a
// network namespace on the host for the pod (typically a veth `eth0` with an IPv4 address and a
// default route). For each such interface the shim creates a tap in the same namespace and
// redirects every frame both ways with tc (an ingress qdisc, a u32 match-all filter and a mirred
// egress redirect on each side). kapsel-vmm turns the tap into a virtio-net device with the
// interface's MAC, and the guest agent gives it the interface's name, MTU, addresses and routes.
// The pod's stack on the host never sees a frame: the VM owns the pod's addresses.
#ifndef KAPSEL_SHIM_POD_NETWORK_H_
#define KAPSEL_SHIM_POD_NETWORK_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/agent/agent.pb.h"
#include "common/unique_fd.h"

namespace kapsel::shim {

struct PodInterface {
  std::string name;  // in the pod's namespace, e.g. eth0
  int ifindex = 0;
  std::string mac;  // "0a:58:0a:58:00:05"
  uint32_t mtu = 0;
  std::vector<std::string> addresses;  // IPv4 CIDRs
  std::string tap_name;
  int tap_ifindex = 0;
  UniqueFd tap;             // IFF_TAP | IFF_NO_PI | IFF_VNET_HDR, close-on-exec
  bool redirected = false;  // the ingress qdisc on the pod's interface is ours (Detach removes it)
};

// Whether `netns_path` is the calling process's own network namespace (false when it cannot be
// read: Attach then reports that).
bool IsOwnNetworkNamespace(const std::string& netns_path);

class PodNetwork {
 public:
  // Enters the network namespace at `netns_path` (a thread of this process does, the rest of
  // the process stays where it is), and for every interface other than loopback that has an
  // IPv4 address, creates a tap and the redirects. IPv6 addresses and routes are left out (the
  // guest kernel is IPv4 only) with a log line. A namespace with no such interface gives an
  // empty PodNetwork. On error nothing is left behind.
  static absl::StatusOr<std::unique_ptr<PodNetwork>> Attach(const std::string& netns_path);

  PodNetwork(const PodNetwork&) = delete;
  PodNetwork& operator=(const PodNetwork&) = delete;
  // Detach(), then closes the taps (a tap is gone once kapsel-vmm's copy is closed too).
  ~PodNetwork();

  bool empty() const { return interfaces_.empty(); }
  const std::vector<PodInterface>& interfaces() const { return interfaces_; }
  const std::vector<agent::v1::Route>& routes() const { return routes_; }

  // kapsel-vmm's `--net` values, one per interface: "fd=N,mac=M,mtu=U" (the tap fds must be
  // inherited by kapsel-vmm: tap_fds()).
  std::vector<std::string> VmmNetArgs() const;
  std::vector<int> tap_fds() const;
  // Fills the interfaces and routes of the agent's CreateSandbox.
  void AddTo(agent::v1::CreateSandboxRequest* request) const;

  // Removes the redirects from the pod's interfaces (if the namespace still exists). Idempotent.
  void Detach();

 private:
  explicit PodNetwork(std::string netns_path) : netns_path_(std::move(netns_path)) {}

  const std::string netns_path_;
  std::vector<PodInterface> interfaces_;
  std::vector<agent::v1::Route> routes_;
  bool detached_ = false;
};

}  // namespace kapsel::shim

#endif  // KAPSEL_SHIM_POD_NETWORK_H_
