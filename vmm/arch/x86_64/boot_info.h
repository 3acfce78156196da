// What the VMM tells a booting Linux kernel: the command line, the initrd and the memory map, as a
// boot_params "zero page" (64-bit boot protocol) or as a PVH hvm_start_info.
#ifndef KAPSEL_VMM_ARCH_X86_64_BOOT_INFO_H_
#define KAPSEL_VMM_ARCH_X86_64_BOOT_INFO_H_

#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "vmm/arch/x86_64/e820.h"
#include "vmm/loader/kernel_loader.h"
#include "vmm/memory/guest_memory.h"

namespace kapsel::vmm::x86 {

// The PVH start-of-day structures (the Xen PVH boot ABI, version 1).
struct HvmStartInfo {
  uint32_t magic;
  uint32_t version;
  uint32_t flags;
  uint32_t nr_modules;
  uint64_t modlist_paddr;
  uint64_t cmdline_paddr;
  uint64_t rsdp_paddr;
  uint64_t memmap_paddr;
  uint32_t memmap_entries;
  uint32_t reserved;
};
struct HvmModlistEntry {
  uint64_t paddr;
  uint64_t size;
  uint64_t cmdline_paddr;
  uint64_t reserved;
};
struct HvmMemmapEntry {
  uint64_t addr;
  uint64_t size;
  uint32_t type;
  uint32_t reserved;
};
inline constexpr uint32_t kHvmStartMagic = 0x336ec578;

// Copies the initrd to the top of low memory (below the MMIO hole), page aligned, above the kernel.
absl::StatusOr<GuestRange> LoadInitrd(absl::Span<const uint8_t> initrd, const GuestMemory& memory,
                                      uint64_t kernel_end);

// Writes the command line, then boot_params or the PVH start info, as `kernel.protocol` needs.
// `devices` are memory map entries beyond RAM (BuildE820), such as persistent memory.
absl::Status WriteBootInfo(const GuestMemory& memory, const LoadedKernel& kernel,
                           const std::string& cmdline, std::optional<GuestRange> initrd,
                           const std::vector<E820Entry>& devices = {});

}  // namespace kapsel::vmm::x86

#endif  // KAPSEL_VMM_ARCH_X86_64_BOOT_INFO_H_
