#include "vmm/devices/virtio/rng/rng_device.h"

#include <linux/virtio_config.h>
#include <linux/virtio_ids.h>
#include <sys/random.h>

#include <algorithm>
#include <cerrno>

#include "vmm/devices/virtio/chain_io.h"
#include "vmm/devices/virtio/ring_abi.h"

namespace kapsel::vmm::virtio {

uint32_t RngDevice::device_type() const { return VIRTIO_ID_RNG; }

uint64_t RngDevice::device_features() const {
  return (uint64_t{1} << VIRTIO_F_VERSION_1) | (uint64_t{1} << kVirtioRingFIndirectDesc) |
         (uint64_t{1} << kVirtioRingFEventIdx);
}

void RngDevice::ReadConfig(uint64_t offset, absl::Span<uint8_t> data) {
  ReadConfigImage({}, offset, data);
}

absl::Status RngDevice::Activate(ActivateContext context) {
  if (context.queues.size() != 1) {
    return absl::InvalidArgumentError("virtio-rng: expected exactly one queue");
  }
  memory_ = context.memory;
  queue_ = &context.queues[0];
  return absl::OkStatus();
}

void RngDevice::Reset() {
  memory_ = nullptr;
  queue_ = nullptr;
}

void RngDevice::ProcessQueue(uint16_t index) {
  if (index != 0 || queue_ == nullptr || !queue_->active()) return;
  while (true) {
    absl::StatusOr<std::optional<DescriptorChain>> popped = queue_->Pop();
    if (!popped.ok() || !popped->has_value()) return;
    const DescriptorChain& chain = **popped;
    const uint32_t used = chain.status.ok() ? Fill(chain) : 0;
    if (!queue_->AddUsed(chain.head, used).ok()) return;
  }
}

uint32_t RngDevice::Fill(const DescriptorChain& chain) {
  ChainWriter writer(*memory_, chain);
  writer.Limit(kMaxBytesPerRequest);
  while (writer.remaining() > 0) {
    absl::StatusOr<absl::Span<uint8_t>> piece = writer.Peek(writer.remaining());
    if (!piece.ok() || piece->empty()) break;
    const ssize_t n = getrandom(piece->data(), piece->size(), 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;  // report what we have
    writer.Skip(static_cast<uint64_t>(n));
  }
  return static_cast<uint32_t>(writer.written());
}

}  // namespace kapsel::vmm::virtio
