// Loads a Linux kernel image into guest memory: an ELF vmlinux (entered through its PVH note when
// it has one, else through the 64-bit boot protocol) or a bzImage (64-bit boot protocol). The image
// is untrusted input: every offset and size in it is checked against the file and guest memory.
#ifndef KAPSEL_VMM_LOADER_KERNEL_LOADER_H_
#define KAPSEL_VMM_LOADER_KERNEL_LOADER_H_

#include <asm/bootparam.h>

#include <cstdint>
#include <optional>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "vmm/memory/guest_memory.h"

namespace kapsel::vmm {

enum class BootProtocol {
  kLinux64,  // 64-bit boot protocol: long mode, rsi = boot_params
  kPvh,      // PVH: 32-bit protected mode, ebx = hvm_start_info
};

struct LoadedKernel {
  BootProtocol protocol;
  uint64_t entry;  // guest physical entry point
  // First guest physical byte after the loaded image (for a bzImage, after the memory its
  // decompressor needs at pref_address, which nothing else may use).
  uint64_t end;
  // The bzImage's setup header, which the boot_params must start from.
  std::optional<setup_header> bzimage_header;
  // Bytes of the kernel image mapped copy-on-write from the kernel file instead of copied.
  uint64_t shared_bytes = 0;
};

// Detects the format by its magic. `share_fd`, when not -1, is the image's file (open for
// reading): see LoadElfKernel.
absl::StatusOr<LoadedKernel> LoadKernel(absl::Span<const uint8_t> image, GuestMemory& memory,
                                        int share_fd = -1);
// With a `share_fd`, the pages of the kernel's text and read-only data (as its symbol table
// delimits them: _text.._etext, and __start_rodata..__end_rodata without the __ro_after_init data
// inside it) are mapped copy-on-write from that file (GuestMemory::MapFileCopyOnWrite) instead of
// copied, so that every VM booting this kernel shares them through the page cache. Linux never
// frees these pages nor hands them to devices, and writes only a few of them once it runs
// (alternatives patching; pass it noreplace-smp, or a one-vCPU guest rewrites every lock prefix).
// Without a symbol table, or when the file's layout does not allow it (segment file offsets not
// page aligned with their addresses), everything is copied.
absl::StatusOr<LoadedKernel> LoadElfKernel(absl::Span<const uint8_t> image, GuestMemory& memory,
                                           int share_fd = -1);
absl::StatusOr<LoadedKernel> LoadBzImage(absl::Span<const uint8_t> image,
                                         const GuestMemory& memory);

}  // namespace kapsel::vmm

#endif  // KAPSEL_VMM_LOADER_KERNEL_LOADER_H_
