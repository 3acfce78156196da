#include "vmm/devices/virtio/queue.h"

#include <linux/virtio_config.h>

#include <algorithm>
#include <atomic>
#include <bit>
#include <utility>

#include "absl/strings/str_format.h"
#include "common/status.h"
#include "vmm/devices/virtio/ring_abi.h"

namespace kapsel::vmm::virtio {
namespace {

// Split-ring layout (virtio 1.x, 2.7.2): sizes and alignments of the three parts.
constexpr uint64_t kDescAlign = 16;
constexpr uint64_t kAvailAlign = 2;
constexpr uint64_t kUsedAlign = 4;
constexpr uint64_t kDescSize = 16;
constexpr uint64_t kRingHeader = 4;  // flags, idx
constexpr uint64_t kAvailEntry = 2;
constexpr uint64_t kUsedEntry = 8;

uint64_t DescTableBytes(uint16_t size) { return kDescSize * size; }
// flags, idx, ring[size], used_event
uint64_t AvailRingBytes(uint16_t size) { return kRingHeader + kAvailEntry * size + 2; }
// flags, idx, ring[size], avail_event
uint64_t UsedRingBytes(uint16_t size) { return kRingHeader + kUsedEntry * size + 2; }

struct UsedElement {
  uint32_t id;
  uint32_t len;
};
static_assert(sizeof(UsedElement) == kUsedEntry);

// Whether an event index was passed when a ring index went from `old` to `now` (virtio 1.2,
// 2.7.7.2 and 2.7.10): `event` is one of old, old + 1, ..., now - 1, modulo 2^16.
bool EventPassed(uint16_t event, uint16_t now, uint16_t old) {
  return static_cast<uint16_t>(event - old) < static_cast<uint16_t>(now - old);
}

absl::Status CheckRing(const GuestMemory& memory, const char* what, GuestAddress addr,
                       uint64_t align, uint64_t bytes) {
  if (addr % align != 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s at %#x is not %d-byte aligned", what, addr, align));
  }
  absl::Status in_memory = memory.Translate(addr, bytes).status();
  if (!in_memory.ok()) return Annotate(in_memory, what);
  return absl::OkStatus();
}

}  // namespace

Queue::Queue(uint16_t max_size) : max_size_(max_size), size_(max_size) {}

absl::Status Queue::Activate(const GuestMemory* memory, uint64_t features) {
  if (size_ == 0 || size_ > max_size_ || !std::has_single_bit(size_)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("queue size %d is not a power of two in [1, %d]", size_, max_size_));
  }
  RETURN_IF_ERROR(
      CheckRing(*memory, "descriptor table", desc_table_, kDescAlign, DescTableBytes(size_)));
  RETURN_IF_ERROR(
      CheckRing(*memory, "available ring", avail_ring_, kAvailAlign, AvailRingBytes(size_)));
  RETURN_IF_ERROR(CheckRing(*memory, "used ring", used_ring_, kUsedAlign, UsedRingBytes(size_)));
  // Cannot fail after the checks above; the mappings stay put for the memory's lifetime.
  avail_host_ = *memory->Translate(avail_ring_, AvailRingBytes(size_));
  used_host_ = *memory->Translate(used_ring_, UsedRingBytes(size_));
  memory_ = memory;
  indirect_enabled_ = (features & (uint64_t{1} << kVirtioRingFIndirectDesc)) != 0;
  event_idx_enabled_ = (features & (uint64_t{1} << kVirtioRingFEventIdx)) != 0;
  broken_ = false;
  error_ = absl::OkStatus();
  last_avail_idx_ = 0;
  known_avail_idx_ = 0;
  used_idx_ = 0;
  signalled_used_idx_ = 0;
  used_since_signal_ = 0;
  // The used ring is the device's: whatever an earlier user of this memory left in avail_event,
  // the driver must notify for its first entry.
  if (event_idx_enabled_) PublishAvailEvent(0);
  return absl::OkStatus();
}

void Queue::Reset() {
  size_ = max_size_;
  ready_ = false;
  desc_table_ = 0;
  avail_ring_ = 0;
  used_ring_ = 0;
  memory_ = nullptr;
  indirect_enabled_ = false;
  event_idx_enabled_ = false;
  broken_ = false;
  error_ = absl::OkStatus();
  last_avail_idx_ = 0;
  known_avail_idx_ = 0;
  used_idx_ = 0;
  signalled_used_idx_ = 0;
  used_since_signal_ = 0;
  avail_host_ = nullptr;
  used_host_ = nullptr;
}

uint16_t* Queue::avail_idx_ptr() const { return reinterpret_cast<uint16_t*>(avail_host_ + 2); }

uint16_t* Queue::used_idx_ptr() const { return reinterpret_cast<uint16_t*>(used_host_ + 2); }

uint16_t* Queue::used_event_ptr() const {
  return reinterpret_cast<uint16_t*>(avail_host_ + kRingHeader + kAvailEntry * size_);
}

uint16_t* Queue::avail_event_ptr() const {
  return reinterpret_cast<uint16_t*>(used_host_ + kRingHeader + kUsedEntry * size_);
}

absl::Status Queue::Broken(absl::Status status) {
  broken_ = true;
  error_ = Annotate(status, "virtqueue broken, device needs reset");
  return error_;
}

