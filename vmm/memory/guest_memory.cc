#include "vmm/memory/guest_memory.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "absl/strings/str_format.h"
#include "common/status.h"

namespace kapsel::vmm {

absl::StatusOr<std::unique_ptr<GuestMemory>> GuestMemory::Create(
    const std::vector<GuestRange>& ranges) {
  const uint64_t page = static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
  if (ranges.empty()) return absl::InvalidArgumentError("guest memory: no ranges");
  uint64_t total = 0;
  for (size_t i = 0; i < ranges.size(); ++i) {
    const GuestRange& r = ranges[i];
    if (r.size == 0 || r.start % page != 0 || r.size % page != 0 || r.start + r.size < r.start) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "guest memory: range %#x+%#x is empty or not page aligned", r.start, r.size));
    }
    if (i > 0 && r.start < ranges[i - 1].start + ranges[i - 1].size) {
      return absl::InvalidArgumentError(
          absl::StrFormat("guest memory: range %#x overlaps or is out of order", r.start));
    }
    total += r.size;
  }

  auto memory = std::unique_ptr<GuestMemory>(new GuestMemory());
  memory->memfd_.reset(memfd_create("kapsel-guest-ram", MFD_CLOEXEC));
  if (!memory->memfd_) return ErrnoError("guest memory: memfd_create");
  if (ftruncate(memory->memfd_.get(), static_cast<off_t>(total)) != 0) {
    return ErrnoError(absl::StrFormat("guest memory: ftruncate to %d bytes", total));
  }
  uint64_t offset = 0;
  for (const GuestRange& r : ranges) {
    void* host = mmap(nullptr, r.size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE,
                      memory->memfd_.get(), static_cast<off_t>(offset));
    if (host == MAP_FAILED) {
      return ErrnoError(absl::StrFormat("guest memory: mmap of %d bytes", r.size));
    }
    memory->regions_.push_back({r.start, r.size, static_cast<uint8_t*>(host), offset});
    offset += r.size;
  }
  return memory;
}

GuestMemory::~GuestMemory() {
  for (const MemoryRegion& r : regions_) munmap(r.host, r.size);
}

uint64_t GuestMemory::total_size() const {
  uint64_t total = 0;
  for (const MemoryRegion& r : regions_) total += r.size;
  return total;
}

absl::StatusOr<uint8_t*> GuestMemory::Translate(GuestAddress addr, uint64_t len) const {
  for (const MemoryRegion& r : regions_) {
    if (addr < r.guest_start) continue;
    const uint64_t offset = addr - r.guest_start;
    if (offset >= r.size) continue;
    if (len > r.size - offset) break;  // runs past the end of the region (no overflow possible)
    return r.host + offset;
  }
  return absl::OutOfRangeError(
      absl::StrFormat("guest address range %#x+%#x is outside guest memory", addr, len));
}

absl::Status GuestMemory::Discard(GuestAddress addr, uint64_t len) const {
  const uint64_t page = static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
  if (addr % page != 0 || len % page != 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("guest range %#x+%#x to discard is not page aligned", addr, len));
  }
  absl::StatusOr<uint8_t*> host = Translate(addr, len);
  if (!host.ok()) return host.status();
  if (len == 0) return absl::OkStatus();
  // Under a copy-on-write file range the memfd's pages are unused, so punching them is harmless;
  // the private copies the guest made there are dropped separately.
  for (const GuestRange& f : file_ranges_) {
    const uint64_t start = std::max(addr, f.start);
    const uint64_t end = std::min(addr + len, f.start + f.size);
    if (start >= end) continue;
    if (madvise(*host + (start - addr), end - start, MADV_DONTNEED) != 0) {
      return ErrnoError(absl::StrFormat("discarding guest range %#x+%#x", start, end - start));
    }
  }
  for (const MemoryRegion& r : regions_) {
    if (*host < r.host || *host >= r.host + r.size) continue;
    const off_t offset = static_cast<off_t>(r.file_offset + (*host - r.host));
    if (fallocate(memfd_.get(), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset,
                  static_cast<off_t>(len)) != 0) {
      return ErrnoError(absl::StrFormat("discarding guest range %#x+%#x", addr, len));
    }
    return absl::OkStatus();
  }
  return absl::InternalError("discard: no region for a translated address");
}

absl::Status GuestMemory::MapFileCopyOnWrite(GuestAddress addr, uint64_t len, int fd,
                                             uint64_t offset) {
  const uint64_t page = static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
  if (len == 0 || addr % page != 0 || len % page != 0 || offset % page != 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "guest range %#x+%#x to map from file offset %#x is empty or not page aligned", addr, len,
        offset));
  }
  ASSIGN_OR_RETURN(uint8_t * host, Translate(addr, len));
  for (const GuestRange& f : file_ranges_) {
    if (addr < f.start + f.size && f.start < addr + len) {
      return absl::InvalidArgumentError(
          absl::StrFormat("guest range %#x+%#x is already mapped from a file", addr, len));
    }
  }
  // MAP_FIXED replaces the memfd's pages in place; the region's mapping stays one address range,
  // so KVM's memory slot and Translate are unchanged.
  void* mapped = mmap(host, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_FIXED | MAP_NORESERVE,
                      fd, static_cast<off_t>(offset));
  if (mapped == MAP_FAILED) {
    const int saved = errno;
    // The old pages are gone whatever MAP_FIXED did; put the memfd back so the range is RAM.
    for (const MemoryRegion& r : regions_) {
      if (host < r.host || host >= r.host + r.size) continue;
      mmap(host, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED | MAP_NORESERVE, memfd_.get(),
           static_cast<off_t>(r.file_offset + (host - r.host)));
    }
    errno = saved;
    return ErrnoError(absl::StrFormat("mapping guest range %#x+%#x from a file", addr, len));
  }
  file_ranges_.push_back({addr, len});
  std::sort(file_ranges_.begin(), file_ranges_.end(), StartsBefore);
  return absl::OkStatus();
}

std::vector<MemoryRegion> GuestMemory::BackendRegions() const {
  std::vector<MemoryRegion> pieces;
  for (const MemoryRegion& r : regions_) {
    GuestAddress next = r.guest_start;  // first byte not yet handed out
    const GuestAddress end = r.guest_start + r.size;
    auto emit = [&](GuestAddress until) {
      if (until <= next) return;
      const uint64_t delta = next - r.guest_start;
      pieces.push_back({next, until - next, r.host + delta, r.file_offset + delta});
    };
    for (const GuestRange& f : file_ranges_) {  // sorted, disjoint
      if (f.start >= end || f.start + f.size <= r.guest_start) continue;
      emit(f.start);
      next = f.start + f.size;
    }
    emit(end);
  }
  return pieces;
}

absl::StatusOr<absl::Span<uint8_t>> GuestMemory::Slice(GuestAddress addr, uint64_t len) const {
  absl::StatusOr<uint8_t*> host = Translate(addr, len);
  if (!host.ok()) return host.status();
  return absl::Span<uint8_t>(*host, len);
}

absl::Status GuestMemory::Read(GuestAddress addr, void* dst, uint64_t len) const {
  absl::StatusOr<uint8_t*> host = Translate(addr, len);
  if (!host.ok()) return host.status();
  if (len != 0) std::memcpy(dst, *host, len);
  return absl::OkStatus();
}

absl::Status GuestMemory::Write(GuestAddress addr, const void* src, uint64_t len) const {
  absl::StatusOr<uint8_t*> host = Translate(addr, len);
  if (!host.ok()) return host.status();
  if (len != 0) std::memcpy(*host, src, len);
  return absl::OkStatus();
}

}  // namespace kapsel::vmm
