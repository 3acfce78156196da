// virtio-vsock (virtio 1.x section 5.10) with the host side over Unix sockets ("hybrid vsock",
// as Firecracker does it; see muxer.h for the protocol). Three queues: rx (packets to the guest),
// tx (packets from the guest) and event (unused: we never post transport events).
//
// Threads: ProcessQueue, Activate and Reset come through the transport (under its lock); the
// muxer's socket handlers run on the event loop and ask the device to fill rx buffers. The
// device's own mutex serializes both, and after Reset nothing touches the queues.
#ifndef KAPSEL_VMM_DEVICES_VIRTIO_VSOCK_VSOCK_DEVICE_H_
#define KAPSEL_VMM_DEVICES_VIRTIO_VSOCK_VSOCK_DEVICE_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "vmm/devices/virtio/virtio_device.h"
#include "vmm/devices/virtio/vsock/muxer.h"
#include "vmm/event_loop.h"

namespace kapsel::vmm::virtio {

class VsockDevice : public VirtioDevice {
 public:
  static constexpr uint16_t kRxQueue = 0;
  static constexpr uint16_t kTxQueue = 1;
  static constexpr uint16_t kEventQueue = 2;
  static constexpr uint16_t kQueueSize = 256;
  // The rx queue is smaller: Linux fills it with 4 KiB buffers that it keeps for good (256 of them
  // held 1 MiB of guest memory). 64 still leave 256 KiB in flight towards the guest, whose data
  // is mostly small (ttrpc requests, stdin).
  static constexpr uint16_t kRxQueueSize = 64;
  // Guest CIDs 0-2 are reserved (hypervisor, local, host); -1U is VMADDR_CID_ANY.
  static constexpr uint64_t kMinGuestCid = 3;

  // Listens on options.uds_path; `loop` serves the sockets and must outlive the device.
  static absl::StatusOr<std::unique_ptr<VsockDevice>> Create(vsock::MuxerOptions options,
                                                             EventLoop* loop);
  ~VsockDevice() override;

  std::string name() const override { return "virtio-vsock"; }
  uint32_t device_type() const override;
  uint64_t device_features() const override;
  uint16_t num_queues() const override { return 3; }
  uint16_t max_queue_size(uint16_t index) const override {
    return index == kRxQueue ? kRxQueueSize : kQueueSize;
  }
  // struct virtio_vsock_config: the guest's CID.
  void ReadConfig(uint64_t offset, absl::Span<uint8_t> data) override;
  void WriteConfig(uint64_t, absl::Span<const uint8_t>) override {}
  absl::Status Activate(ActivateContext context) override;
  void ProcessQueue(uint16_t index) override;
  void Reset() override;

  vsock::Muxer& muxer() { return *muxer_; }

 private:
  VsockDevice(uint64_t guest_cid, std::unique_ptr<vsock::Muxer> muxer);

  // The muxer has packets for the guest (event loop).
  void OnRxReady() ABSL_LOCKS_EXCLUDED(mu_);
  // Hands the guest's tx packets to the muxer.
  void ProcessTx() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Fills rx buffers while the muxer has packets; returns whether any buffer was used.
  bool ProcessRx() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const uint64_t guest_cid_;
  const std::unique_ptr<vsock::Muxer> muxer_;

  absl::Mutex mu_;
  const GuestMemory* memory_ ABSL_GUARDED_BY(mu_) = nullptr;  // while active
  Queue* rx_ ABSL_GUARDED_BY(mu_) = nullptr;
  Queue* tx_ ABSL_GUARDED_BY(mu_) = nullptr;
  std::function<void(uint16_t)> signal_used_ ABSL_GUARDED_BY(mu_);
  std::vector<uint8_t> payload_ ABSL_GUARDED_BY(mu_);  // one tx packet's payload
};

}  // namespace kapsel::vmm::virtio

#endif  // KAPSEL_VMM_DEVICES_VIRTIO_VSOCK_VSOCK_DEVICE_H_
