#include "vmm/devices/virtio/mmio_transport.h"

#include <linux/virtio_config.h>
#include <linux/virtio_mmio.h>

#include <cstdio>
#include <cstring>
#include <utility>

#include "absl/strings/str_format.h"
#include "common/status.h"

namespace kapsel::vmm::virtio {
namespace {

constexpr uint32_t kMagic = 0x74726976;  // "virt"
constexpr uint32_t kVersion = 2;
constexpr uint64_t kVersion1 = uint64_t{1} << VIRTIO_F_VERSION_1;
// Status bits the driver owns; DEVICE_NEEDS_RESET is the device's.
constexpr uint32_t kDriverStatusBits = VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER |
                                       VIRTIO_CONFIG_S_FEATURES_OK | VIRTIO_CONFIG_S_DRIVER_OK |
                                       VIRTIO_CONFIG_S_FAILED;

uint32_t Low(uint64_t value) { return static_cast<uint32_t>(value); }
uint32_t High(uint64_t value) { return static_cast<uint32_t>(value >> 32); }
uint64_t WithLow(uint64_t value, uint32_t low) { return (value & ~uint64_t{UINT32_MAX}) | low; }
uint64_t WithHigh(uint64_t value, uint32_t high) {
  return (value & UINT32_MAX) | (uint64_t{high} << 32);
}

std::vector<Queue> MakeQueues(const VirtioDevice& device) {
  std::vector<Queue> queues;
  queues.reserve(device.num_queues());
  for (uint16_t i = 0; i < device.num_queues(); ++i) queues.emplace_back(device.max_queue_size(i));
  return queues;
}

}  // namespace

MmioTransport::MmioTransport(std::unique_ptr<VirtioDevice> device, const GuestMemory* memory,
                             std::unique_ptr<InterruptLine> irq)
    : device_(std::move(device)),
      memory_(memory),
      irq_(std::move(irq)),
      offered_features_(device_->device_features() | kVersion1),
      num_queues_(device_->num_queues()),
      device_owns_notifications_(device_->owns_queue_notifications()),
      queues_(MakeQueues(*device_)) {}

void MmioTransport::SetQueueNotifyFds(std::vector<int> fds) {
  absl::MutexLock lock(&mu_);
  queue_notify_fds_ = std::move(fds);
}

MmioTransport::~MmioTransport() {
  absl::MutexLock lock(&mu_);
  device_->Reset();
}

std::string MmioTransport::name() const { return "virtio-mmio:" + device_->name(); }

uint32_t MmioTransport::status() const {
  absl::MutexLock lock(&mu_);
  return status_;
}

absl::Status MmioTransport::last_error() const {
  absl::MutexLock lock(&mu_);
  return last_error_;
}

void MmioTransport::Read(uint64_t offset, absl::Span<uint8_t> data) {
  absl::MutexLock lock(&mu_);
  if (offset >= VIRTIO_MMIO_CONFIG) {
    device_->ReadConfig(offset - VIRTIO_MMIO_CONFIG, data);
    return;
  }
  std::memset(data.data(), 0, data.size());
  if (data.size() != sizeof(uint32_t) || offset % sizeof(uint32_t) != 0) return;
  const uint32_t value = ReadRegister(offset);
  std::memcpy(data.data(), &value, sizeof(value));
}

void MmioTransport::Write(uint64_t offset, absl::Span<const uint8_t> data) {
  absl::MutexLock lock(&mu_);
  if (offset >= VIRTIO_MMIO_CONFIG) {
    device_->WriteConfig(offset - VIRTIO_MMIO_CONFIG, data);
    return;
  }
  if (data.size() != sizeof(uint32_t) || offset % sizeof(uint32_t) != 0) return;
  uint32_t value;
  std::memcpy(&value, data.data(), sizeof(value));
  WriteRegister(offset, value);
}

uint32_t MmioTransport::ReadRegister(uint64_t offset) {
  const bool queue_exists = queue_sel_ < queues_.size();
  switch (offset) {
    case VIRTIO_MMIO_MAGIC_VALUE:
      return kMagic;
    case VIRTIO_MMIO_VERSION:
      return kVersion;
    case VIRTIO_MMIO_DEVICE_ID:
      return device_->device_type();
    case VIRTIO_MMIO_VENDOR_ID:
      return kMmioVendorId;
    case VIRTIO_MMIO_DEVICE_FEATURES:
      if (device_features_sel_ == 0) return Low(offered_features_);
      if (device_features_sel_ == 1) return High(offered_features_);
      return 0;
    case VIRTIO_MMIO_QUEUE_NUM_MAX:
      return queue_exists ? queues_[queue_sel_].max_size() : 0;
    case VIRTIO_MMIO_QUEUE_READY:
      return queue_exists && queues_[queue_sel_].ready() ? 1 : 0;
    case VIRTIO_MMIO_INTERRUPT_STATUS:
      return interrupt_status_.load();
    case VIRTIO_MMIO_STATUS:
      return status_;
    case VIRTIO_MMIO_SHM_LEN_LOW:
    case VIRTIO_MMIO_SHM_LEN_HIGH:
      return UINT32_MAX;  // no shared memory regions: length -1
    case VIRTIO_MMIO_CONFIG_GENERATION:
      return config_generation_;
    default:
      return 0;  // write-only, legacy or unknown
  }
}

Queue* MmioTransport::ConfigurableQueue() {
  if (queue_sel_ >= queues_.size() || (status_ & VIRTIO_CONFIG_S_DRIVER_OK) != 0) return nullptr;
  Queue& queue = queues_[queue_sel_];
  return queue.ready() ? nullptr : &queue;
}

void MmioTransport::WriteRegister(uint64_t offset, uint32_t value) {
  switch (offset) {
    case VIRTIO_MMIO_DEVICE_FEATURES_SEL:
      device_features_sel_ = value;
      return;
    case VIRTIO_MMIO_DRIVER_FEATURES:
      if ((status_ & VIRTIO_CONFIG_S_FEATURES_OK) != 0) return;
      if (driver_features_sel_ == 0) acked_features_ = WithLow(acked_features_, value);
      if (driver_features_sel_ == 1) acked_features_ = WithHigh(acked_features_, value);
      return;
    case VIRTIO_MMIO_DRIVER_FEATURES_SEL:
      driver_features_sel_ = value;
      return;
    case VIRTIO_MMIO_QUEUE_SEL:
      queue_sel_ = value;
      return;
    case VIRTIO_MMIO_QUEUE_NUM:
      if (Queue* q = ConfigurableQueue()) {
        q->set_size(value > UINT16_MAX ? 0 : static_cast<uint16_t>(value));  // 0: invalid
      }
      return;
    case VIRTIO_MMIO_QUEUE_READY:
      // Queues are set up before DRIVER_OK; we do not offer VIRTIO_F_RING_RESET.
      if (queue_sel_ < queues_.size() && (status_ & VIRTIO_CONFIG_S_DRIVER_OK) == 0) {
        queues_[queue_sel_].set_ready(value == 1);
      }
      return;
    case VIRTIO_MMIO_QUEUE_NOTIFY:
      if (value <= UINT16_MAX) NotifyLocked(static_cast<uint16_t>(value));
      return;
    case VIRTIO_MMIO_INTERRUPT_ACK:
      interrupt_status_.fetch_and(~value);
      return;
    case VIRTIO_MMIO_STATUS:
      WriteStatus(value);
      return;
    case VIRTIO_MMIO_QUEUE_DESC_LOW:
      if (Queue* q = ConfigurableQueue()) q->set_desc_table(WithLow(q->desc_table(), value));
      return;
    case VIRTIO_MMIO_QUEUE_DESC_HIGH:
      if (Queue* q = ConfigurableQueue()) q->set_desc_table(WithHigh(q->desc_table(), value));
      return;
    case VIRTIO_MMIO_QUEUE_AVAIL_LOW:
      if (Queue* q = ConfigurableQueue()) q->set_avail_ring(WithLow(q->avail_ring(), value));
      return;
    case VIRTIO_MMIO_QUEUE_AVAIL_HIGH:
      if (Queue* q = ConfigurableQueue()) q->set_avail_ring(WithHigh(q->avail_ring(), value));
      return;
    case VIRTIO_MMIO_QUEUE_USED_LOW:
      if (Queue* q = ConfigurableQueue()) q->set_used_ring(WithLow(q->used_ring(), value));
      return;
    case VIRTIO_MMIO_QUEUE_USED_HIGH:
      if (Queue* q = ConfigurableQueue()) q->set_used_ring(WithHigh(q->used_ring(), value));
      return;
    default:
      return;  // read-only, legacy or unknown
  }
}

void MmioTransport::WriteStatus(uint32_t value) {
  if (value == 0) {
    ResetLocked();
    return;
  }
  const uint32_t driver_bits = value & kDriverStatusBits;
  // Only a reset clears bits (3.1.1: the driver must not clear a status bit).
  if ((status_ & kDriverStatusBits & ~driver_bits) != 0) return;
  uint32_t new_bits = driver_bits & ~status_;

  if ((new_bits & VIRTIO_CONFIG_S_FEATURES_OK) != 0) {
    const bool subset = (acked_features_ & ~offered_features_) == 0;
    const bool modern = (acked_features_ & kVersion1) != 0;
    // Leaving FEATURES_OK clear tells the driver the features were refused (3.1.1 step 6).
    if (!subset || !modern) new_bits &= ~VIRTIO_CONFIG_S_FEATURES_OK;
  }
  if ((new_bits & VIRTIO_CONFIG_S_DRIVER_OK) != 0 &&
      ((status_ | new_bits) & VIRTIO_CONFIG_S_FEATURES_OK) == 0) {
    new_bits &= ~VIRTIO_CONFIG_S_DRIVER_OK;
  }
  status_ |= new_bits;
  if ((new_bits & VIRTIO_CONFIG_S_DRIVER_OK) != 0) ActivateLocked();
}

void MmioTransport::ActivateLocked() {
  for (size_t i = 0; i < queues_.size(); ++i) {
    Queue& queue = queues_[i];
    if (!queue.ready()) continue;
    absl::Status status = queue.Activate(memory_, acked_features_);
    if (!status.ok()) {
      NeedsReset(Annotate(status, absl::StrFormat("%s: queue %d", name(), i)));
      return;
    }
  }
  ActivateContext context;
  context.memory = memory_;
  context.queues = absl::MakeSpan(queues_);
  context.acked_features = acked_features_;
  context.signal_used = [this](uint16_t index) { SignalUsed(index); };
  if (device_owns_notifications_) {
    if (queue_notify_fds_.size() != queues_.size()) {
      NeedsReset(absl::InternalError(
          absl::StrFormat("%s: no queue notification eventfds were set up", name())));
      return;
    }
    context.queue_notify_fds = queue_notify_fds_;
  }
  context.raise_used_interrupt = [this] { RaiseInterrupt(VIRTIO_MMIO_INT_VRING); };
  absl::Status status = device_->Activate(std::move(context));
  if (!status.ok()) {
    NeedsReset(Annotate(status, absl::StrFormat("%s: activation", name())));
    return;
  }
  activated_ = true;
}

void MmioTransport::ResetLocked() {
  device_->Reset();
  for (Queue& queue : queues_) queue.Reset();
  status_ = 0;
  device_features_sel_ = 0;
  driver_features_sel_ = 0;
  acked_features_ = 0;
  queue_sel_ = 0;
  activated_ = false;
  last_error_ = absl::OkStatus();
  interrupt_status_.store(0);
}

void MmioTransport::NotifyQueue(uint16_t index) {
  absl::MutexLock lock(&mu_);
  NotifyLocked(index);
}

void MmioTransport::NotifyLocked(uint16_t index) {
  if (!activated_ || (status_ & VIRTIO_CONFIG_S_NEEDS_RESET) != 0 || index >= queues_.size()) {
    return;
  }
  Queue& queue = queues_[index];
  if (!queue.ready() || !queue.active() || queue.broken()) return;
  device_->ProcessQueue(index);
  SignalUsed(index);
  if (queue.broken()) {
    NeedsReset(Annotate(queue.error(), absl::StrFormat("%s: queue %d", name(), index)));
  }
}

void MmioTransport::NeedsReset(absl::Status why) {
  last_error_ = std::move(why);
  status_ |= VIRTIO_CONFIG_S_NEEDS_RESET;
  ++config_generation_;
  RaiseInterrupt(VIRTIO_MMIO_INT_CONFIG);
}

void MmioTransport::SignalUsed(uint16_t index) {
  // The span handed to the device never changes length, so no lock is needed to index it; the
  // device serializes its own use of the queue.
  if (index >= num_queues_) return;
  if (queues_[index].TakeInterruptNeeded()) RaiseInterrupt(VIRTIO_MMIO_INT_VRING);
}

void MmioTransport::RaiseInterrupt(uint32_t bits) {
  interrupt_status_.fetch_or(bits);
  irq_->Trigger();
}

}  // namespace kapsel::vmm::virtio
