#include "vmm/arch/x86_64/boot_info.h"

#include <asm/bootparam.h>

#include <cstring>
#include <vector>

#include "absl/strings/str_format.h"
#include "common/status.h"
#include "vmm/arch/x86_64/e820.h"
#include "vmm/arch/x86_64/layout.h"

namespace kapsel::vmm::x86 {
namespace {

constexpr uint64_t kPageSize = 4096;
constexpr uint16_t kBootFlagMagic = 0xaa55;
constexpr uint32_t kHeaderMagic = 0x53726448;  // "HdrS"
constexpr uint8_t kLoaderUndefined = 0xff;

absl::Status WriteCmdline(const GuestMemory& memory, const std::string& cmdline) {
  if (cmdline.size() + 1 > kCmdlineMaxSize) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "kernel command line is %d bytes; the limit is %d", cmdline.size(), kCmdlineMaxSize - 1));
  }
  return memory.Write(kCmdlineAddress, cmdline.c_str(), cmdline.size() + 1);
}

absl::Status WriteZeroPage(const GuestMemory& memory, const LoadedKernel& kernel,
                           const std::string& cmdline, std::optional<GuestRange> initrd,
                           const std::vector<E820Entry>& devices) {
  boot_params params{};
  if (kernel.bzimage_header.has_value()) {
    params.hdr = *kernel.bzimage_header;
  } else {
    params.hdr.boot_flag = kBootFlagMagic;
    params.hdr.header = kHeaderMagic;
    params.hdr.kernel_alignment = 0x1000000;
  }
  params.hdr.type_of_loader = kLoaderUndefined;
  params.hdr.loadflags |= CAN_USE_HEAP | LOADED_HIGH;
  params.hdr.heap_end_ptr = 0xfe00;
  params.hdr.vid_mode = 0xffff;
  params.hdr.cmd_line_ptr = static_cast<uint32_t>(kCmdlineAddress);
  params.hdr.cmdline_size = static_cast<uint32_t>(cmdline.size() + 1);
  if (initrd.has_value()) {
    params.hdr.ramdisk_image = static_cast<uint32_t>(initrd->start);
    params.hdr.ramdisk_size = static_cast<uint32_t>(initrd->size);
  }
  const std::vector<E820Entry> map = BuildE820(memory, devices);
  if (map.size() > E820_MAX_ENTRIES_ZEROPAGE) {
    return absl::InternalError("too many e820 entries for the zero page");
  }
  for (size_t i = 0; i < map.size(); ++i) {
    params.e820_table[i] = {map[i].addr, map[i].size, map[i].type};
  }
  params.e820_entries = static_cast<uint8_t>(map.size());
  return memory.WriteObj(kZeroPageAddress, params);
}

absl::Status WritePvhStartInfo(const GuestMemory& memory, std::optional<GuestRange> initrd,
                               const std::vector<E820Entry>& devices) {
  const std::vector<E820Entry> map = BuildE820(memory, devices);
  const uint64_t modlist = kPvhStartInfoAddress + sizeof(HvmStartInfo);
  const uint64_t memmap = modlist + sizeof(HvmModlistEntry);
  if (memmap + map.size() * sizeof(HvmMemmapEntry) > kZeroPageAddress) {
    return absl::InternalError("the PVH memory map does not fit below the zero page");
  }
  HvmStartInfo info{};
  info.magic = kHvmStartMagic;
  info.version = 1;
  info.cmdline_paddr = kCmdlineAddress;
  info.memmap_paddr = memmap;
  info.memmap_entries = static_cast<uint32_t>(map.size());
  if (initrd.has_value()) {
    info.nr_modules = 1;
    info.modlist_paddr = modlist;
    HvmModlistEntry module{initrd->start, initrd->size, 0, 0};
    RETURN_IF_ERROR(memory.WriteObj(modlist, module));
  }
  for (size_t i = 0; i < map.size(); ++i) {
    HvmMemmapEntry entry{map[i].addr, map[i].size, map[i].type, 0};
    RETURN_IF_ERROR(memory.WriteObj(memmap + i * sizeof(HvmMemmapEntry), entry));
  }
  return memory.WriteObj(kPvhStartInfoAddress, info);
}

}  // namespace

absl::StatusOr<GuestRange> LoadInitrd(absl::Span<const uint8_t> initrd, const GuestMemory& memory,
                                      uint64_t kernel_end) {
  const MemoryRegion& low = memory.regions().front();
  const uint64_t low_end = std::min(low.guest_start + low.size, kMmioHoleStart);
  const uint64_t size = initrd.size();
  if (size > low_end) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "the initrd (%d bytes) does not fit in guest memory below %#x", size, low_end));
  }
  const uint64_t start = (low_end - size) & ~(kPageSize - 1);
  if (start < kernel_end) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "the initrd (%d bytes) and the kernel (ending at %#x) do not both fit below %#x; give the "
        "VM more memory",
        size, kernel_end, low_end));
  }
  RETURN_IF_ERROR(memory.Write(start, initrd.data(), size));
  return GuestRange{start, size};
}

absl::Status WriteBootInfo(const GuestMemory& memory, const LoadedKernel& kernel,
                           const std::string& cmdline, std::optional<GuestRange> initrd,
                           const std::vector<E820Entry>& devices) {
  RETURN_IF_ERROR(WriteCmdline(memory, cmdline));
  if (kernel.protocol == BootProtocol::kPvh) return WritePvhStartInfo(memory, initrd, devices);
  return WriteZeroPage(memory, kernel, cmdline, initrd, devices);
}

}  // namespace kapsel::vmm::x86
