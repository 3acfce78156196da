// A whole file mapped read-only, unmapped (and its descriptor closed) when it goes out of scope.
#ifndef KAPSEL_VMM_LOADER_MAPPED_FILE_H_
#define KAPSEL_VMM_LOADER_MAPPED_FILE_H_

#include <cstdint>
#include <memory>
#include <string>
#include <utility>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "common/unique_fd.h"

namespace kapsel::vmm {

class MappedFile {
 public:
  // Errors name the path: missing, unreadable, not a regular file, empty.
  static absl::StatusOr<std::unique_ptr<MappedFile>> Open(const std::string& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  absl::Span<const uint8_t> bytes() const { return {data_, size_}; }
  // The file, open read-only: parts of it can be mapped again (a kernel's text into guest memory).
  int fd() const { return fd_.get(); }

 private:
  MappedFile(UniqueFd fd, const uint8_t* data, size_t size)
      : fd_(std::move(fd)), data_(data), size_(size) {}
  UniqueFd fd_;
  const uint8_t* data_;
  size_t size_;
};

}  // namespace kapsel::vmm

#endif  // KAPSEL_VMM_LOADER_MAPPED_FILE_H_
