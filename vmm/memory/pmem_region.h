// Persistent memory backed by a file: the file mapped copy-on-write at a guest physical address
// outside RAM, which the guest is told about as e820 persistent memory (type 12) and drives with
// Linux's legacy pmem driver (/dev/pmem0). With a DAX filesystem in the file, the guest runs and
// reads its files straight from these pages, which every VM mapping the same file shares through
// the host's page cache; a page the guest writes becomes private to its VM, and the file is never
// written. Like a kernel mapped for its text, the file must not be changed in place while VMs run.
#ifndef KAPSEL_VMM_MEMORY_PMEM_REGION_H_
#define KAPSEL_VMM_MEMORY_PMEM_REGION_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"

namespace kapsel::vmm {

class PmemRegion {
 public:
  // Linux maps device memory in 2 MiB subsections: the start and the size must be multiples.
  static constexpr uint64_t kAlignment = 2ULL << 20;

  // Maps `path` at `guest_start`. Errors name the path: missing, not a regular file, empty, a
  // size that is not a multiple of 2 MiB; a misaligned guest_start is an internal error.
  static absl::StatusOr<std::unique_ptr<PmemRegion>> Map(const std::string& path,
                                                         uint64_t guest_start);
  ~PmemRegion();
  PmemRegion(const PmemRegion&) = delete;
  PmemRegion& operator=(const PmemRegion&) = delete;

  uint64_t guest_start() const { return guest_start_; }
  uint64_t size() const { return size_; }
  uint8_t* host() const { return host_; }

 private:
  PmemRegion(uint64_t guest_start, uint64_t size, uint8_t* host)
      : guest_start_(guest_start), size_(size), host_(host) {}
  uint64_t guest_start_;
  uint64_t size_;
  uint8_t* host_;
};

}  // namespace kapsel::vmm

#endif  // KAPSEL_VMM_MEMORY_PMEM_REGION_H_
