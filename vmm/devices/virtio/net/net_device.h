// virtio-net (virtio 1.x section 5.1) backed by a tap: queue 0 = receiveq, 1 = transmitq (no
// control queue, one queue pair). Offered: VERSION_1, MAC, STATUS (link always up), MTU when one is
// configured, and the checksum and TCP segmentation offloads of net_offload.h both ways (CSUM,
// HOST_TSO4/6, GUEST_CSUM, GUEST_TSO4/6); no UFO, no ECN, no MRG_RXBUF (why: net_offload.h). Every
// buffer starts with the 12-byte struct virtio_net_hdr_v1 that the tap (IFF_VNET_HDR) speaks too.
//
// Activation mirrors the GUEST_* features the driver accepted onto the tap (TUNSETOFFLOAD), so
// the host hands the guest only frames it takes; Reset turns them off again.
//
// TX: each chain's readable part (header + frame) is written to the tap with one writev; the
// header is copied out of guest memory once, checked against the negotiated offloads, and the
// copy goes to the tap, which validates its offsets and sizes (a bad one fails that write: the
// frame is dropped and counted). RX: the tap fd is on the VMM's event loop (EPOLLIN, one-shot); a
// frame is read with readv straight into a chain's writable buffers, its header into the device
// first, checked against what the guest accepted and then written to the chain; a frame larger
// than the chain is dropped. With no rx buffers the device stops reading, frames wait in the
// tap's queue (the kernel drops beyond it), and the driver's next rx notify resumes.
//
// Threads: ProcessQueue, Activate and Reset come from the transport (under its lock); the tap
// handler runs on the event loop. The device's mutex serializes both.
#ifndef KAPSEL_VMM_DEVICES_VIRTIO_NET_NET_DEVICE_H_
#define KAPSEL_VMM_DEVICES_VIRTIO_NET_NET_DEVICE_H_

#include <linux/if_ether.h>

#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "vmm/devices/virtio/net/net_offload.h"
#include "vmm/devices/virtio/net/tap.h"
#include "vmm/devices/virtio/virtio_device.h"
#include "vmm/event_loop.h"

namespace kapsel::vmm::virtio {

using MacAddress = std::array<uint8_t, ETH_ALEN>;

struct NetCounters {
  uint64_t rx_frames = 0;   // frames delivered to the guest
  uint64_t rx_bytes = 0;    // their bytes, header excluded
  uint64_t rx_dropped = 0;  // frames read from the tap and dropped: larger than the rx chain, or
                            // with offloads the driver did not accept
  uint64_t tx_frames = 0;   // frames written to the tap
  uint64_t tx_bytes = 0;    // their bytes, header excluded
  uint64_t tx_dropped = 0;  // frames the tap did not take (full: EAGAIN/ENOBUFS, or an error)
  uint64_t tx_refused = 0;  // frames the tap refused as malformed (EINVAL: a bad offload header)
  uint64_t bad_chains = 0;  // malformed or unusable chains returned with length 0 (both queues)
};

class NetDevice : public VirtioDevice {
 public:
  static constexpr uint16_t kRxQueue = 0;
  static constexpr uint16_t kTxQueue = 1;
  static constexpr uint16_t kQueueSize = 256;
  // The largest frame either way: header + the largest TSO frame, 64 KiB - 1 of IPv6 payload
  // behind Ethernet and IPv6 headers (virtio 1.2, 5.1.6.3: 65589 bytes).
  static constexpr uint64_t kMaxFrameSize = kNetHeaderSize + ETH_HLEN + 40 + 65535;
  // The smallest TX frame the tap accepts: header + an Ethernet header.
  static constexpr uint64_t kMinTxSize = kNetHeaderSize + ETH_HLEN;
  // MTU range for VIRTIO_NET_F_MTU (0 = not offered).
  static constexpr uint32_t kMinMtu = 68;
  static constexpr uint32_t kMaxMtu = 65535 - ETH_HLEN;
  // Frames handled per event-loop wake-up or notify before giving others a turn.
  static constexpr int kBudget = 256;

  struct Options {
    Tap tap;
    MacAddress mac{};
    uint32_t mtu = 0;  // 0: VIRTIO_NET_F_MTU not offered
  };

