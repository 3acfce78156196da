#include "vmm/memory/pmem_region.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/status.h"
#include "common/unique_fd.h"

namespace kapsel::vmm {

absl::StatusOr<std::unique_ptr<PmemRegion>> PmemRegion::Map(const std::string& path,
                                                            uint64_t guest_start) {
  if (guest_start % kAlignment != 0) {
    return absl::InternalError(
        absl::StrFormat("persistent memory at %#x is not 2 MiB aligned", guest_start));
  }
  UniqueFd fd(open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return ErrnoError(absl::StrCat("cannot open ", path));
  struct stat st;
  if (fstat(fd.get(), &st) != 0) return ErrnoError(absl::StrCat("cannot stat ", path));
  if (!S_ISREG(st.st_mode)) return absl::InvalidArgumentError(absl::StrCat(path, " is not a file"));
  if (st.st_size == 0) return absl::InvalidArgumentError(absl::StrCat(path, " is empty"));
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  if (size % kAlignment != 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s: its size (%d bytes) is not a multiple of 2 MiB (pad the image)", path, size));
  }
  // MAP_PRIVATE on a read-only descriptor: writable for the guest, copy-on-write, never written
  // back. The mapping holds the file; the descriptor can go.
  void* host =
      mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_NORESERVE, fd.get(), 0);
  if (host == MAP_FAILED) return ErrnoError(absl::StrCat("cannot map ", path));
  return std::unique_ptr<PmemRegion>(
      new PmemRegion(guest_start, size, static_cast<uint8_t*>(host)));
}

PmemRegion::~PmemRegion() { munmap(host_, size_); }

}  // namespace kapsel::vmm
