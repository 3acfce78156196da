// Turns a bundle's OCI spec (written for the host) into the spec the guest agent runs: host paths
// are shared into the VM and renamed, namespace paths are mapped into the VM or refused.
#ifndef KAPSEL_SHIM_GUEST_SPEC_H_
#define KAPSEL_SHIM_GUEST_SPEC_H_

#include <cstdint>
#include <optional>
#include <set>
#include <string>

#include "absl/status/status.h"
#include "common/oci/spec.pb.h"

namespace kapsel::shim {

// The sandbox's containers whose namespaces a new container may join: a pod's containers join
// the namespaces of its sandbox (pause) container, named by the pid containerd got for it.
struct SandboxNamespaces {
  // Pids (as reported to containerd: guest pids) of the containers' inits that still run.
  std::set<uint32_t> container_inits;
  // The sandbox container's init, once it runs (a pod's first container).
  std::optional<uint32_t> sandbox_init;
  // The pod's network was moved into the VM (PodNetwork): its interfaces are in the VM's own
  // network namespace, which the pod's containers then share.
  bool network_in_vm = false;
};

// Maps the spec's namespace paths into the VM:
// - /proc/<pid>/ns/<name> of a container in `sandbox`: kept (the same path in the guest).
// - Any other network namespace (a CNI netns on the host): with `network_in_vm`, the VM's own
//   (the namespace is dropped from the spec); otherwise the sandbox container's, so a pod's
//   containers share one network, or a new one of the VM's for the sandbox container itself.
// - A cgroup namespace path: dropped (a new one in the VM).
// - Anything else (a host process's pid, ipc, uts, mount or user namespace): an error.
absl::Status MapNamespacesIntoVm(const SandboxNamespaces& sandbox, oci::v1::Spec* spec);

// `host_dir` is the container's directory in the shared folder, `guest_dir` the same directory
// as the guest sees it.
// - Bind mounts of host paths are bind-mounted to <host_dir>/mounts/<n> and point at
//   <guest_dir>/mounts/<n>.
// - Namespace paths as MapNamespacesIntoVm; OCI hooks (host programs) are errors.
absl::Status PrepareGuestSpec(const std::string& host_dir, const std::string& guest_dir,
                              const SandboxNamespaces& sandbox, oci::v1::Spec* spec);

}  // namespace kapsel::shim

#endif  // KAPSEL_SHIM_GUEST_SPEC_H_
