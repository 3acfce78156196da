// The virtio-mmio transport, modern interface (version 2, virtio 1.x section 4.2): a register
// window the guest driver programs with 32-bit accesses, followed by the device's configuration
// space at offset 0x100. It owns the device and its queues and runs the device status state
// machine (reset, feature negotiation, activation).
//
// Threads: vCPU threads call Read/Write; the event loop calls NotifyQueue when a queue's
// ioeventfd fires (the VM builder registers KVM_IOEVENTFD at base + kMmioQueueNotifyOffset with
// datamatch = queue index). One mutex serializes all of them, so the device is never processing
// a queue while the driver resets it.
#ifndef KAPSEL_VMM_DEVICES_VIRTIO_MMIO_TRANSPORT_H_
#define KAPSEL_VMM_DEVICES_VIRTIO_MMIO_TRANSPORT_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/types/span.h"
#include "vmm/devices/bus.h"
#include "vmm/devices/interrupt.h"
#include "vmm/devices/virtio/queue.h"
#include "vmm/devices/virtio/virtio_device.h"
#include "vmm/memory/guest_memory.h"

namespace kapsel::vmm::virtio {

// Size of the window to map on the MMIO bus (registers 0x000-0x0ff, config space 0x100-0xfff).
inline constexpr uint64_t kMmioWindowSize = 0x1000;
// Offset of QueueNotify, for the ioeventfd.
inline constexpr uint64_t kMmioQueueNotifyOffset = 0x50;
// VendorID register value: "KPSL".
inline constexpr uint32_t kMmioVendorId = 0x4c53504b;

class MmioTransport : public BusDevice {
 public:
  // `memory` must outlive the transport; `irq` is the device's interrupt line.
  MmioTransport(std::unique_ptr<VirtioDevice> device, const GuestMemory* memory,
                std::unique_ptr<InterruptLine> irq);
  ~MmioTransport() override;

  MmioTransport(const MmioTransport&) = delete;
  MmioTransport& operator=(const MmioTransport&) = delete;

  // "virtio-mmio:<device name>".
  std::string name() const override;
  void Read(uint64_t offset, absl::Span<uint8_t> data) override;
  void Write(uint64_t offset, absl::Span<const uint8_t> data) override;

  // The driver notified queue `index` (from the ioeventfd, or a QueueNotify register write).
  // Ignored unless the device is active (DRIVER_OK) and the queue ready and not broken.
  void NotifyQueue(uint16_t index);

  uint16_t num_queues() const { return num_queues_; }
  // Whether the device reads its queues' notification eventfds itself
  // (VirtioDevice::owns_queue_notifications).
  bool device_owns_queue_notifications() const { return device_owns_notifications_; }
  // The queues' notification eventfds (one per queue, owned by the caller, who keeps them open as
  // long as the transport lives), handed to a device that owns its notifications at activation.
  void SetQueueNotifyFds(std::vector<int> fds);
  // Device status register (VIRTIO_CONFIG_S_* bits).
  uint32_t status() const;
  // Why the transport last set DEVICE_NEEDS_RESET (OK if it has not since the last reset).
  absl::Status last_error() const;

 private:
  uint32_t ReadRegister(uint64_t offset) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void WriteRegister(uint64_t offset, uint32_t value) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void WriteStatus(uint32_t value) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void ResetLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void ActivateLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void NotifyLocked(uint16_t index) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The queue the driver selected if it exists and may be configured now, else nullptr.
  Queue* ConfigurableQueue() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Sets DEVICE_NEEDS_RESET and raises a configuration-change interrupt.
  void NeedsReset(absl::Status why) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Raises the used-buffer interrupt if queue `index` needs one (Queue::TakeInterruptNeeded,
  // which must not run on two threads at once). Called after ProcessQueue, and by devices from
  // their backends' events under their own lock. In a VM both happen on the event loop thread:
  // every notification of an existing queue arrives through its ioeventfd (KVM matches every
  // aligned 4-byte write of a queue's index), so a QueueNotify write that reaches Write on a vCPU
  // thread names no queue.
  void SignalUsed(uint16_t index) ABSL_NO_THREAD_SAFETY_ANALYSIS;
  void RaiseInterrupt(uint32_t bits);

  const std::unique_ptr<VirtioDevice> device_;
  const GuestMemory* const memory_;
  const std::unique_ptr<InterruptLine> irq_;
  const uint64_t offered_features_;
  const uint16_t num_queues_;
  const bool device_owns_notifications_;

  mutable absl::Mutex mu_;
  // Fixed length (one per device queue); the device keeps a span of it while active.
  std::vector<Queue> queues_ ABSL_GUARDED_BY(mu_);
  uint32_t status_ ABSL_GUARDED_BY(mu_) = 0;
  uint32_t device_features_sel_ ABSL_GUARDED_BY(mu_) = 0;
  uint32_t driver_features_sel_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t acked_features_ ABSL_GUARDED_BY(mu_) = 0;
  uint32_t queue_sel_ ABSL_GUARDED_BY(mu_) = 0;
  bool activated_ ABSL_GUARDED_BY(mu_) = false;
  uint32_t config_generation_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<int> queue_notify_fds_ ABSL_GUARDED_BY(mu_);
  absl::Status last_error_ ABSL_GUARDED_BY(mu_);
  // Set from SignalUsed, which may run outside the lock.
  std::atomic<uint32_t> interrupt_status_{0};
};

}  // namespace kapsel::vmm::virtio

#endif  // KAPSEL_VMM_DEVICES_VIRTIO_MMIO_TRANSPORT_H_
