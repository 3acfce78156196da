#include "vmm/devices/virtio/fs/fs_device.h"

#include <linux/virtio_config.h>
#include <linux/virtio_ids.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/status.h"
#include "vmm/devices/virtio/ring_abi.h"

namespace kapsel::vmm::virtio {
namespace {

using vhost_user::Frontend;

constexpr uint64_t Bit(int n) { return uint64_t{1} << n; }

// Ring features the backend implements and we pass through; VERSION_1 is required.
constexpr uint64_t kSupportedFeatures =
    Bit(VIRTIO_F_VERSION_1) | Bit(kVirtioRingFIndirectDesc) | Bit(kVirtioRingFEventIdx);
// Protocol features we use when offered: REPLY_ACK (errors surface at the message that caused
// them) and MQ (to ask how many rings the backend has).
constexpr uint64_t kWantedProtocolFeatures =
    Bit(vhost_user::kProtocolFeatureReplyAck) | Bit(vhost_user::kProtocolFeatureMq);

}  // namespace

absl::StatusOr<std::unique_ptr<FsDevice>> FsDevice::Create(const FsDeviceOptions& options,
                                                           EventLoop* loop,
                                                           BackendFailed on_failure) {
  // Check the tag before connecting: a bad tag is the caller's mistake, not the backend's.
  if (options.tag.empty() || options.tag.size() > kTagSize ||
      options.tag.find('\0') != std::string::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat("virtio-fs tag '", options.tag, "': want 1..", kTagSize, " bytes"));
  }
  ASSIGN_OR_RETURN(std::unique_ptr<Frontend> frontend,
                   Frontend::Connect(options.socket_path, {.timeout = options.timeout}));
  return Create(options.tag, std::move(frontend), loop, std::move(on_failure));
}

absl::StatusOr<std::unique_ptr<FsDevice>> FsDevice::Create(const std::string& tag,
                                                           std::unique_ptr<Frontend> frontend,
                                                           EventLoop* loop,
                                                           BackendFailed on_failure) {
  if (tag.empty() || tag.size() > kTagSize || tag.find('\0') != std::string::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat("virtio-fs tag '", tag, "': want 1..", kTagSize, " bytes"));
  }
  auto device = std::unique_ptr<FsDevice>(
      new FsDevice(tag, std::move(frontend), loop, std::move(on_failure)));
  {
    absl::MutexLock lock(&device->mu_);
    absl::Status status = device->Handshake();
    if (!status.ok()) return Annotate(status, absl::StrCat("virtio-fs '", tag, "'"));
  }
  // From here on a hang-up of the backend is noticed by the event loop.
  FsDevice* raw = device.get();
  RETURN_IF_ERROR(loop->Add(device->socket_fd_, EPOLLRDHUP, [raw](uint32_t) { raw->OnHangup(); }));
  absl::MutexLock lock(&device->watch_mu_);
  device->watching_ = true;
  return device;
}

FsDevice::FsDevice(std::string tag, std::unique_ptr<Frontend> frontend, EventLoop* loop,
                   BackendFailed on_failure)
    : tag_(std::move(tag)),
      socket_fd_(frontend->socket_fd()),
      loop_(loop),
      on_failure_(std::move(on_failure)),
      frontend_(std::move(frontend)) {
  std::memcpy(config_.data(), tag_.data(), tag_.size());  // the rest stays NUL
  const uint32_t num_request_queues = 1;                  // little-endian on x86
  std::memcpy(config_.data() + kTagSize, &num_request_queues, sizeof(num_request_queues));
}

FsDevice::~FsDevice() {
  {
    absl::MutexLock lock(&mu_);
    StopLocked();
  }
  Unwatch();
}

void FsDevice::Unwatch() {
  absl::MutexLock lock(&watch_mu_);
  if (!watching_) return;
  watching_ = false;
  (void)loop_->Remove(socket_fd_);
}

