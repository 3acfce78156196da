// The interface between a virtio device model (block, rng, vsock, net, ...) and its transport.
// The transport (virtio-mmio here) owns the queues, negotiates features and drives the status
// state machine; the device sees only the calls below. The transport serializes them: a device
// needs no lock of its own for state touched only from these calls.
#ifndef KAPSEL_VMM_DEVICES_VIRTIO_VIRTIO_DEVICE_H_
#define KAPSEL_VMM_DEVICES_VIRTIO_VIRTIO_DEVICE_H_

#include <cstdint>
#include <functional>
#include <string>

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "vmm/devices/virtio/queue.h"
#include "vmm/memory/guest_memory.h"

namespace kapsel::vmm::virtio {

// What a device gets when the driver sets DRIVER_OK. Everything stays valid until Reset().
struct ActivateContext {
  const GuestMemory* memory = nullptr;
  // One per queue the device declared. Queues the driver did not enable are !ready() and inactive.
  absl::Span<Queue> queues;
  // Features the driver acknowledged (a subset of device_features()).
  uint64_t acked_features = 0;
  // Tells the driver that queue `index` has new used buffers (raises the used-buffer interrupt if
  // the queue added any and the driver wants one). The transport calls it after every
  // ProcessQueue, so a device only needs it when it completes requests elsewhere (for example
  // from its own backend's file descriptor); it is safe from any thread.
  std::function<void(uint16_t index)> signal_used;
  // Only for a device that owns_queue_notifications(): one eventfd per queue, signalled (by KVM's
  // ioeventfd) when the driver notifies that queue. Owned by the VMM; valid until Reset.
  absl::Span<const int> queue_notify_fds;
  // Raises the used-buffer interrupt unconditionally (sets the VRING bit of InterruptStatus). For
  // devices whose backend fills the used ring itself and has already decided that the driver
  // wants an interrupt (vhost-user's call eventfd); safe from any thread.
  std::function<void()> raise_used_interrupt;
};

class VirtioDevice {
 public:
  virtual ~VirtioDevice() = default;

  // Short name for logs and errors ("virtio-blk").
  virtual std::string name() const = 0;
  // VIRTIO_ID_* from <linux/virtio_ids.h>.
  virtual uint32_t device_type() const = 0;
  // Feature bits offered; must include VIRTIO_F_VERSION_1.
  virtual uint64_t device_features() const = 0;
  virtual uint16_t num_queues() const = 0;
  // Largest size of queue `index` (a power of two); index < num_queues().
  virtual uint16_t max_queue_size(uint16_t index) const = 0;
  // True for a device whose queues are served by another process (vhost-user): the VMM then does
  // not watch the queues' notification eventfds itself but hands them to the device at Activate
  // (ActivateContext::queue_notify_fds), so notifications go from KVM straight to the backend.
  virtual bool owns_queue_notifications() const { return false; }

  // Device-specific configuration space. Offsets are relative to its start; reads beyond the
  // structure return zeros and writes beyond it (or to read-only fields) are ignored.
  virtual void ReadConfig(uint64_t offset, absl::Span<uint8_t> data) = 0;
  virtual void WriteConfig(uint64_t offset, absl::Span<const uint8_t> data) = 0;

  // The driver set DRIVER_OK. An error makes the transport ask the driver to reset the device.
  virtual absl::Status Activate(ActivateContext context) = 0;
  // The driver notified queue `index` (the queue is active and ready).
  virtual void ProcessQueue(uint16_t index) = 0;
  // The driver reset the device: drop the context and go back to the pre-Activate state. Called
  // on every reset, also when the device was never activated.
  virtual void Reset() = 0;
};

// ReadConfig helper for a device whose configuration is a plain byte image: copies the part of
// [offset, offset + data.size()) that overlaps `config` and zero-fills the rest.
void ReadConfigImage(absl::Span<const uint8_t> config, uint64_t offset, absl::Span<uint8_t> data);

}  // namespace kapsel::vmm::virtio

#endif  // KAPSEL_VMM_DEVICES_VIRTIO_VIRTIO_DEVICE_H_
