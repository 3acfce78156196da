// A file kapsel-vmm maps guest memory from (a kernel, an initrd, a persistent-memory image):
// opened read-only, checked to be a regular file that is not empty.
#ifndef KAPSEL_VMM_MEMORY_INPUT_FILE_H_
#define KAPSEL_VMM_MEMORY_INPUT_FILE_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "common/unique_fd.h"

namespace kapsel::vmm {

struct InputFile {
  UniqueFd fd;
  uint64_t size = 0;
};

// Errors name the path: missing, unreadable, not a regular file, empty.
absl::StatusOr<InputFile> OpenInputFile(const std::string& path);

}  // namespace kapsel::vmm

#endif  // KAPSEL_VMM_MEMORY_INPUT_FILE_H_
