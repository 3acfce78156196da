// Puts vCPUs in the state a Linux kernel expects at its entry point: CPUID, MSRs, FPU, LAPIC for
// every vCPU; segments, page tables and registers for the boot vCPU.
#ifndef KAPSEL_VMM_ARCH_X86_64_CPU_SETUP_H_
#define KAPSEL_VMM_ARCH_X86_64_CPU_SETUP_H_

#include <linux/kvm.h>

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "vmm/kvm/kvm.h"
#include "vmm/loader/kernel_loader.h"
#include "vmm/memory/guest_memory.h"

namespace kapsel::vmm::x86 {

// KVM's supported CPUID adjusted for one vCPU of `num_vcpus`: APIC ids, topology counts, the
// hypervisor bit.
std::vector<kvm_cpuid_entry2> CpuidForVcpu(std::vector<kvm_cpuid_entry2> supported, uint32_t id,
                                           uint32_t num_vcpus);

// Announces the TSC-deadline timer (CPUID.1:ECX[24]) in `cpuid`. KVM's in-kernel LAPIC emulates it
// when KVM_CAP_TSC_DEADLINE_TIMER is present, but KVM_GET_SUPPORTED_CPUID never lists it (KVM's
// api.rst, "CPUID bits"). A Linux guest that sees it skips calibrating the LAPIC timer against the
// PIT, a fixed 100 ms wait at boot.
void AnnounceTscDeadlineTimer(std::vector<kvm_cpuid_entry2>& cpuid);

// CPUID, MSRs, FPU and LAPIC (LINT0 ExtINT, LINT1 NMI) for any vCPU.
absl::Status ConfigureVcpu(Vcpu& vcpu, const std::vector<kvm_cpuid_entry2>& supported_cpuid,
                           uint32_t num_vcpus);

// Writes the GDT and identity page tables to guest memory and points the boot vCPU at the kernel's
// entry with the registers its boot protocol asks for.
absl::Status ConfigureBootVcpu(Vcpu& vcpu, const GuestMemory& memory, const LoadedKernel& kernel);

}  // namespace kapsel::vmm::x86

#endif  // KAPSEL_VMM_ARCH_X86_64_CPU_SETUP_H_
