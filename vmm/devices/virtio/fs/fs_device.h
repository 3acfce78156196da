// virtio-fs (virtio 1.2 section 5.11) as a vhost-user frontend: the FUSE requests in the guest's
// queues are served by a separate backend process (virtiofsd) that maps guest memory itself. This
// device only negotiates, describes the queues to the backend and relays interrupts.
//
// Queues: 0 = hiprio (FUSE_INTERRUPT/FORGET), 1 = the one request queue. Configuration space:
// the tag (36 bytes, NUL padded) and num_request_queues = 1.
//
// Notifications (driver -> backend): the device owns its queue notifications
// (owns_queue_notifications), so the VMM hands it the queues' KVM ioeventfds and it passes them to
// the backend as the kick fds: a guest QueueNotify goes from KVM straight to virtiofsd.
//
// Interrupts (backend -> driver): the backend signals a per-ring "call" eventfd when it used
// buffers. That eventfd cannot be a KVM irqfd: Linux's virtio-mmio interrupt handler reads
// InterruptStatus and ignores the interrupt unless the VRING bit is set, and only the transport
// sets that bit. So the device watches the call eventfds on the event loop and raises the
// interrupt through the transport (ActivateContext::raise_used_interrupt), which sets the bit and
// then pulses the irqfd. The backend has already applied the driver's suppression (EVENT_IDX /
// NO_INTERRUPT) before signalling, so every call becomes an interrupt.
//
// Reset: each started ring is disabled and stopped with GET_VRING_BASE (the backend finishes its
// in-flight requests and stops touching the ring), the call eventfds are closed; a later
// Activate sends features, memory table and rings again.
//
// Backend failure: virtiofsd closing the socket (it died or was killed), not answering within the
// timeout, or answering garbage is reported once through the BackendFailed callback, which in
// kapsel-vmm stops the VM with exit 1 and a message naming the tag. The guest cannot recover from
// it: requests in flight would never complete, and a backend that stopped answering may still
// write into guest memory. A message the backend merely rejects (REPLY_ACK with an error) only
// fails that activation: the transport then asks the driver to reset the device.
//
// Threads: Activate/Reset/ProcessQueue come from the transport (vCPU threads, under its lock) and
// talk to the backend synchronously; the call eventfds and the socket hang-up are handled on the
// event loop. The device must be destroyed while the loop is not running (in the VMM: after Run).
#ifndef KAPSEL_VMM_DEVICES_VIRTIO_FS_FS_DEVICE_H_
#define KAPSEL_VMM_DEVICES_VIRTIO_FS_FS_DEVICE_H_

#include <array>
#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/unique_fd.h"
#include "vmm/devices/virtio/virtio_device.h"
#include "vmm/event_loop.h"
#include "vmm/vhost_user/frontend.h"

namespace kapsel::vmm::virtio {

struct FsDeviceOptions {
  // The name the guest mounts (mount -t virtiofs TAG DIR): 1..36 bytes, no NUL.
  std::string tag;
  // virtiofsd's --socket-path; it must be listening already.
  std::string socket_path;
  // How long the backend may take to answer one message.
  absl::Duration timeout = absl::Seconds(10);
};

class FsDevice : public VirtioDevice {
 public:
  static constexpr uint16_t kHiprioQueue = 0;
  static constexpr uint16_t kRequestQueue = 1;
  static constexpr uint16_t kNumQueues = 2;
  static constexpr uint16_t kHiprioQueueSize = 128;
  static constexpr uint16_t kRequestQueueSize = 1024;
  static constexpr size_t kTagSize = 36;
  // struct virtio_fs_config: tag[36], le32 num_request_queues.
  static constexpr size_t kConfigSize = kTagSize + 4;

  // Called once, on the thread that noticed, when the backend is gone or misbehaves.
  using BackendFailed = std::function<void(const std::string& why)>;

