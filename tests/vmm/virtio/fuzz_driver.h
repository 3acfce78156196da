// Driver-side helpers for the virtio device fuzzers, which play the guest's driver: the
// virtio-mmio register offsets, an interrupt line that goes nowhere, the initialization sequence,
// and the driver's half of split virtqueues laid out in guest memory. Header-only and free of
// gtest (virtio_test_util.h is the gtest-based counterpart for unit tests).
//
// Guest memory accesses that fail (an address outside guest RAM) are ignored: fuzzers point
// buffers, and sometimes descriptors, anywhere on purpose.
#ifndef KAPSEL_TESTS_VMM_VIRTIO_FUZZ_DRIVER_H_
#define KAPSEL_TESTS_VMM_VIRTIO_FUZZ_DRIVER_H_

#include <linux/virtio_config.h>
#include <linux/virtio_mmio.h>

#include <cstdint>
#include <cstring>

#include "absl/types/span.h"
#include "vmm/devices/interrupt.h"
#include "vmm/devices/virtio/mmio_transport.h"
#include "vmm/memory/guest_memory.h"

namespace kapsel::vmm::virtio::fuzzing {

// Register offsets (<linux/virtio_mmio.h>).
inline constexpr uint64_t kDriverFeatures = VIRTIO_MMIO_DRIVER_FEATURES;
inline constexpr uint64_t kDriverFeaturesSel = VIRTIO_MMIO_DRIVER_FEATURES_SEL;
inline constexpr uint64_t kQueueSel = VIRTIO_MMIO_QUEUE_SEL;
inline constexpr uint64_t kQueueNum = VIRTIO_MMIO_QUEUE_NUM;
inline constexpr uint64_t kQueueReady = VIRTIO_MMIO_QUEUE_READY;
inline constexpr uint64_t kQueueNotify = VIRTIO_MMIO_QUEUE_NOTIFY;
inline constexpr uint64_t kStatus = VIRTIO_MMIO_STATUS;
inline constexpr uint64_t kQueueDescLow = VIRTIO_MMIO_QUEUE_DESC_LOW;
inline constexpr uint64_t kQueueDescHigh = VIRTIO_MMIO_QUEUE_DESC_HIGH;
inline constexpr uint64_t kQueueAvailLow = VIRTIO_MMIO_QUEUE_AVAIL_LOW;
inline constexpr uint64_t kQueueAvailHigh = VIRTIO_MMIO_QUEUE_AVAIL_HIGH;
inline constexpr uint64_t kQueueUsedLow = VIRTIO_MMIO_QUEUE_USED_LOW;
inline constexpr uint64_t kQueueUsedHigh = VIRTIO_MMIO_QUEUE_USED_HIGH;

class NoInterrupt : public InterruptLine {
 public:
  void Trigger() override {}
};

// The driver's half of one split virtqueue: where its descriptor table and rings are in guest
// memory, its size (not 0), and the driver's cursors.
struct Ring {
  GuestAddress desc = 0;
  GuestAddress avail = 0;
  GuestAddress used = 0;
  uint16_t size = 0;
  uint16_t next_desc = 0;  // the next descriptor to fill
  uint16_t avail_idx = 0;  // the available ring's idx as last published
  uint16_t used_seen = 0;  // used elements the driver has looked at

