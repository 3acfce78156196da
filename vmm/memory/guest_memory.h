// Guest physical memory: memfd-backed regions mapped into the VMM, and a bounds-checked translator
// from guest physical addresses to host pointers. Every device goes through it: the guest is
// hostile, so an address or length outside guest RAM is an error for that request, never a host
// access.
#ifndef KAPSEL_VMM_MEMORY_GUEST_MEMORY_H_
#define KAPSEL_VMM_MEMORY_GUEST_MEMORY_H_

#include <cstdint>
#include <memory>
#include <type_traits>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "common/unique_fd.h"

namespace kapsel::vmm {

using GuestAddress = uint64_t;

struct GuestRange {
  GuestAddress start;
  uint64_t size;
};

// Orders ranges by their start address (std::sort).
inline bool StartsBefore(const GuestRange& a, const GuestRange& b) { return a.start < b.start; }

struct MemoryRegion {
  GuestAddress guest_start;
  uint64_t size;
  uint8_t* host;  // start of the host mapping
  uint64_t
      file_offset;  // offset of this region in the memfd (for sharing with vhost-user backends)
};

class GuestMemory {
 public:
  // Creates one memfd holding all ranges (which must be page aligned, non-empty, sorted and
  // disjoint) and maps each range into the VMM.
  static absl::StatusOr<std::unique_ptr<GuestMemory>> Create(const std::vector<GuestRange>& ranges);

  GuestMemory(const GuestMemory&) = delete;
  GuestMemory& operator=(const GuestMemory&) = delete;
  ~GuestMemory();

  // A host pointer to [addr, addr + len) if that range lies entirely inside one region; an
  // OutOfRange error otherwise (including overflow of addr + len). len may be 0.
  absl::StatusOr<uint8_t*> Translate(GuestAddress addr, uint64_t len) const;
  // A span over [addr, addr + len), checked like Translate.
  absl::StatusOr<absl::Span<uint8_t>> Slice(GuestAddress addr, uint64_t len) const;

  // Copies between guest memory and the host. The guest may change its memory at any time, so
  // anything that is validated must be copied out first and validated in the copy.
  absl::Status Read(GuestAddress addr, void* dst, uint64_t len) const;
  absl::Status Write(GuestAddress addr, const void* src, uint64_t len) const;

  template <typename T>
  absl::StatusOr<T> ReadObj(GuestAddress addr) const {
    static_assert(std::is_trivially_copyable_v<T>);
    T value;
    absl::Status status = Read(addr, &value, sizeof(T));
    if (!status.ok()) return status;
    return value;
  }
  template <typename T>
  absl::Status WriteObj(GuestAddress addr, const T& value) const {
    static_assert(std::is_trivially_copyable_v<T>);
    return Write(addr, &value, sizeof(T));
  }

  // Gives [addr, addr + len) back to the host (a hole punched in the memfd, so the VMM and every
  // backend sharing the memory drop those pages); the guest reads zeros there afterwards, or the
  // file's bytes inside a copy-on-write file range (whose private copies are dropped). The range
  // must be page aligned and inside one region.
  absl::Status Discard(GuestAddress addr, uint64_t len) const;

  // Maps [addr, addr + len) of guest memory copy-on-write from `fd` at `offset` in place of the
  // memfd's pages. Everything must be page aligned and the range inside one region. The guest
  // reads the file's pages, which every other mapping of the file shares through the page cache
  // (a kernel's text, shared by all VMs booting that kernel); a page the guest or the VMM writes
  // becomes private to this VM. The file must not change while it is mapped. Backends that map
  // guest memory through the memfd cannot see these pages, so BackendRegions() leaves them out.
  absl::Status MapFileCopyOnWrite(GuestAddress addr, uint64_t len, int fd, uint64_t offset);
  // The ranges mapped from files, sorted.
  const std::vector<GuestRange>& file_ranges() const { return file_ranges_; }

  // Every region, as the KVM memory slots and the VMM's devices see it.
  const std::vector<MemoryRegion>& regions() const { return regions_; }
  // What a vhost-user backend may map through the memfd: regions() without the copy-on-write file
  // ranges, each piece with its own host address and memfd offset.
  std::vector<MemoryRegion> BackendRegions() const;
  int memfd() const { return memfd_.get(); }
  // Total bytes of guest RAM.
  uint64_t total_size() const;

 private:
  GuestMemory() = default;
  UniqueFd memfd_;
  std::vector<MemoryRegion> regions_;
  std::vector<GuestRange> file_ranges_;
};

}  // namespace kapsel::vmm

#endif  // KAPSEL_VMM_MEMORY_GUEST_MEMORY_H_
