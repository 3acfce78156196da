#include "vmm/devices/virtio/virtio_device.h"

#include <algorithm>
#include <cstring>

namespace kapsel::vmm::virtio {

void ReadConfigImage(absl::Span<const uint8_t> config, uint64_t offset, absl::Span<uint8_t> data) {
  std::fill(data.begin(), data.end(), 0);
  if (offset >= config.size()) return;
  const uint64_t n = std::min<uint64_t>(data.size(), config.size() - offset);
  std::memcpy(data.data(), config.data() + offset, n);
}

}  // namespace kapsel::vmm::virtio
