// virtio-balloon (virtio 1.x section 5.5), for free page reporting only: the guest reports ranges
// of memory it has freed (VIRTIO_BALLOON_F_REPORTING) and the VMM gives them back to the host, so
// an idle VM's footprint shrinks to what the guest really uses. The balloon itself stays empty
// (num_pages 0): inflate and deflate requests are returned untouched.
//
// Queues, numbered as the Linux driver numbers them (only negotiated optional queues count):
// 0 inflateq, 1 deflateq, 2 reporting_vq.
#ifndef KAPSEL_VMM_DEVICES_VIRTIO_BALLOON_BALLOON_DEVICE_H_
#define KAPSEL_VMM_DEVICES_VIRTIO_BALLOON_BALLOON_DEVICE_H_

#include <atomic>
#include <cstdint>
#include <string>

#include "vmm/devices/virtio/virtio_device.h"

namespace kapsel::vmm::virtio {

class BalloonDevice : public VirtioDevice {
 public:
  static constexpr uint16_t kInflateQueue = 0;
  static constexpr uint16_t kDeflateQueue = 1;
  static constexpr uint16_t kReportingQueue = 2;
  // The Linux driver needs room for PAGE_REPORTING_CAPACITY (32) entries in the reporting queue.
  static constexpr uint16_t kQueueSize = 64;

  BalloonDevice() = default;
  // Says on stderr how much memory free page reporting gave back (the VMM's log), if any.
  ~BalloonDevice() override;

  std::string name() const override { return "virtio-balloon"; }
  uint32_t device_type() const override;
  uint64_t device_features() const override;
  uint16_t num_queues() const override { return 3; }
  uint16_t max_queue_size(uint16_t) const override { return kQueueSize; }
  // struct virtio_balloon_config: num_pages (always 0), actual (written by the driver).
  void ReadConfig(uint64_t offset, absl::Span<uint8_t> data) override;
  void WriteConfig(uint64_t offset, absl::Span<const uint8_t> data) override;
  absl::Status Activate(ActivateContext context) override;
  void ProcessQueue(uint16_t index) override;
  void Reset() override;

  // Bytes of guest memory given back to the host so far (for logs and tests).
  uint64_t discarded_bytes() const { return discarded_bytes_.load(std::memory_order_relaxed); }

 private:
  // Discards the chain's device-writable buffers that are whole pages.
  void DiscardReported(const DescriptorChain& chain);

  const GuestMemory* memory_ = nullptr;  // while active
  absl::Span<Queue> queues_;
  uint32_t actual_ = 0;  // the driver's "actual" field (pages in the balloon)
  std::atomic<uint64_t> discarded_bytes_{0};
};

}  // namespace kapsel::vmm::virtio

#endif  // KAPSEL_VMM_DEVICES_VIRTIO_BALLOON_BALLOON_DEVICE_H_
