// Test helpers: guest memory, the driver side of a split virtqueue written straight into guest
// memory (as a guest kernel would), an MMIO driver that programs a transport through its register
// window, and a recording interrupt line.
#ifndef KAPSEL_TESTS_VMM_VIRTIO_VIRTIO_TEST_UTIL_H_
#define KAPSEL_TESTS_VMM_VIRTIO_VIRTIO_TEST_UTIL_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "vmm/devices/interrupt.h"
#include "vmm/devices/virtio/mmio_transport.h"
#include "vmm/devices/virtio/queue.h"
#include "vmm/memory/guest_memory.h"

namespace kapsel::vmm::virtio::testing {

// Guest RAM for tests: [0, 1 MiB) and [2 MiB, 2 MiB + 64 KiB), with a hole in between.
inline constexpr GuestAddress kRamEnd = 0x100000;
inline constexpr GuestAddress kHighRam = 0x200000;
inline constexpr uint64_t kHighRamSize = 0x10000;
// Default ring placement (room for 256 entries each) and a data area.
inline constexpr GuestAddress kDescTable = 0x1000;
inline constexpr GuestAddress kAvailRing = 0x3000;
inline constexpr GuestAddress kUsedRing = 0x4000;
inline constexpr GuestAddress kData = 0x10000;

std::unique_ptr<GuestMemory> MakeGuestMemory();

struct InterruptCount {
  std::atomic<int> triggers{0};
};

// Counts Trigger() calls into a counter the test keeps.
class RecordingInterrupt : public InterruptLine {
 public:
  explicit RecordingInterrupt(InterruptCount* count) : count_(count) {}
  void Trigger() override { ++count_->triggers; }

 private:
  InterruptCount* count_;
};

struct Buffer {
  GuestAddress addr;
  uint32_t len;
  bool writable;
};

struct UsedElem {
  uint32_t id;
  uint32_t len;
};

// The driver's half of one split virtqueue.
class FakeDriver {
 public:
  FakeDriver(const GuestMemory& memory, uint16_t size, GuestAddress desc = kDescTable,
             GuestAddress avail = kAvailRing, GuestAddress used = kUsedRing);

  uint16_t size() const { return size_; }
  GuestAddress desc() const { return desc_; }
  GuestAddress avail() const { return avail_; }
  GuestAddress used() const { return used_; }

  // Raw descriptor writes, in the queue's table or in an indirect table at `table`.
  void SetDescriptor(uint16_t index, GuestAddress addr, uint32_t len, uint16_t flags,
                     uint16_t next);
  void SetTableDescriptor(GuestAddress table, uint16_t index, GuestAddress addr, uint32_t len,
                          uint16_t flags, uint16_t next);
  // Writes `buffers` as a chain into consecutive free descriptors; returns the head.
  uint16_t AddChain(const std::vector<Buffer>& buffers);
  // Writes `buffers` as an indirect table at `table` and one descriptor pointing at it; returns
  // that descriptor's index.
  uint16_t AddIndirectChain(GuestAddress table, const std::vector<Buffer>& buffers);

  // Puts `head` in the next available slot and bumps the available index.
  void Publish(uint16_t head);
  void SetAvailIdx(uint16_t idx);
  void SetAvailEntry(uint16_t slot, uint16_t head);
  void SetAvailFlags(uint16_t flags);
  uint16_t avail_idx() const { return avail_idx_; }

  // VIRTIO_RING_F_EVENT_IDX: the driver's used_event (after the available ring's entries) and the
  // device's avail_event (after the used ring's entries).
  void SetUsedEvent(uint16_t idx);
  uint16_t AvailEvent() const;
  void SetAvailEvent(uint16_t idx);
  // Under EVENT_IDX, whether a driver whose available index went from `old` to avail_idx() must
  // notify the device: avail_event is among old, ..., avail_idx() - 1 (virtio 1.2, 2.7.10).
  // (Issues a full fence first, as a driver must between publishing and reading avail_event.)
  bool NotifyNeeded(uint16_t old) const;
  // NotifyNeeded for what was published since the last call: a driver under EVENT_IDX notifies
  // the device when this is true.
  bool TakeNotifyNeeded();

  uint16_t UsedIdx() const;
  UsedElem Used(uint16_t slot) const;

  // Points a queue at this driver's rings.
  void Configure(Queue& queue) const;

 private:
  const GuestMemory& memory_;
  uint16_t size_;
  GuestAddress desc_, avail_, used_;
  uint16_t next_free_ = 0;
  uint16_t avail_idx_ = 0;
  uint16_t notify_checked_idx_ = 0;  // avail_idx_ at the last TakeNotifyNeeded
};

// Programs a transport through its registers, as the Linux virtio-mmio driver does.
class MmioDriver {
 public:
  explicit MmioDriver(MmioTransport& transport) : transport_(transport) {}

  uint32_t Read32(uint64_t offset);
  void Write32(uint64_t offset, uint32_t value);
  uint64_t DeviceFeatures();
  void SetDriverFeatures(uint64_t features);
  void SetUpQueue(uint16_t index, const FakeDriver& driver);
  // ACKNOWLEDGE, DRIVER, features, FEATURES_OK; returns the status read back.
  uint32_t Negotiate(uint64_t features);
  // Negotiate(features), set up queue 0 from `driver`, DRIVER_OK; returns the final status.
  uint32_t Initialize(uint64_t features, const FakeDriver& driver);

 private:
  MmioTransport& transport_;
};

// A temporary file, removed when this goes out of scope.
class TempFile {
 public:
  // Creates a file of `size` bytes of a recognisable pattern (byte i = i * 7 + 3).
  explicit TempFile(uint64_t size);
  ~TempFile();
  TempFile(const TempFile&) = delete;
  TempFile& operator=(const TempFile&) = delete;

  const std::string& path() const { return path_; }
  std::vector<uint8_t> Contents() const;
  static uint8_t PatternByte(uint64_t offset) { return static_cast<uint8_t>(offset * 7 + 3); }

 private:
  std::string path_;
};

}  // namespace kapsel::vmm::virtio::testing

#endif  // KAPSEL_TESTS_VMM_VIRTIO_VIRTIO_TEST_UTIL_H_