  // Connects to options.socket_path and negotiates (GET_FEATURES, protocol features, SET_OWNER).
  // `loop` watches the socket and the call eventfds and must outlive the device.
  static absl::StatusOr<std::unique_ptr<FsDevice>> Create(const FsDeviceOptions& options,
                                                          EventLoop* loop,
                                                          BackendFailed on_failure);
  // The same over an already-connected frontend (tests).
  static absl::StatusOr<std::unique_ptr<FsDevice>> Create(
      const std::string& tag, std::unique_ptr<vhost_user::Frontend> frontend, EventLoop* loop,
      BackendFailed on_failure);
  ~FsDevice() override;

  std::string name() const override;
  uint32_t device_type() const override;
  // The backend's ring features we support (VERSION_1, INDIRECT_DESC, EVENT_IDX).
  uint64_t device_features() const override { return device_features_; }
  uint16_t num_queues() const override { return kNumQueues; }
  uint16_t max_queue_size(uint16_t index) const override {
    return index == kHiprioQueue ? kHiprioQueueSize : kRequestQueueSize;
  }
  bool owns_queue_notifications() const override { return true; }
  void ReadConfig(uint64_t offset, absl::Span<uint8_t> data) override;
  void WriteConfig(uint64_t, absl::Span<const uint8_t>) override {}  // all read-only
  absl::Status Activate(ActivateContext context) override;
  // Only reached when a QueueNotify write did not go through the ioeventfd: forwards the kick.
  void ProcessQueue(uint16_t index) override;
  void Reset() override;

  const std::string& tag() const { return tag_; }
  // True once the backend failed (and BackendFailed was called).
  bool backend_failed() const { return failed_.load(); }

 private:
  FsDevice(std::string tag, std::unique_ptr<vhost_user::Frontend> frontend, EventLoop* loop,
           BackendFailed on_failure);

  absl::Status Handshake() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status ActivateLocked(const ActivateContext& context) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Stops the started rings (SET_VRING_ENABLE 0, GET_VRING_BASE) and closes the call eventfds.
  void StopLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // A call eventfd fired (event loop).
  void OnCall(uint16_t index);
  // The backend closed its end of the socket (event loop).
  void OnHangup();
  // Records a backend failure; the first one is reported through on_failure_.
  void Fail(const std::string& why);
  // If the connection broke, reports it as a backend failure.
  void FailIfBroken() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Unwatch();

  const std::string tag_;
  // The frontend's socket (the frontend lives as long as the device).
  const int socket_fd_;
  std::array<uint8_t, kConfigSize> config_{};
  EventLoop* const loop_;
  const BackendFailed on_failure_;
  std::atomic<bool> failed_{false};

  // Serializes messaging with the backend and the ring state.
  absl::Mutex mu_;
  std::unique_ptr<vhost_user::Frontend> frontend_ ABSL_GUARDED_BY(mu_);
  // Set by Handshake before the device is shared, constant afterwards.
  uint64_t backend_features_ = 0;
  uint64_t device_features_ = 0;
  bool protocol_features_ = false;  // VHOST_USER_F_PROTOCOL_FEATURES negotiated
  bool active_ ABSL_GUARDED_BY(mu_) = false;
  std::array<bool, kNumQueues> started_ ABSL_GUARDED_BY(mu_) = {};
  std::vector<int> kick_fds_ ABSL_GUARDED_BY(mu_);

  // The call eventfds and the interrupt callback, read by the event loop's handlers.
  absl::Mutex call_mu_ ABSL_ACQUIRED_AFTER(mu_);
  std::array<UniqueFd, kNumQueues> call_fds_ ABSL_GUARDED_BY(call_mu_);
  std::function<void()> raise_used_interrupt_ ABSL_GUARDED_BY(call_mu_);

  // Whether the socket is registered on the loop for hang-up.
  absl::Mutex watch_mu_;
  bool watching_ ABSL_GUARDED_BY(watch_mu_) = false;
};

}  // namespace kapsel::vmm::virtio

#endif  // KAPSEL_VMM_DEVICES_VIRTIO_FS_FS_DEVICE_H_
