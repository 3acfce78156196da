#include "vmm/arch/x86_64/e820.h"

#include <asm/e820.h>

#include <algorithm>

#include "vmm/arch/x86_64/layout.h"

namespace kapsel::vmm::x86 {

std::vector<GuestRange> RamRanges(uint64_t mem_bytes) {
  std::vector<GuestRange> ranges;
  const uint64_t low = std::min(mem_bytes, kMmioHoleStart);
  ranges.push_back({0, low});
  if (mem_bytes > low) ranges.push_back({kMmioHoleEnd, mem_bytes - low});
  return ranges;
}

uint64_t PmemGuestAddress(const GuestMemory& memory) {
  constexpr uint64_t kGiB = 1ULL << 30;
  uint64_t end = kMmioHoleEnd;
  for (const MemoryRegion& r : memory.regions()) end = std::max(end, r.guest_start + r.size);
  return (end + kGiB - 1) / kGiB * kGiB;
}

std::vector<E820Entry> BuildE820(const GuestMemory& memory, const std::vector<E820Entry>& devices) {
  std::vector<E820Entry> map;
  for (const MemoryRegion& r : memory.regions()) {
    if (r.guest_start == 0) {
      map.push_back({0, kEbdaStart, E820_RAM});
      map.push_back({kEbdaStart, 0x100000 - kEbdaStart, E820_RESERVED});
      if (r.size > kHighMemoryStart) {
        map.push_back({kHighMemoryStart, r.size - kHighMemoryStart, E820_RAM});
      }
    } else {
      map.push_back({r.guest_start, r.size, E820_RAM});
    }
  }
  map.insert(map.end(), devices.begin(), devices.end());
  return map;
}

}  // namespace kapsel::vmm::x86
