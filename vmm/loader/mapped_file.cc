#include "vmm/loader/mapped_file.h"

#include <sys/mman.h>

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "common/unique_fd.h"
#include "vmm/memory/input_file.h"

namespace kapsel::vmm {

absl::StatusOr<std::unique_ptr<MappedFile>> MappedFile::Open(const std::string& path) {
  ASSIGN_OR_RETURN(InputFile file, OpenInputFile(path));
  void* data = mmap(nullptr, file.size, PROT_READ, MAP_PRIVATE, file.fd.get(), 0);
  if (data == MAP_FAILED) return ErrnoError(absl::StrCat("cannot map ", path));
  return std::unique_ptr<MappedFile>(new MappedFile(
      std::move(file.fd), static_cast<const uint8_t*>(data), static_cast<size_t>(file.size)));
}

MappedFile::~MappedFile() { munmap(const_cast<uint8_t*>(data_), size_); }

}  // namespace kapsel::vmm