  // `loop` serves the tap fd while the device is active and must outlive the device.
  static absl::StatusOr<std::unique_ptr<NetDevice>> Create(Options options, EventLoop* loop);
  ~NetDevice() override;

  std::string name() const override { return "virtio-net(" + tap_name_ + ")"; }
  uint32_t device_type() const override;
  uint64_t device_features() const override;
  uint16_t num_queues() const override { return 2; }
  uint16_t max_queue_size(uint16_t) const override { return kQueueSize; }
  // struct virtio_net_config: mac, status (link up), max_virtqueue_pairs = 1, mtu.
  void ReadConfig(uint64_t offset, absl::Span<uint8_t> data) override;
  void WriteConfig(uint64_t, absl::Span<const uint8_t>) override {}
  absl::Status Activate(ActivateContext context) override;
  void ProcessQueue(uint16_t index) override;
  void Reset() override;

  NetCounters counters() const ABSL_LOCKS_EXCLUDED(mu_);
  int tap_fd() const { return tap_.get(); }

 private:
  NetDevice(Options options, EventLoop* loop);

  // The tap is readable (event loop).
  void OnTapEvent() ABSL_LOCKS_EXCLUDED(mu_);
  // Writes the guest's tx frames to the tap.
  void ProcessTx() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Reads frames from the tap into rx buffers; re-arms the tap when it ran dry, leaves it
  // disarmed when the rx queue ran out of buffers. Returns whether any buffer was used.
  bool ProcessRx() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The same with VIRTIO_NET_F_MRG_RXBUF: each frame is read into scratch_ first, then spread
  // over as many rx chains as it needs, published together.
  bool ProcessRxMergeable() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Puts the pending frame into rx chains. False if the queue has too few buffers for it now (the
  // frame stays pending, nothing is used) or is broken.
  bool DeliverPendingFrame() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Sends one tx chain; returns false if it was malformed.
  bool SendFrame(const DescriptorChain& chain) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void ArmTap() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void UnregisterTap() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void LogOnce(bool* logged, const std::string& message) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const UniqueFd tap_;
  const std::string tap_name_;
  const MacAddress mac_;
  const uint32_t mtu_;
  EventLoop* const loop_;

  mutable absl::Mutex mu_;
  const GuestMemory* memory_ ABSL_GUARDED_BY(mu_) = nullptr;  // while active
  Queue* rx_ ABSL_GUARDED_BY(mu_) = nullptr;
  Queue* tx_ ABSL_GUARDED_BY(mu_) = nullptr;
  std::function<void(uint16_t)> signal_used_ ABSL_GUARDED_BY(mu_);
  bool registered_ ABSL_GUARDED_BY(mu_) = false;  // the tap fd is on the event loop
  NetCounters counters_ ABSL_GUARDED_BY(mu_);
  bool logged_tx_error_ ABSL_GUARDED_BY(mu_) = false;
  bool logged_tx_refused_ ABSL_GUARDED_BY(mu_) = false;
  bool logged_rx_error_ ABSL_GUARDED_BY(mu_) = false;
  bool logged_offload_error_ ABSL_GUARDED_BY(mu_) = false;
  // What the driver negotiated, while active (all off otherwise).
  NetOffloads offloads_ ABSL_GUARDED_BY(mu_);
  bool mergeable_ ABSL_GUARDED_BY(mu_) = false;  // VIRTIO_NET_F_MRG_RXBUF
  // Absorbs the tail of an rx frame larger than its chain; with MRG_RXBUF, holds each frame
  // (after its header) until it is in rx chains.
  std::vector<uint8_t> scratch_ ABSL_GUARDED_BY(mu_);
  // MRG_RXBUF: a frame read from the tap that waits for enough rx buffers (0: none), header
  // included, and its header.
  uint64_t pending_size_ ABSL_GUARDED_BY(mu_) = 0;
  KapselVirtioNetHdr pending_header_ ABSL_GUARDED_BY(mu_){};
};

}  // namespace kapsel::vmm::virtio

#endif  // KAPSEL_VMM_DEVICES_VIRTIO_NET_NET_DEVICE_H_
