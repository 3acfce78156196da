#include "vmm/devices/virtio/balloon/balloon_device.h"

#include <linux/virtio_balloon.h>
#include <linux/virtio_config.h>
#include <linux/virtio_ids.h>

#include <cstdio>
#include <cstring>

#include "vmm/devices/virtio/ring_abi.h"

namespace kapsel::vmm::virtio {
namespace {

// struct virtio_balloon_config, little-endian.
constexpr uint64_t kNumPagesOffset = 0;
constexpr uint64_t kActualOffset = 4;
constexpr uint64_t kConfigSize = 16;

}  // namespace

BalloonDevice::~BalloonDevice() {
  const uint64_t bytes = discarded_bytes();
  if (bytes > 0) {
    std::fprintf(stderr, "kapsel-vmm: free page reporting gave back %llu KiB of guest memory\n",
                 static_cast<unsigned long long>(bytes >> 10));
  }
}

uint32_t BalloonDevice::device_type() const { return VIRTIO_ID_BALLOON; }

uint64_t BalloonDevice::device_features() const {
  return (uint64_t{1} << VIRTIO_F_VERSION_1) | (uint64_t{1} << kVirtioRingFEventIdx) |
         (uint64_t{1} << VIRTIO_BALLOON_F_REPORTING);
}

void BalloonDevice::ReadConfig(uint64_t offset, absl::Span<uint8_t> data) {
  uint8_t config[kConfigSize] = {};
  const uint32_t num_pages = 0;  // the balloon is never asked to inflate
  std::memcpy(config + kNumPagesOffset, &num_pages, sizeof(num_pages));
  std::memcpy(config + kActualOffset, &actual_, sizeof(actual_));
  ReadConfigImage(config, offset, data);
}

void BalloonDevice::WriteConfig(uint64_t offset, absl::Span<const uint8_t> data) {
  // Only `actual` is writable, and only as a whole.
  if (offset == kActualOffset && data.size() == sizeof(actual_)) {
    std::memcpy(&actual_, data.data(), sizeof(actual_));
  }
}

absl::Status BalloonDevice::Activate(ActivateContext context) {
  if (context.queues.size() != num_queues()) {
    return absl::InvalidArgumentError("virtio-balloon: expected three queues");
  }
  memory_ = context.memory;
  queues_ = context.queues;
  return absl::OkStatus();
}

void BalloonDevice::Reset() {
  memory_ = nullptr;
  queues_ = {};
  actual_ = 0;
}

void BalloonDevice::ProcessQueue(uint16_t index) {
  if (index >= queues_.size() || !queues_[index].active()) return;
  Queue& queue = queues_[index];
  while (true) {
    absl::StatusOr<std::optional<DescriptorChain>> popped = queue.Pop();
    if (!popped.ok() || !popped->has_value()) return;
    const DescriptorChain& chain = **popped;
    // Inflate and deflate page lists are returned untouched: the balloon never inflates.
    if (index == kReportingQueue && chain.status.ok()) DiscardReported(chain);
    if (!queue.AddUsed(chain.head, 0).ok()) return;
  }
}

void BalloonDevice::DiscardReported(const DescriptorChain& chain) {
  // Each buffer is a free range of guest memory (a multiple of pages, aligned); ranges that are
  // not are skipped, never rounded: whatever the guest claims, only what it names is dropped.
  for (const Descriptor& d : chain.writable()) {
    if (memory_->Discard(d.addr, d.len).ok()) discarded_bytes_ += d.len;
  }
}

}  // namespace kapsel::vmm::virtio