absl::Status FsDevice::Handshake() {
  ASSIGN_OR_RETURN(backend_features_, frontend_->GetFeatures());
  if ((backend_features_ & Bit(VIRTIO_F_VERSION_1)) == 0) {
    return absl::FailedPreconditionError(
        absl::StrFormat("the vhost-user backend does not offer VIRTIO_F_VERSION_1 (features %#x)",
                        backend_features_));
  }
  device_features_ = backend_features_ & kSupportedFeatures;
  protocol_features_ = (backend_features_ & Bit(vhost_user::kFeatureProtocolFeatures)) != 0;
  uint64_t protocol = 0;
  if (protocol_features_) {
    ASSIGN_OR_RETURN(const uint64_t offered, frontend_->GetProtocolFeatures());
    protocol = offered & kWantedProtocolFeatures;
    RETURN_IF_ERROR(frontend_->SetProtocolFeatures(protocol));
  }
  RETURN_IF_ERROR(frontend_->SetOwner());
  if ((protocol & Bit(vhost_user::kProtocolFeatureMq)) != 0) {
    ASSIGN_OR_RETURN(const uint64_t rings, frontend_->GetQueueNum());
    if (rings < kNumQueues) {
      return absl::FailedPreconditionError(absl::StrFormat(
          "the vhost-user backend supports %d rings; virtio-fs needs %d", rings, kNumQueues));
    }
  }
  return absl::OkStatus();
}

std::string FsDevice::name() const { return absl::StrCat("virtio-fs(", tag_, ")"); }

uint32_t FsDevice::device_type() const { return VIRTIO_ID_FS; }

void FsDevice::ReadConfig(uint64_t offset, absl::Span<uint8_t> data) {
  ReadConfigImage(config_, offset, data);
}

absl::Status FsDevice::Activate(ActivateContext context) {
  absl::MutexLock lock(&mu_);
  absl::Status status = ActivateLocked(context);
  if (!status.ok()) {
    StopLocked();
    FailIfBroken();
    return Annotate(status, name());
  }
  return absl::OkStatus();
}

