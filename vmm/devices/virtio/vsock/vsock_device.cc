#include "vmm/devices/virtio/vsock/vsock_device.h"

#include <endian.h>
#include <linux/virtio_config.h>
#include <linux/virtio_ids.h>

#include <array>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "vmm/devices/virtio/chain_io.h"
#include "vmm/devices/virtio/ring_abi.h"
#include "vmm/devices/virtio/vsock/packet.h"

namespace kapsel::vmm::virtio {

absl::StatusOr<std::unique_ptr<VsockDevice>> VsockDevice::Create(vsock::MuxerOptions options,
                                                                 EventLoop* loop) {
  if (options.guest_cid < kMinGuestCid || options.guest_cid >= UINT32_MAX) {
    return absl::InvalidArgumentError(
        absl::StrCat("vsock: guest CID ", options.guest_cid, " is reserved (want 3..2^32-2)"));
  }
  const uint64_t cid = options.guest_cid;
  absl::StatusOr<std::unique_ptr<vsock::Muxer>> muxer =
      vsock::Muxer::Create(std::move(options), loop);
  if (!muxer.ok()) return muxer.status();
  auto device = std::unique_ptr<VsockDevice>(new VsockDevice(cid, *std::move(muxer)));
  VsockDevice* raw = device.get();
  device->muxer_->SetRxReadyCallback([raw] { raw->OnRxReady(); });
  return device;
}

VsockDevice::VsockDevice(uint64_t guest_cid, std::unique_ptr<vsock::Muxer> muxer)
    : guest_cid_(guest_cid), muxer_(std::move(muxer)), payload_(vsock::kMaxPayload + 1) {}

VsockDevice::~VsockDevice() {
  // The muxer's destructor closes every socket; its callback must not reach a half-destroyed
  // device, and the event loop is not running handlers while the VMM tears down.
  muxer_->SetRxReadyCallback(nullptr);
}

uint32_t VsockDevice::device_type() const { return VIRTIO_ID_VSOCK; }

uint64_t VsockDevice::device_features() const {
  // EVENT_IDX: tx is processed until Pop finds nothing, and rx waits for the driver only after
  // Pop found no buffer, so avail_event is always current when a notification is awaited.
  return (uint64_t{1} << VIRTIO_F_VERSION_1) | (uint64_t{1} << kVirtioRingFIndirectDesc) |
         (uint64_t{1} << kVirtioRingFEventIdx);
}

void VsockDevice::ReadConfig(uint64_t offset, absl::Span<uint8_t> data) {
  const uint64_t cid = htole64(guest_cid_);
  std::array<uint8_t, sizeof(cid)> image;
  std::memcpy(image.data(), &cid, sizeof(cid));
  ReadConfigImage(image, offset, data);
}

absl::Status VsockDevice::Activate(ActivateContext context) {
  if (context.queues.size() != 3) {
    return absl::InvalidArgumentError("virtio-vsock: expected three queues");
  }
  if (!context.queues[kRxQueue].active() || !context.queues[kTxQueue].active()) {
    return absl::InvalidArgumentError("virtio-vsock: the rx and tx queues must be enabled");
  }
  absl::MutexLock lock(&mu_);
  memory_ = context.memory;
  rx_ = &context.queues[kRxQueue];
  tx_ = &context.queues[kTxQueue];
  signal_used_ = std::move(context.signal_used);
  return absl::OkStatus();
}

void VsockDevice::Reset() {
  absl::MutexLock lock(&mu_);
  memory_ = nullptr;
  rx_ = nullptr;
  tx_ = nullptr;
  signal_used_ = nullptr;
  muxer_->Reset();
}

void VsockDevice::ProcessQueue(uint16_t index) {
  absl::MutexLock lock(&mu_);
  if (memory_ == nullptr) return;
  // The transport signals queue `index` afterwards; rx needs its own signal when tx made room
  // for answers.
  if (index == kTxQueue) {
    ProcessTx();
    if (ProcessRx() && signal_used_) signal_used_(kRxQueue);
  } else if (index == kRxQueue) {
    ProcessRx();  // new buffers: resume what waited for them
  }
}

void VsockDevice::OnRxReady() {
  absl::MutexLock lock(&mu_);
  if (memory_ == nullptr) return;
  if (ProcessRx() && signal_used_) signal_used_(kRxQueue);
}

void VsockDevice::ProcessTx() {
  while (true) {
    absl::StatusOr<std::optional<DescriptorChain>> popped = tx_->Pop();
    if (!popped.ok() || !popped->has_value()) return;
    const DescriptorChain& chain = **popped;
    if (chain.status.ok()) {
      ChainReader reader(*memory_, chain);
      std::array<uint8_t, vsock::kHeaderSize> raw;
      if (reader.Read(absl::MakeSpan(raw)).ok()) {
        absl::StatusOr<vsock::PacketHeader> header = vsock::DecodeHeader(raw);
        // Never more than kMaxPayload + 1 bytes: enough to see that a packet is too long.
        const size_t n = std::min<uint64_t>(reader.remaining(), payload_.size());
        if (header.ok() && reader.Read(absl::MakeSpan(payload_.data(), n)).ok()) {
          muxer_->OnGuestPacket(*header, absl::MakeConstSpan(payload_.data(), n));
        }
      }
    }
    if (!tx_->AddUsed(chain.head, 0).ok()) return;
  }
}

bool VsockDevice::ProcessRx() {
  bool used = false;
  while (muxer_->HasRxPacket()) {
    absl::StatusOr<std::optional<DescriptorChain>> popped = rx_->Pop();
    if (!popped.ok() || !popped->has_value()) break;  // resumed by the next rx notify
    const DescriptorChain& chain = **popped;
    if (!chain.status.ok() || chain.writable_bytes < vsock::kHeaderSize) {
      if (!rx_->AddUsed(chain.head, 0).ok()) break;  // unusable buffer: give it back
      used = true;
      continue;
    }
    absl::Span<const uint8_t> packet = muxer_->NextRxPacket(chain.writable_bytes);
    if (packet.empty()) {
      rx_->UndoPop();
      break;
    }
    ChainWriter writer(*memory_, chain);
    const uint32_t len = writer.Write(packet).ok() ? static_cast<uint32_t>(packet.size()) : 0;
    if (!rx_->AddUsed(chain.head, len).ok()) break;
    used = true;
  }
  return used;
}

}  // namespace kapsel::vmm::virtio
