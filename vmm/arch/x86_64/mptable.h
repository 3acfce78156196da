// The Intel MultiProcessor Specification table: how a guest without ACPI finds its vCPUs, the
// IOAPIC and the interrupt routing. Written at the start of the EBDA, where Linux searches for it.
#ifndef KAPSEL_VMM_ARCH_X86_64_MPTABLE_H_
#define KAPSEL_VMM_ARCH_X86_64_MPTABLE_H_

#include <cstdint>

#include "absl/status/status.h"
#include "vmm/memory/guest_memory.h"

namespace kapsel::vmm::x86 {

// The IOAPIC's APIC id: just past the vCPUs' ids.
inline uint8_t IoapicId(uint32_t num_vcpus) { return static_cast<uint8_t>(num_vcpus); }

// num_vcpus must be 1..254. ISA IRQs 0..23 are routed edge-triggered to the same IOAPIC pins.
absl::Status WriteMpTable(const GuestMemory& memory, uint32_t num_vcpus);

}  // namespace kapsel::vmm::x86

#endif  // KAPSEL_VMM_ARCH_X86_64_MPTABLE_H_
