#include "vmm/devices/legacy/i8042.h"

#include <cstring>

namespace kapsel::vmm {
namespace {
constexpr uint64_t kCommandPort = 4;
constexpr uint8_t kCommandResetCpu = 0xfe;
}  // namespace

void I8042::Read(uint64_t, absl::Span<uint8_t> data) {
  // Status: output buffer empty, input buffer empty; data: nothing.
  std::memset(data.data(), 0, data.size());
}

void I8042::Write(uint64_t offset, absl::Span<const uint8_t> data) {
  if (offset == kCommandPort && data.size() == 1 && data[0] == kCommandResetCpu) on_reset_();
}

}  // namespace kapsel::vmm