absl::Status FsDevice::ActivateLocked(const ActivateContext& context) {
  if (failed_.load()) {
    return absl::FailedPreconditionError("the vhost-user backend has failed");
  }
  if (context.queues.size() != kNumQueues || context.queue_notify_fds.size() != kNumQueues ||
      context.memory == nullptr) {
    return absl::InternalError("activated without its queues, notification fds or memory");
  }
  const bool event_idx = (context.acked_features & Bit(kVirtioRingFEventIdx)) != 0;
  active_ = true;
  kick_fds_.assign(context.queue_notify_fds.begin(), context.queue_notify_fds.end());
  {
    absl::MutexLock lock(&call_mu_);
    raise_used_interrupt_ = context.raise_used_interrupt;
  }

  uint64_t features = context.acked_features & device_features_;
  if (protocol_features_) features |= Bit(vhost_user::kFeatureProtocolFeatures);
  RETURN_IF_ERROR(frontend_->SetFeatures(features));

  // Guest RAM is one memfd mapped MAP_SHARED per region (GuestMemory): the backend maps the same
  // pages, except the ranges mapped copy-on-write from a file (the kernel's text), which the guest
  // never hands to devices. Our mapping's address is the region's "userspace address", which the
  // ring addresses below are expressed in.
  const GuestMemory& memory = *context.memory;
  std::vector<vhost_user::MemRegion> regions;
  std::vector<int> fds;
  for (const MemoryRegion& r : memory.BackendRegions()) {
    regions.push_back({.guest_phys_addr = r.guest_start,
                       .memory_size = r.size,
                       .userspace_addr = reinterpret_cast<uint64_t>(r.host),
                       .mmap_offset = r.file_offset});
    fds.push_back(memory.memfd());
  }
  RETURN_IF_ERROR(frontend_->SetMemTable(regions, fds));

  for (uint16_t i = 0; i < kNumQueues; ++i) {
    const Queue& queue = context.queues[i];
    if (!queue.ready()) continue;  // the driver did not set it up: the backend never sees it
    const uint64_t size = queue.size();
    const uint64_t extra = event_idx ? 2 : 0;  // used_event / avail_event
    ASSIGN_OR_RETURN(uint8_t * desc, memory.Translate(queue.desc_table(), 16 * size));
    ASSIGN_OR_RETURN(uint8_t * avail, memory.Translate(queue.avail_ring(), 4 + 2 * size + extra));
    ASSIGN_OR_RETURN(uint8_t * used, memory.Translate(queue.used_ring(), 4 + 8 * size + extra));

    UniqueFd call(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    if (!call) return ErrnoError(absl::StrCat("eventfd for ring ", i));
    const int call_fd = call.get();
    RETURN_IF_ERROR(loop_->Add(call_fd, EPOLLIN, [this, i](uint32_t) { OnCall(i); }));
    {
      absl::MutexLock lock(&call_mu_);
      call_fds_[i] = std::move(call);
    }

    RETURN_IF_ERROR(frontend_->SetVringNum(i, queue.size()));
    RETURN_IF_ERROR(frontend_->SetVringBase(i, queue.last_avail_idx()));
    RETURN_IF_ERROR(frontend_->SetVringAddr({.index = i,
                                             .flags = 0,
                                             .desc_user_addr = reinterpret_cast<uint64_t>(desc),
                                             .used_user_addr = reinterpret_cast<uint64_t>(used),
                                             .avail_user_addr = reinterpret_cast<uint64_t>(avail),
                                             .log_guest_addr = 0}));
    RETURN_IF_ERROR(frontend_->SetVringCall(i, call_fd));
    // The kick starts the ring in the backend; from here on it may touch guest memory, so the
    // ring must be stopped (GET_VRING_BASE) before the guest may reuse it.
    started_[i] = true;
    RETURN_IF_ERROR(frontend_->SetVringKick(i, kick_fds_[i]));
    if (protocol_features_) RETURN_IF_ERROR(frontend_->SetVringEnable(i, true));
  }
  return absl::OkStatus();
}

void FsDevice::ProcessQueue(uint16_t index) {
  absl::MutexLock lock(&mu_);
  if (!active_ || index >= kNumQueues || !started_[index]) return;
  const uint64_t one = 1;
  [[maybe_unused]] ssize_t n = write(kick_fds_[index], &one, sizeof(one));
}

void FsDevice::Reset() {
  absl::MutexLock lock(&mu_);
  StopLocked();
  FailIfBroken();
}

void FsDevice::StopLocked() {
  for (uint16_t i = 0; i < kNumQueues; ++i) {
    if (!started_[i]) continue;
    started_[i] = false;
    if (failed_.load() || !frontend_->broken().ok()) continue;
    if (protocol_features_) {
      absl::Status disabled = frontend_->SetVringEnable(i, false);
      if (!disabled.ok()) {
        std::fprintf(stderr, "kapsel-vmm: %s: disabling ring %d: %s\n", name().c_str(), i,
                     std::string(disabled.message()).c_str());
      }
    }
    if (!frontend_->broken().ok()) continue;
    // A failure here breaks the connection (FailIfBroken then stops the VM): a ring we could not
    // stop may still be written by the backend.
    absl::StatusOr<uint32_t> base = frontend_->GetVringBase(i);
    if (!base.ok()) {
      std::fprintf(stderr, "kapsel-vmm: %s: stopping ring %d: %s\n", name().c_str(), i,
                   std::string(base.status().message()).c_str());
    }
  }
  {
    absl::MutexLock lock(&call_mu_);
    for (UniqueFd& fd : call_fds_) {
      if (!fd) continue;
      (void)loop_->Remove(fd.get());
      fd.reset();
    }
    raise_used_interrupt_ = nullptr;
  }
  kick_fds_.clear();
  active_ = false;
}

void FsDevice::OnCall(uint16_t index) {
  std::function<void()> raise;
  {
    absl::MutexLock lock(&call_mu_);
    if (index >= kNumQueues || !call_fds_[index]) return;  // the ring was stopped meanwhile
    uint64_t count;
    if (read(call_fds_[index].get(), &count, sizeof(count)) != sizeof(count)) return;
    raise = raise_used_interrupt_;
  }
  if (raise) raise();
}

void FsDevice::OnHangup() {
  {
    absl::MutexLock lock(&watch_mu_);
    if (!watching_) return;
    watching_ = false;
  }
  // The loop keeps the handler alive while it runs; Remove is safe from inside it. (No mu_ here:
  // a vCPU may hold it while it waits for a reply.) Level-triggered, so it must go.
  (void)loop_->Remove(socket_fd_);
  Fail("the vhost-user backend closed the connection (virtiofsd exited or was killed)");
}

void FsDevice::FailIfBroken() {
  if (!frontend_->broken().ok()) Fail(std::string(frontend_->broken().message()));
}

void FsDevice::Fail(const std::string& why) {
  if (failed_.exchange(true)) return;
  const std::string message = absl::StrCat(name(), ": ", why);
  std::fprintf(stderr, "kapsel-vmm: %s\n", message.c_str());
  if (on_failure_) on_failure_(message);
}

}  // namespace kapsel::vmm::virtio
