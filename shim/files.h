// Small whole-file helpers for the shim's state files (pid files, the bundle's address) and logs.
#ifndef KAPSEL_SHIM_FILES_H_
#define KAPSEL_SHIM_FILES_H_

#include <cstddef>
#include <string>

#include "absl/status/status.h"

namespace kapsel::shim {

// Replaces `path` with `text`; the error names the file.
absl::Status WriteFile(const std::string& path, const std::string& text);

// The whole of `path` ("" when it cannot be read): small state and control files (cgroupfs,
// /proc), whose size stat does not tell.
std::string ReadFile(const std::string& path);

// The last `max_bytes` of `path` ("" when it cannot be read).
std::string ReadTail(const std::string& path, size_t max_bytes);

}  // namespace kapsel::shim

#endif  // KAPSEL_SHIM_FILES_H_
