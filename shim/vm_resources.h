// How big a sandbox's VM is: the config's [vm] vcpus and memory_mib, resized per pod through the
// annotations of the container that boots the VM (the pause container under CRI, with the
// runtime's `pod_annotations` letting them through; any container with `ctr run --annotation`).
//
//   io.kapsel.vm.vcpus = "N"                  the VM's vCPUs, 1..[vm] max_vcpus
//   io.kapsel.vm.memory_mib = "M"             the VM's memory in MiB, 64..[vm] max_memory_mib
//
// Kata's static sandbox sizing, from what containerd >= 1.7's CRI plugin puts on the pause
// container (the sums of the pod's container limits):
//
//   io.kubernetes.cri.sandbox-memory = "B"    bytes: memory_mib + ceil(B / MiB)
//   io.kubernetes.cri.sandbox-cpu-quota = "Q" with -period = "P": vcpus + ceil(Q / P)
//
// A container that is not a CRI pod's sandbox (`ctr run`, `nerdctl run`: it is alone in its VM)
// adds its own limits the same way, as Kata does: linux.resources.memory.limit to memory_mib and
// cpu.quota / cpu.period to vcpus, so `ctr run --memory-limit` gets a VM that can hold it.
//
// These sums are clamped to the maxima; an io.kapsel.vm.* annotation wins over them. An
// unconstrained pod or container (no annotation or limit, memory < 0, quota <= 0 or period 0)
// adds nothing.
#ifndef KAPSEL_SHIM_VM_RESOURCES_H_
#define KAPSEL_SHIM_VM_RESOURCES_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "common/oci/spec.pb.h"
#include "google/protobuf/map.h"
#include "shim/config.h"

namespace kapsel::shim {

inline constexpr char kVcpusAnnotation[] = "io.kapsel.vm.vcpus";
inline constexpr char kMemoryMibAnnotation[] = "io.kapsel.vm.memory_mib";
inline constexpr char kCriSandboxMemoryAnnotation[] = "io.kubernetes.cri.sandbox-memory";
inline constexpr char kCriSandboxCpuQuotaAnnotation[] = "io.kubernetes.cri.sandbox-cpu-quota";
inline constexpr char kCriSandboxCpuPeriodAnnotation[] = "io.kubernetes.cri.sandbox-cpu-period";
inline constexpr char kCriContainerTypeAnnotation[] = "io.kubernetes.cri.container-type";

struct VmResources {
  uint32_t vcpus = 0;
  uint32_t memory_mib = 0;
  // Where each value came from, for the log: "config", "annotation io.kapsel.vm.vcpus", ...
  std::string vcpus_source;
  std::string memory_source;

  // "2 vCPUs (annotation io.kapsel.vm.vcpus), 384 MiB (config)"
  std::string ToString() const;
};

// The limits a container booting its VM brings itself: those of its spec unless it is a CRI
// pod's sandbox (annotation io.kubernetes.cri.container-type = "sandbox"), whose pod's sums come
// in the annotations instead. Zero: none.
struct ContainerLimits {
  int64_t memory_bytes = 0;
  int64_t cpu_quota = 0;
  uint64_t cpu_period = 0;
};
ContainerLimits OwnLimits(const oci::v1::Spec& spec);

// The VM size for a sandbox booted by a container with `annotations` and `limits`.
// InvalidArgument, naming the annotation and its value, for a malformed or out-of-range
// annotation and for an unknown io.kapsel.vm.* key (a typo would otherwise be ignored silently).
absl::StatusOr<VmResources> SizeVm(
    const Config& config, const google::protobuf::Map<std::string, std::string>& annotations,
    const ContainerLimits& limits = {});

}  // namespace kapsel::shim

#endif  // KAPSEL_SHIM_VM_RESOURCES_H_