absl::Status Queue::ReadAvailIdx() {
  // Acquire: the ring entries and descriptors the driver wrote before bumping idx are visible to
  // the reads that follow.
  known_avail_idx_ = __atomic_load_n(avail_idx_ptr(), __ATOMIC_ACQUIRE);
  const uint16_t pending = static_cast<uint16_t>(known_avail_idx_ - last_avail_idx_);
  if (pending > size_) {
    return Broken(absl::DataLossError(
        absl::StrFormat("available index %d is %d entries ahead of %d (queue size %d)",
                        known_avail_idx_, pending, last_avail_idx_, size_)));
  }
  return absl::OkStatus();
}

void Queue::PublishAvailEvent(uint16_t value) {
  __atomic_store_n(avail_event_ptr(), value, __ATOMIC_RELAXED);
  // Store avail_event, then load avail idx; the driver stores avail idx, then loads avail_event
  // (2.7.10). With a full fence on both sides, at least one of us sees the other's store.
  std::atomic_thread_fence(std::memory_order_seq_cst);
}

absl::StatusOr<std::optional<DescriptorChain>> Queue::Pop() {
  if (!active()) return absl::FailedPreconditionError("virtqueue is not active");
  if (broken_) return absl::FailedPreconditionError("virtqueue is broken");

  if (last_avail_idx_ == known_avail_idx_) {
    RETURN_IF_ERROR(ReadAvailIdx());
    if (last_avail_idx_ == known_avail_idx_ && event_idx_enabled_) {
      // Empty: the caller will wait for a notification. Ask for one at the next entry, then look
      // again in case the driver published it before it could see the request.
      PublishAvailEvent(last_avail_idx_);
      RETURN_IF_ERROR(ReadAvailIdx());
    }
    if (last_avail_idx_ == known_avail_idx_) return std::nullopt;
  }

  const GuestAddress slot = avail_ring_ + kRingHeader + kAvailEntry * (last_avail_idx_ % size_);
  absl::StatusOr<uint16_t> head = memory_->ReadObj<uint16_t>(slot);
  if (!head.ok()) return Broken(head.status());
  if (*head >= size_) {
    return Broken(absl::DataLossError(
        absl::StrFormat("available ring entry %d names descriptor %d (queue size %d)",
                        last_avail_idx_, *head, size_)));
  }
  ++last_avail_idx_;

  DescriptorChain chain;
  chain.head = *head;
  chain.status =
      ParseDescriptorChain(*memory_, {desc_table_, size_, indirect_enabled_}, *head, &chain);
  return chain;
}

void Queue::UndoPop() { --last_avail_idx_; }

absl::Status Queue::AddUsed(uint16_t head, uint32_t len) {
  const UsedChain chain{head, len};
  return AddUsed(absl::MakeConstSpan(&chain, 1));
}

absl::Status Queue::AddUsed(absl::Span<const UsedChain> chains) {
  if (!active()) return absl::FailedPreconditionError("virtqueue is not active");
  if (broken_) return absl::FailedPreconditionError("virtqueue is broken");
  if (chains.size() > size_) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%d used elements at once (queue size %d)", chains.size(), size_));
  }
  for (const UsedChain& chain : chains) {
    if (chain.head >= size_) {
      return absl::InvalidArgumentError(
          absl::StrFormat("used element for descriptor %d (queue size %d)", chain.head, size_));
    }
  }
  uint16_t idx = used_idx_;
  for (const UsedChain& chain : chains) {
    const GuestAddress slot = used_ring_ + kRingHeader + kUsedEntry * (idx % size_);
    absl::Status written = memory_->WriteObj(slot, UsedElement{chain.head, chain.len});
    if (!written.ok()) return Broken(written);
    ++idx;
  }
  used_idx_ = idx;
  // Release: the elements and the buffer contents are visible before the driver sees the index.
  __atomic_store_n(used_idx_ptr(), used_idx_, __ATOMIC_RELEASE);
  used_since_signal_ = static_cast<uint32_t>(
      std::min<uint64_t>(uint64_t{used_since_signal_} + chains.size(), UINT32_MAX));
  return absl::OkStatus();
}

bool Queue::TakeInterruptNeeded() {
  const uint16_t old = std::exchange(signalled_used_idx_, used_idx_);
  const uint32_t added = std::exchange(used_since_signal_, 0);
  if (added == 0 || !active()) return false;
  // The used index store must be ordered before the load of the driver's suppression state
  // (flags or used_event; 2.7.7.2): otherwise the driver may re-enable interrupts after checking
  // the used ring and never get one.
  std::atomic_thread_fence(std::memory_order_seq_cst);
  if (!event_idx_enabled_) {
    const uint16_t flags =
        __atomic_load_n(reinterpret_cast<uint16_t*>(avail_host_), __ATOMIC_RELAXED);
    return (flags & kVringAvailFNoInterrupt) == 0;
  }
  if (added > UINT16_MAX) return true;  // the used index went all the way round
  const uint16_t used_event = __atomic_load_n(used_event_ptr(), __ATOMIC_RELAXED);
  return EventPassed(used_event, used_idx_, old);
}

void Queue::NotifyOnNextAvail() {
  if (!active() || broken_ || !event_idx_enabled_) return;
  // avail_event must equal an available index the driver had after it could see avail_event:
  // then the driver's next publication passes it. If the index moved between the read and the
  // write, the driver may have checked the old avail_event; ask again for the newer index. A
  // driver that keeps moving it is not owed more than a queue's worth of rounds.
  for (uint32_t round = 0; round <= size_; ++round) {
    if (!ReadAvailIdx().ok()) return;
    const uint16_t seen = known_avail_idx_;
    PublishAvailEvent(seen);
    if (!ReadAvailIdx().ok() || known_avail_idx_ == seen) return;
  }
}

}  // namespace kapsel::vmm::virtio
