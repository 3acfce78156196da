#include "vmm/arch/x86_64/cpu_setup.h"

#include <cstring>

#include "common/status.h"
#include "vmm/arch/x86_64/layout.h"

namespace kapsel::vmm::x86 {
namespace {

// Control register and EFER bits.
constexpr uint64_t kCr0Pe = 1ULL << 0;
constexpr uint64_t kCr0Et = 1ULL << 4;
constexpr uint64_t kCr0Pg = 1ULL << 31;
constexpr uint64_t kCr4Pae = 1ULL << 5;
constexpr uint64_t kEferLme = 1ULL << 8;
constexpr uint64_t kEferLma = 1ULL << 10;

// MSRs.
constexpr uint32_t kMsrIa32SysenterCs = 0x174;
constexpr uint32_t kMsrIa32SysenterEsp = 0x175;
constexpr uint32_t kMsrIa32SysenterEip = 0x176;
constexpr uint32_t kMsrStar = 0xc0000081;
constexpr uint32_t kMsrLstar = 0xc0000082;
constexpr uint32_t kMsrCstar = 0xc0000083;
constexpr uint32_t kMsrSyscallMask = 0xc0000084;
constexpr uint32_t kMsrKernelGsBase = 0xc0000102;
constexpr uint32_t kMsrIa32Tsc = 0x10;
constexpr uint32_t kMsrIa32MiscEnable = 0x1a0;
constexpr uint32_t kMsrMtrrDefType = 0x2ff;
constexpr uint64_t kMiscEnableFastString = 1;
constexpr uint64_t kMtrrEnableWriteBack = (1 << 11) | 6;

// LAPIC registers (offsets into kvm_lapic_state.regs) and delivery modes.
constexpr size_t kApicLvtLint0 = 0x350;
constexpr size_t kApicLvtLint1 = 0x360;
constexpr uint32_t kApicModeExtInt = 0x7;
constexpr uint32_t kApicModeNmi = 0x4;

// GDT: null, 64-bit code, 32-bit code, data, TSS.
constexpr uint16_t kCode64Selector = 1 << 3;
constexpr uint16_t kCode32Selector = 2 << 3;
constexpr uint16_t kDataSelector = 3 << 3;
constexpr uint16_t kTssSelector = 4 << 3;

uint64_t GdtEntry(uint16_t flags, uint32_t base, uint32_t limit) {
  return ((uint64_t{base} & 0xff000000) << 32) | ((uint64_t{flags} & 0xf0ff) << 40) |
         ((uint64_t{limit} & 0x000f0000) << 32) | ((uint64_t{base} & 0x00ffffff) << 16) |
         (uint64_t{limit} & 0x0000ffff);
}

kvm_segment SegmentFromGdt(uint64_t entry, uint16_t selector) {
  kvm_segment s{};
  s.base = ((entry >> 16) & 0xffffff) | (((entry >> 56) & 0xff) << 24);
  uint32_t limit = static_cast<uint32_t>((entry & 0xffff) | (((entry >> 48) & 0xf) << 16));
  s.g = (entry >> 55) & 1;
  s.limit = s.g ? (limit << 12) | 0xfff : limit;
  s.selector = selector;
  s.type = (entry >> 40) & 0xf;
  s.present = (entry >> 47) & 1;
  s.dpl = (entry >> 45) & 3;
  s.db = (entry >> 54) & 1;
  s.s = (entry >> 44) & 1;
  s.l = (entry >> 53) & 1;
  s.avl = (entry >> 52) & 1;
  s.unusable = s.present ? 0 : 1;
  return s;
}

absl::Status WritePageTables(const GuestMemory& memory) {
  constexpr uint64_t kPresentWritable = 0x3;
  constexpr uint64_t kHugePage = 0x80;
  constexpr uint64_t kDirectories = kIdentityMappedBytes >> 30;
  RETURN_IF_ERROR(memory.WriteObj<uint64_t>(kPml4Address, kPdptAddress | kPresentWritable));
  for (uint64_t d = 0; d < kDirectories; ++d) {
    const uint64_t pd = kPdAddress + d * 4096;
    RETURN_IF_ERROR(memory.WriteObj<uint64_t>(kPdptAddress + d * 8, pd | kPresentWritable));
    for (uint64_t i = 0; i < 512; ++i) {
      const uint64_t address = ((d << 9) + i) << 21;
      RETURN_IF_ERROR(
          memory.WriteObj<uint64_t>(pd + i * 8, address | kPresentWritable | kHugePage));
    }
  }
  return absl::OkStatus();
}

}  // namespace

std::vector<kvm_cpuid_entry2> CpuidForVcpu(std::vector<kvm_cpuid_entry2> entries, uint32_t id,
                                           uint32_t num_vcpus) {
  for (kvm_cpuid_entry2& e : entries) {
    switch (e.function) {
      case 1:
        // EBX: initial APIC id [31:24], logical processor count [23:16], CLFLUSH size [15:8].
        e.ebx = (id << 24) | (num_vcpus << 16) | (8 << 8);
        e.ecx |= 1u << 31;                     // running under a hypervisor
        if (num_vcpus > 1) e.edx |= 1u << 28;  // HTT: the count above is valid
        break;
      case 0xb:
      case 0x1f:
        // Extended topology: every vCPU is a core of one package; x2APIC id = vCPU id.
        e.edx = id;
        if (e.index == 0) {
          e.eax = 0;
          e.ebx = 1;
          e.ecx = (1 << 8) | e.index;  // SMT level with one thread
        } else if (e.index == 1) {
          uint32_t shift = 0;
          while ((1u << shift) < num_vcpus) ++shift;
          e.eax = shift;
          e.ebx = num_vcpus;
          e.ecx = (2 << 8) | e.index;  // core level
        } else {
          e.eax = 0;
          e.ebx = 0;
          e.ecx = e.index;
        }
        break;
      default:
        break;
    }
  }
  return entries;
}

void AnnounceTscDeadlineTimer(std::vector<kvm_cpuid_entry2>& cpuid) {
  constexpr uint32_t kTscDeadlineTimer = 1u << 24;
  for (kvm_cpuid_entry2& e : cpuid) {
    if (e.function == 1) e.ecx |= kTscDeadlineTimer;
  }
}

absl::Status ConfigureVcpu(Vcpu& vcpu, const std::vector<kvm_cpuid_entry2>& supported_cpuid,
                           uint32_t num_vcpus) {
  RETURN_IF_ERROR(vcpu.SetCpuid(CpuidForVcpu(supported_cpuid, vcpu.id(), num_vcpus)));

  std::vector<kvm_msr_entry> msrs;
  for (uint32_t index : {kMsrIa32SysenterCs, kMsrIa32SysenterEsp, kMsrIa32SysenterEip, kMsrStar,
                         kMsrLstar, kMsrCstar, kMsrSyscallMask, kMsrKernelGsBase, kMsrIa32Tsc}) {
    msrs.push_back({index, 0, 0});
  }
  msrs.push_back({kMsrIa32MiscEnable, 0, kMiscEnableFastString});
  msrs.push_back({kMsrMtrrDefType, 0, kMtrrEnableWriteBack});
  RETURN_IF_ERROR(vcpu.SetMsrs(msrs));

  kvm_fpu fpu{};
  fpu.fcw = 0x37f;
  fpu.mxcsr = 0x1f80;
  RETURN_IF_ERROR(vcpu.SetFpu(fpu));

  kvm_lapic_state lapic;
  RETURN_IF_ERROR(vcpu.GetLapic(&lapic));
  auto set_lvt = [&lapic](size_t reg, uint32_t mode) {
    uint32_t value;
    std::memcpy(&value, &lapic.regs[reg], 4);
    value = (value & ~0x700u) | (mode << 8);
    std::memcpy(&lapic.regs[reg], &value, 4);
  };
  set_lvt(kApicLvtLint0, kApicModeExtInt);
  set_lvt(kApicLvtLint1, kApicModeNmi);
  return vcpu.SetLapic(lapic);
}

absl::Status ConfigureBootVcpu(Vcpu& vcpu, const GuestMemory& memory, const LoadedKernel& kernel) {
  const uint64_t gdt[] = {
      0,
      GdtEntry(0xa09b, 0, 0xfffff),  // 64-bit code
      GdtEntry(0xc09b, 0, 0xfffff),  // 32-bit code
      GdtEntry(0xc093, 0, 0xfffff),  // data
      GdtEntry(0x808b, 0, 0xfffff),  // TSS
  };
  RETURN_IF_ERROR(memory.Write(kGdtAddress, gdt, sizeof(gdt)));
  RETURN_IF_ERROR(memory.WriteObj<uint64_t>(kIdtAddress, 0));

  kvm_sregs sregs;
  RETURN_IF_ERROR(vcpu.GetSregs(&sregs));
  sregs.gdt.base = kGdtAddress;
  sregs.gdt.limit = sizeof(gdt) - 1;
  sregs.idt.base = kIdtAddress;
  sregs.idt.limit = 7;
  const bool long_mode = kernel.protocol == BootProtocol::kLinux64;
  sregs.cs = SegmentFromGdt(gdt[long_mode ? 1 : 2], long_mode ? kCode64Selector : kCode32Selector);
  const kvm_segment data = SegmentFromGdt(gdt[3], kDataSelector);
  sregs.ds = sregs.es = sregs.fs = sregs.gs = sregs.ss = data;
  sregs.tr = SegmentFromGdt(gdt[4], kTssSelector);
  sregs.cr0 = kCr0Pe | kCr0Et;
  sregs.cr4 = 0;
  sregs.efer = 0;
  if (long_mode) {
    RETURN_IF_ERROR(WritePageTables(memory));
    sregs.cr3 = kPml4Address;
    sregs.cr4 |= kCr4Pae;
    sregs.cr0 |= kCr0Pg;
    sregs.efer |= kEferLme | kEferLma;
  }
  RETURN_IF_ERROR(vcpu.SetSregs(sregs));

  kvm_regs regs{};
  regs.rflags = 0x2;
  regs.rip = kernel.entry;
  if (long_mode) {
    regs.rsp = regs.rbp = kBootStackPointer;
    regs.rsi = kZeroPageAddress;
  } else {
    regs.rbx = kPvhStartInfoAddress;
  }
  return vcpu.SetRegs(regs);
}

}  // namespace kapsel::vmm::x86
