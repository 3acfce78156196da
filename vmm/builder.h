// Wires a bootable microVM from a VmConfig (Firecracker's builder, in small): the machine, the
// virtio devices, the kernel and initrd, the boot information and the boot vCPU.
#ifndef KAPSEL_VMM_BUILDER_H_
#define KAPSEL_VMM_BUILDER_H_

#include <memory>

#include "absl/status/statusor.h"
#include "vmm/config.pb.h"
#include "vmm/vmm.h"

namespace kapsel::vmm {

// `config` must have passed Validate(). Errors caused by the configuration (a missing or bad
// kernel, an unreadable disk) are usage errors (common/status.h) and name the flag.
absl::StatusOr<std::unique_ptr<Vmm>> BuildVmm(const v1::VmConfig& config);

}  // namespace kapsel::vmm

#endif  // KAPSEL_VMM_BUILDER_H_
