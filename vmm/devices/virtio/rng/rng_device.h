// virtio-rng / entropy device (virtio 1.x section 5.4): one queue whose writable buffers are
// filled from the host's getrandom(2).
#ifndef KAPSEL_VMM_DEVICES_VIRTIO_RNG_RNG_DEVICE_H_
#define KAPSEL_VMM_DEVICES_VIRTIO_RNG_RNG_DEVICE_H_

#include <cstdint>
#include <string>

#include "vmm/devices/virtio/virtio_device.h"

namespace kapsel::vmm::virtio {

class RngDevice : public VirtioDevice {
 public:
  static constexpr uint16_t kQueueSize = 256;
  // At most this many bytes go into one chain; the driver asks again for more.
  static constexpr uint64_t kMaxBytesPerRequest = 64 * 1024;

  RngDevice() = default;

  std::string name() const override { return "virtio-rng"; }
  uint32_t device_type() const override;
  uint64_t device_features() const override;
  uint16_t num_queues() const override { return 1; }
  uint16_t max_queue_size(uint16_t) const override { return kQueueSize; }
  // No configuration space: reads are zero, writes ignored.
  void ReadConfig(uint64_t offset, absl::Span<uint8_t> data) override;
  void WriteConfig(uint64_t, absl::Span<const uint8_t>) override {}
  absl::Status Activate(ActivateContext context) override;
  void ProcessQueue(uint16_t index) override;
  void Reset() override;

 private:
  // Fills the chain's writable buffers; returns the bytes written.
  uint32_t Fill(const DescriptorChain& chain);

  const GuestMemory* memory_ = nullptr;  // while active
  Queue* queue_ = nullptr;
};

}  // namespace kapsel::vmm::virtio

#endif  // KAPSEL_VMM_DEVICES_VIRTIO_RNG_RNG_DEVICE_H_
