#include "vmm/memory/input_file.h"

#include <fcntl.h>
#include <sys/stat.h>

#include "absl/strings/str_cat.h"
#include "common/status.h"

namespace kapsel::vmm {

absl::StatusOr<InputFile> OpenInputFile(const std::string& path) {
  UniqueFd fd(open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return ErrnoError(absl::StrCat("cannot open ", path));
  struct stat st;
  if (fstat(fd.get(), &st) != 0) return ErrnoError(absl::StrCat("cannot stat ", path));
  if (!S_ISREG(st.st_mode)) return absl::InvalidArgumentError(absl::StrCat(path, " is not a file"));
  if (st.st_size == 0) return absl::InvalidArgumentError(absl::StrCat(path, " is empty"));
  return InputFile{std::move(fd), static_cast<uint64_t>(st.st_size)};
}

}  // namespace kapsel::vmm
