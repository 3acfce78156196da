// What the ttrpc fuzzers share: a fuzz input as a byte stream for a FrameReader.
#ifndef KAPSEL_TESTS_TTRPC_FUZZ_INPUT_H_
#define KAPSEL_TESTS_TTRPC_FUZZ_INPUT_H_

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <memory>

#include "common/ttrpc/frame.h"

namespace kapsel::ttrpc::testing {

// A FrameReader over data[0, size) (which must outlive it). Read sizes vary with the input (1 to
// 97 bytes, from its first byte) so partial reads are exercised.
inline FrameReader FuzzInputReader(const uint8_t* data, size_t size) {
  const size_t chunk = size > 0 ? 1 + data[0] % 97 : 1;
  auto offset = std::make_shared<size_t>(0);
  return FrameReader([=](char* buffer, size_t want) -> ssize_t {
    const size_t n = std::min({want, chunk, size - *offset});
    std::memcpy(buffer, data + *offset, n);
    *offset += n;
    return static_cast<ssize_t>(n);
  });
}

}  // namespace kapsel::ttrpc::testing

#endif  // KAPSEL_TESTS_TTRPC_FUZZ_INPUT_H_
