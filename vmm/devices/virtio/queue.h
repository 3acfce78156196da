// A split virtqueue (virtio 1.x, 2.7): the configuration the driver writes through the transport
// and the device's view of the rings (next available entry to take, next used entry to fill).
//
// The rings live in guest memory and the guest may scribble on them at any time. Ring-level
// inconsistencies (the available index running more than a queue's worth ahead, a head index out
// of range) cannot be answered through the used ring: the queue is marked broken and stops; the
// transport then asks the driver to reset the device. A malformed descriptor chain, in contrast,
// is handed to the device with an error status so it is returned unprocessed.
//
// Notification suppression (2.7.7, 2.7.10): without VIRTIO_RING_F_EVENT_IDX the driver always
// notifies and asks for no interrupts through VRING_AVAIL_F_NO_INTERRUPT. With it, the device
// publishes avail_event (after the used ring's entries) and the driver notifies only when its
// available index passes it; the driver publishes used_event (after the available ring's entries)
// and gets an interrupt only when the used index passes it. Pop keeps avail_event right for a
// device that processes until Pop finds nothing: it then asks for a notification at the next
// entry and looks once more (see Pop).
//
// Not thread-safe: the transport serializes access.
#ifndef KAPSEL_VMM_DEVICES_VIRTIO_QUEUE_H_
#define KAPSEL_VMM_DEVICES_VIRTIO_QUEUE_H_

#include <cstdint>
#include <optional>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "vmm/devices/virtio/descriptor_chain.h"
#include "vmm/memory/guest_memory.h"

namespace kapsel::vmm::virtio {

class Queue {
 public:
  // max_size must be a power of two in [1, 32768].
  explicit Queue(uint16_t max_size);

  uint16_t max_size() const { return max_size_; }

  // Driver-written configuration. The transport only changes it while the queue is not ready;
  // Activate validates it.
  uint16_t size() const { return size_; }
  void set_size(uint16_t size) { size_ = size; }
  bool ready() const { return ready_; }
  void set_ready(bool ready) { ready_ = ready; }
  GuestAddress desc_table() const { return desc_table_; }
  void set_desc_table(GuestAddress addr) { desc_table_ = addr; }
  GuestAddress avail_ring() const { return avail_ring_; }
  void set_avail_ring(GuestAddress addr) { avail_ring_ = addr; }
  GuestAddress used_ring() const { return used_ring_; }
  void set_used_ring(GuestAddress addr) { used_ring_ = addr; }

  // Checks the configuration (size a power of two no larger than max_size, rings aligned and
  // inside `memory`) and, if valid, starts device-side processing with the negotiated features.
  // `memory` must outlive the activation (until Reset).
  absl::Status Activate(const GuestMemory* memory, uint64_t features);
  bool active() const { return memory_ != nullptr; }
  // Set when the driver corrupted the rings; the queue then refuses all work until Reset.
  bool broken() const { return broken_; }
  // Why the queue broke (OK if it is not broken).
  const absl::Status& error() const { return error_; }
  // Back to the power-on state: not ready, size = max_size, addresses 0, indexes 0, inactive.
  void Reset();

  // Takes the next available chain. Returns nullopt when the driver has published nothing new, an
  // error when the queue is inactive or broken (it is marked broken on ring corruption). A chain
  // whose `status` is not OK is malformed and must be returned with AddUsed(head, 0).
  // With EVENT_IDX, nullopt also means the driver will notify for its next entry: before reporting
  // an empty ring Pop writes avail_event = the next index it will take and, after a full fence,
  // reads the available index again (an entry published before the driver could see avail_event
  // is returned, not left waiting for a notification that never comes). A device that waits for
  // the driver's notification must therefore have seen nullopt, or call NotifyOnNextAvail.
  absl::StatusOr<std::optional<DescriptorChain>> Pop();
  // Puts the last popped chain back (for devices that find they cannot serve it yet).
  void UndoPop();
  // Returns a chain to the driver: writes the used element and publishes the new used index
  // (release ordering: the element and the buffers' contents are visible before the index).
  absl::Status AddUsed(uint16_t head, uint32_t len);
  // A chain returned to the driver: its head and the bytes written into it.
  struct UsedChain {
    uint16_t head;
    uint32_t len;
  };
  // Returns several chains with one used-index update, so the driver sees all of them or none
  // (a frame spread over several rx buffers, VIRTIO_NET_F_MRG_RXBUF). Every head is checked
  // before anything is written.
  absl::Status AddUsed(absl::Span<const UsedChain> chains);
  // True if used elements were added since the last call and the driver wants an interrupt for
  // them: with EVENT_IDX, used_event lies among the used indexes published since the last call;
  // without, VRING_AVAIL_F_NO_INTERRUPT is clear. Either way, the range starts anew.
  bool TakeInterruptNeeded();
  // For a device that stops taking chains while some are pending and then waits for the driver's
  // next notification (e.g. its backend failed): with EVENT_IDX, asks for a notification when the
  // driver publishes its next entry (avail_event = the available index, re-read until stable).
  // Without EVENT_IDX the driver notifies anyway. Does nothing on an inactive or broken queue.
  void NotifyOnNextAvail();

  uint16_t last_avail_idx() const { return last_avail_idx_; }
  uint16_t used_idx() const { return used_idx_; }

 private:
  absl::Status Broken(absl::Status status);
  // Reads the driver's available index into known_avail_idx_ (acquire); breaks the queue if it
  // is more than a queue's worth ahead of last_avail_idx_.
  absl::Status ReadAvailIdx();
  // Writes avail_event (EVENT_IDX) and then issues a full fence, so that the next read of the
  // available index sees any entry published by a driver that read the old avail_event.
  void PublishAvailEvent(uint16_t value);
  // Pointers into the rings, validated and aligned at activation: the two ring indexes, the
  // available ring's used_event and the used ring's avail_event (after ring[size] of each).
  uint16_t* avail_idx_ptr() const;
  uint16_t* used_idx_ptr() const;
  uint16_t* used_event_ptr() const;
  uint16_t* avail_event_ptr() const;

  const uint16_t max_size_;
  uint16_t size_;
  bool ready_ = false;
  GuestAddress desc_table_ = 0;
  GuestAddress avail_ring_ = 0;
  GuestAddress used_ring_ = 0;

  const GuestMemory* memory_ = nullptr;  // set while active
  bool indirect_enabled_ = false;
  bool event_idx_enabled_ = false;
  bool broken_ = false;
  absl::Status error_;
  uint16_t last_avail_idx_ = 0;
  uint16_t known_avail_idx_ = 0;  // the driver's avail idx as last read
  uint16_t used_idx_ = 0;
  // The used index at the last TakeInterruptNeeded and how many elements were added since (more
  // than 65535 covers every used_event value).
  uint16_t signalled_used_idx_ = 0;
  uint32_t used_since_signal_ = 0;
  uint8_t* avail_host_ = nullptr;  // host mapping of the avail ring
  uint8_t* used_host_ = nullptr;   // host mapping of the used ring
};

}  // namespace kapsel::vmm::virtio

#endif  // KAPSEL_VMM_DEVICES_VIRTIO_QUEUE_H_