  // The next descriptor to fill; advances next_desc, wrapping at the end of the table.
  uint16_t TakeDescriptor() {
    const uint16_t index = next_desc;
    next_desc = static_cast<uint16_t>((next_desc + 1) % size);
    return index;
  }
};

inline void WriteRegister(MmioTransport& transport, uint64_t offset, uint32_t value) {
  transport.Write(offset, absl::Span<const uint8_t>(reinterpret_cast<const uint8_t*>(&value), 4));
}

// Resets the device and initializes it as a driver does (virtio 1.2, 3.1.1): ACKNOWLEDGE, DRIVER,
// `features`, FEATURES_OK, `rings[i]` as queue i (with its cursors reset), DRIVER_OK. The status
// is not read back: a device that refuses the features or a queue just stays inactive.
inline void Start(MmioTransport& transport, uint64_t features, absl::Span<Ring> rings) {
  constexpr uint32_t kAcknowledge = VIRTIO_CONFIG_S_ACKNOWLEDGE;
  constexpr uint32_t kDriver = kAcknowledge | VIRTIO_CONFIG_S_DRIVER;
  constexpr uint32_t kFeaturesOk = kDriver | VIRTIO_CONFIG_S_FEATURES_OK;
  constexpr uint32_t kDriverOk = kFeaturesOk | VIRTIO_CONFIG_S_DRIVER_OK;
  WriteRegister(transport, kStatus, 0);
  WriteRegister(transport, kStatus, kAcknowledge);
  WriteRegister(transport, kStatus, kDriver);
  WriteRegister(transport, kDriverFeaturesSel, 0);
  WriteRegister(transport, kDriverFeatures, static_cast<uint32_t>(features));
  WriteRegister(transport, kDriverFeaturesSel, 1);
  WriteRegister(transport, kDriverFeatures, static_cast<uint32_t>(features >> 32));
  WriteRegister(transport, kStatus, kFeaturesOk);
  for (size_t q = 0; q < rings.size(); ++q) {
    Ring& ring = rings[q];
    ring.next_desc = 0;
    ring.avail_idx = 0;
    ring.used_seen = 0;
    WriteRegister(transport, kQueueSel, static_cast<uint32_t>(q));
    WriteRegister(transport, kQueueNum, ring.size);
    WriteRegister(transport, kQueueDescLow, static_cast<uint32_t>(ring.desc));
    WriteRegister(transport, kQueueDescHigh, static_cast<uint32_t>(ring.desc >> 32));
    WriteRegister(transport, kQueueAvailLow, static_cast<uint32_t>(ring.avail));
    WriteRegister(transport, kQueueAvailHigh, static_cast<uint32_t>(ring.avail >> 32));
    WriteRegister(transport, kQueueUsedLow, static_cast<uint32_t>(ring.used));
    WriteRegister(transport, kQueueUsedHigh, static_cast<uint32_t>(ring.used >> 32));
    WriteRegister(transport, kQueueReady, 1);
  }
  WriteRegister(transport, kStatus, kDriverOk);
}

// Writes descriptor `index` (modulo the ring's size) of the ring's table.
inline void PutDescriptor(const GuestMemory& memory, const Ring& ring, uint16_t index,
                          GuestAddress addr, uint32_t len, uint16_t flags, uint16_t next) {
  uint8_t raw[16];
  std::memcpy(raw, &addr, 8);
  std::memcpy(raw + 8, &len, 4);
  std::memcpy(raw + 12, &flags, 2);
  std::memcpy(raw + 14, &next, 2);
  (void)memory.Write(ring.desc + 16 * uint64_t{static_cast<uint16_t>(index % ring.size)}, raw,
                     sizeof(raw));
}

// Puts `head` in the next slot of the available ring and publishes it (bumps the ring's idx).
inline void PublishHead(const GuestMemory& memory, Ring& ring, uint16_t head) {
  (void)memory.WriteObj<uint16_t>(ring.avail + 4 + 2 * uint64_t(ring.avail_idx % ring.size), head);
  ++ring.avail_idx;
  (void)memory.WriteObj<uint16_t>(ring.avail + 2, ring.avail_idx);
}

// The used ring's idx; 0 if it cannot be read.
inline uint16_t UsedIdx(const GuestMemory& memory, const Ring& ring) {
  return memory.ReadObj<uint16_t>(ring.used + 2).value_or(0);
}

// The length in used element `slot` (modulo the ring's size); 0 if it cannot be read.
inline uint32_t UsedLen(const GuestMemory& memory, const Ring& ring, uint16_t slot) {
  return memory.ReadObj<uint32_t>(ring.used + 4 + 8 * uint64_t(slot % ring.size) + 4).value_or(0);
}

}  // namespace kapsel::vmm::virtio::fuzzing

#endif  // KAPSEL_TESTS_VMM_VIRTIO_FUZZ_DRIVER_H_
