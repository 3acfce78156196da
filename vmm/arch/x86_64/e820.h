// The guest's physical memory map: where RAM is, for the e820 table and the PVH memory map.
#ifndef KAPSEL_VMM_ARCH_X86_64_E820_H_
#define KAPSEL_VMM_ARCH_X86_64_E820_H_

#include <cstdint>
#include <vector>

#include "vmm/memory/guest_memory.h"

namespace kapsel::vmm::x86 {

struct E820Entry {
  uint64_t addr;
  uint64_t size;
  uint32_t type;  // E820_RAM, E820_RESERVED, E820_PRAM
};

// The RAM ranges for `mem_bytes` of guest memory: below the MMIO hole, then above 4 GiB.
std::vector<GuestRange> RamRanges(uint64_t mem_bytes);

// Where persistent memory (pmem_region.h) goes: the first 1 GiB boundary at or above 4 GiB and
// above all of guest RAM. (Above RAM, so that an e820 entry of its own never touches RAM's.)
uint64_t PmemGuestAddress(const GuestMemory& memory);

// The memory map the guest is told about: base memory up to the MP table, the reserved EBDA, RAM
// from 1 MiB, RAM above 4 GiB when there is any, then `devices` (persistent memory, above RAM).
std::vector<E820Entry> BuildE820(const GuestMemory& memory,
                                 const std::vector<E820Entry>& devices = {});

}  // namespace kapsel::vmm::x86

#endif  // KAPSEL_VMM_ARCH_X86_64_E820_H_
