#include "vmm/memory/pmem_region.h"

#include <sys/mman.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/status.h"
#include "vmm/memory/input_file.h"

namespace kapsel::vmm {

absl::StatusOr<std::unique_ptr<PmemRegion>> PmemRegion::Map(const std::string& path,
                                                            uint64_t guest_start) {
  if (guest_start % kAlignment != 0) {
    return absl::InternalError(
        absl::StrFormat("persistent memory at %#x is not 2 MiB aligned", guest_start));
  }
  ASSIGN_OR_RETURN(InputFile file, OpenInputFile(path));
  const uint64_t size = file.size;
  if (size % kAlignment != 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s: its size (%d bytes) is not a multiple of 2 MiB (pad the image)", path, size));
  }
  // MAP_PRIVATE on a read-only descriptor: writable for the guest, copy-on-write, never written
  // back. The mapping holds the file; the descriptor can go.
  void* host =
      mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_NORESERVE, file.fd.get(), 0);
  if (host == MAP_FAILED) return ErrnoError(absl::StrCat("cannot map ", path));
  return std::unique_ptr<PmemRegion>(
      new PmemRegion(guest_start, size, static_cast<uint8_t*>(host)));
}

PmemRegion::~PmemRegion() { munmap(host_, size_); }

}  // namespace kapsel::vmm
