// The guest physical address map kapsel-vmm gives an x86_64 guest.
#ifndef KAPSEL_VMM_ARCH_X86_64_LAYOUT_H_
#define KAPSEL_VMM_ARCH_X86_64_LAYOUT_H_

#include <cstdint>

namespace kapsel::vmm::x86 {

// Boot structures in the first megabyte.
inline constexpr uint64_t kGdtAddress = 0x500;
inline constexpr uint64_t kIdtAddress = 0x520;
inline constexpr uint64_t kPvhStartInfoAddress = 0x6000;  // hvm_start_info + module list + memmap
inline constexpr uint64_t kZeroPageAddress = 0x7000;      // boot_params
inline constexpr uint64_t kBootStackPointer = 0x8ff0;
inline constexpr uint64_t kPml4Address = 0x9000;
inline constexpr uint64_t kPdptAddress = 0xa000;
inline constexpr uint64_t kPdAddress = 0xb000;  // four page directories: identity map of 4 GiB
inline constexpr uint64_t kIdentityMappedBytes = 4ULL << 30;
inline constexpr uint64_t kCmdlineAddress = 0x20000;
inline constexpr uint64_t kCmdlineMaxSize = 0x10000;
// The MP table sits in the last KiB of base memory, where Linux looks for it.
inline constexpr uint64_t kEbdaStart = 0x9fc00;
inline constexpr uint64_t kHighMemoryStart = 0x100000;  // 1 MiB: where bzImage code is loaded

// KVM needs three pages for the TSS and one for the identity map, below 4 GiB, outside RAM.
inline constexpr uint64_t kTssAddress = 0xfffbd000;
inline constexpr uint64_t kIdentityMapAddress = 0xfffbc000;

// The 32-bit MMIO hole: RAM stops at 3 GiB and resumes at 4 GiB.
inline constexpr uint64_t kMmioHoleStart = 0xc0000000;
inline constexpr uint64_t kMmioHoleEnd = 0x100000000;
// virtio-mmio device windows, one 4 KiB page each.
inline constexpr uint64_t kVirtioMmioBase = 0xd0000000;
inline constexpr uint64_t kVirtioMmioSize = 0x1000;
inline constexpr uint64_t kIoapicAddress = 0xfec00000;
inline constexpr uint64_t kLapicAddress = 0xfee00000;

// Legacy devices and interrupt lines.
inline constexpr uint16_t kCom1Port = 0x3f8;
inline constexpr uint32_t kCom1Irq = 4;
inline constexpr uint16_t kI8042Port = 0x60;  // 0x60..0x64
inline constexpr uint32_t kFirstVirtioIrq = 5;
inline constexpr uint32_t kLastVirtioIrq = 23;  // the IOAPIC has 24 pins

}  // namespace kapsel::vmm::x86

#endif  // KAPSEL_VMM_ARCH_X86_64_LAYOUT_H_
