#include "vmm/devices/virtio/net/net_device.h"

#include <endian.h>
#include <linux/virtio_config.h>
#include <linux/virtio_ids.h>
#include <sys/epoll.h>
#include <sys/uio.h>

#include <cerrno>
#include <cstddef>
#include <cstdio>
#include <cstring>
#include <optional>

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "vmm/devices/virtio/chain_io.h"
#include "vmm/devices/virtio/ring_abi.h"

namespace kapsel::vmm::virtio {
namespace {

// readv/writev take at most IOV_MAX (1024) buffers; one is ours (rx scratch, tx header).
constexpr size_t kMaxIov = 1024;

// Collects the next buffers of a chain as iovecs (pointing into guest memory) after the ones
// already in *iov. False if the chain needs more than kMaxIov - reserve of them in all.
template <typename Cursor>
bool CollectIovecs(Cursor& cursor, size_t reserve, std::vector<iovec>* iov) {
  while (cursor.remaining() > 0) {
    if (iov->size() + reserve >= kMaxIov) return false;
    auto piece = cursor.Peek(cursor.remaining());
    if (!piece.ok() || piece->empty()) return false;
    iov->push_back({const_cast<uint8_t*>(piece->data()), piece->size()});
    cursor.Skip(piece->size());
  }
  return true;
}

}  // namespace

absl::StatusOr<std::unique_ptr<NetDevice>> NetDevice::Create(Options options, EventLoop* loop) {
  if (!options.tap.fd) return absl::InvalidArgumentError("virtio-net: no tap fd");
  if (options.mtu != 0 && (options.mtu < kMinMtu || options.mtu > kMaxMtu)) {
    return absl::InvalidArgumentError(
        absl::StrCat("virtio-net: MTU ", options.mtu, " out of range ", kMinMtu, "..", kMaxMtu));
  }
  if ((options.mac[0] & 1) != 0 || options.mac == MacAddress{}) {
    return absl::InvalidArgumentError(
        "virtio-net: the MAC address must be a unicast address, not all zeros");
  }
  return std::unique_ptr<NetDevice>(new NetDevice(std::move(options), loop));
}

NetDevice::NetDevice(Options options, EventLoop* loop)
    : tap_(std::move(options.tap.fd)),
      tap_name_(std::move(options.tap.name)),
      mac_(options.mac),
      mtu_(options.mtu),
      loop_(loop),
      scratch_(kMaxFrameSize) {}

NetDevice::~NetDevice() {
  absl::MutexLock lock(&mu_);
  UnregisterTap();
}

uint32_t NetDevice::device_type() const { return VIRTIO_ID_NET; }

uint64_t NetDevice::device_features() const {
  // MRG_RXBUF: the driver posts small rx buffers (Linux: 1.5 to 4 KiB each) and a frame takes as
  // many as it needs. Without it, a Linux driver that took GUEST_TSO posts "big packets" chains
  // of 18 pages each, one per ring slot with indirect descriptors: 18 MiB of guest memory held
  // by an idle interface.
  // Indirect descriptors: for such drivers, without them 256 ring slots hold only 13 big chains
  // (19 descriptors each), and the small frames of a stream (its ACKs) then starve for buffers.
  // EVENT_IDX: tx is processed until Pop finds nothing; rx waits for the driver only after Pop
  // found no buffer or, on a tap error, after NotifyOnNextAvail.
  uint64_t features = (uint64_t{1} << VIRTIO_F_VERSION_1) |
                      (uint64_t{1} << kVirtioRingFIndirectDesc) |
                      (uint64_t{1} << kVirtioRingFEventIdx) | (uint64_t{1} << kVirtioNetFMac) |
                      (uint64_t{1} << kVirtioNetFMrgRxbuf) | (uint64_t{1} << kVirtioNetFStatus) |
                      kNetOffloadFeatures;
  if (mtu_ != 0) features |= uint64_t{1} << kVirtioNetFMtu;
  return features;
}

void NetDevice::ReadConfig(uint64_t offset, absl::Span<uint8_t> data) {
  // The fields after mtu (speed, duplex, RSS) belong to features we do not offer: they read as 0.
  KapselVirtioNetConfig config{};
  static_assert(sizeof(config) == 12);
  std::memcpy(config.mac, mac_.data(), mac_.size());
  config.status = htole16(kVirtioNetSLinkUp);
  config.max_virtqueue_pairs = htole16(1);
  config.mtu = htole16(static_cast<uint16_t>(mtu_));
  std::array<uint8_t, sizeof(config)> image;
  std::memcpy(image.data(), &config, sizeof(config));
  ReadConfigImage(image, offset, data);
}

absl::Status NetDevice::Activate(ActivateContext context) {
  if (context.queues.size() != 2) {
    return absl::InvalidArgumentError(absl::StrCat(name(), ": expected two queues"));
  }
  if (!context.queues[kRxQueue].active() || !context.queues[kTxQueue].active()) {
    return absl::InvalidArgumentError(
        absl::StrCat(name(), ": the rx and tx queues must be enabled"));
  }
  absl::MutexLock lock(&mu_);
  UnregisterTap();
  const NetOffloads offloads = OffloadsFromFeatures(context.acked_features);
  absl::Status offload = SetTapOffload(tap_.get(), tap_name_, TunOffloadFlags(offloads));
  if (!offload.ok()) return Annotate(offload, name());
  // One-shot: the handler reads until the tap is empty (then re-arms) or the rx queue has no
  // buffers (then the next rx notify resumes), so a tap full of frames never spins the loop.
  absl::Status added =
      loop_->Add(tap_.get(), EPOLLIN | EPOLLONESHOT, [this](uint32_t) { OnTapEvent(); });
  if (!added.ok()) {
    (void)SetTapOffload(tap_.get(), tap_name_, 0);
    return Annotate(added, name());
  }
  registered_ = true;
  offloads_ = offloads;
  mergeable_ = (context.acked_features & (uint64_t{1} << kVirtioNetFMrgRxbuf)) != 0;
  pending_size_ = 0;
  memory_ = context.memory;
  rx_ = &context.queues[kRxQueue];
  tx_ = &context.queues[kTxQueue];
  signal_used_ = std::move(context.signal_used);
  return absl::OkStatus();
}

void NetDevice::Reset() {
  absl::MutexLock lock(&mu_);
  UnregisterTap();
  // Frames the host queues from now on are for whatever driver comes next: none offloaded.
  offloads_ = NetOffloads{};
  mergeable_ = false;
  pending_size_ = 0;  // read under the old driver's offloads: not for the next one
  absl::Status offload = SetTapOffload(tap_.get(), tap_name_, 0);
  if (!offload.ok()) LogOnce(&logged_offload_error_, std::string(offload.message()));
  memory_ = nullptr;
  rx_ = nullptr;
  tx_ = nullptr;
  signal_used_ = nullptr;
}

NetCounters NetDevice::counters() const {
  absl::MutexLock lock(&mu_);
  return counters_;
}

void NetDevice::UnregisterTap() {
  if (!registered_) return;
  registered_ = false;
  (void)loop_->Remove(tap_.get());
}

void NetDevice::ArmTap() {
  if (!registered_) return;
  absl::Status status = loop_->Modify(tap_.get(), EPOLLIN | EPOLLONESHOT);
  if (!status.ok()) LogOnce(&logged_rx_error_, std::string(status.message()));
}

void NetDevice::LogOnce(bool* logged, const std::string& message) {
  if (*logged) return;
  *logged = true;
  std::fprintf(stderr, "kapsel-vmm: %s: %s (further errors of this kind are not logged)\n",
               name().c_str(), message.c_str());
}

void NetDevice::ProcessQueue(uint16_t index) {
  absl::MutexLock lock(&mu_);
  if (memory_ == nullptr) return;
  if (index == kTxQueue) {
    ProcessTx();
  } else if (index == kRxQueue) {
    ProcessRx();  // new buffers: read what waited in the tap
  }
}

void NetDevice::OnTapEvent() {
  absl::MutexLock lock(&mu_);
  if (memory_ == nullptr) return;
  if (ProcessRx() && signal_used_) signal_used_(kRxQueue);
}

void NetDevice::ProcessTx() {
  while (true) {
    absl::StatusOr<std::optional<DescriptorChain>> popped = tx_->Pop();
    if (!popped.ok() || !popped->has_value()) return;
    const DescriptorChain& chain = **popped;
    if (!chain.status.ok() || !SendFrame(chain)) ++counters_.bad_chains;
    if (!tx_->AddUsed(chain.head, 0).ok()) return;
  }
}

bool NetDevice::SendFrame(const DescriptorChain& chain) {
  if (chain.writable_bytes != 0 || chain.readable_bytes < kMinTxSize ||
      chain.readable_bytes > kMaxFrameSize) {
    return false;
  }
  ChainReader reader(*memory_, chain);
  // Read once: the tap gets this copy, not guest memory the guest could change after the check.
  absl::StatusOr<KapselVirtioNetHdr> header = reader.ReadObj<KapselVirtioNetHdr>();
  // A header asking for an offload that was not negotiated is a broken driver.
  if (!header.ok() || !CheckTxHeader(*header, offloads_).ok()) return false;
  header->num_buffers = 0;
  std::vector<iovec> iov = {{&*header, sizeof(*header)}};
  if (!CollectIovecs(reader, 0, &iov)) return false;
  ssize_t n;
  do {
    n = writev(tap_.get(), iov.data(), static_cast<int>(iov.size()));
  } while (n < 0 && errno == EINTR);
  if (n < 0) {
    const int err = errno;
    if (err == EINVAL) {
      // The tap's checks of the header (gso_size, csum_start/offset, hdr_len against the frame)
      // failed: the guest's frame, not the tap, is at fault.
      ++counters_.tx_refused;
      LogOnce(&logged_tx_refused_, "the tap refused a frame (EINVAL): malformed offload header");
      return true;
    }
    ++counters_.tx_dropped;
    if (err != EAGAIN && err != EWOULDBLOCK && err != ENOBUFS) {
      LogOnce(&logged_tx_error_, std::string(ErrnoError(err, "writing to the tap").message()));
    }
    return true;
  }
  ++counters_.tx_frames;
  counters_.tx_bytes += chain.readable_bytes - kNetHeaderSize;
  return true;
}

bool NetDevice::ProcessRxMergeable() {
  bool used = false;
  for (int frames = 0; frames < kBudget; ++frames) {
    if (pending_size_ == 0) {
      pending_header_ = {};
      iovec iov[2] = {{&pending_header_, sizeof(pending_header_)},
                      {scratch_.data(), scratch_.size() - kNetHeaderSize}};
      ssize_t n;
      do {
        n = readv(tap_.get(), iov, 2);
      } while (n < 0 && errno == EINTR);
      if (n < 0) {
        const int err = errno;
        if (err == EAGAIN || err == EWOULDBLOCK) {
          ArmTap();
        } else {
          rx_->NotifyOnNextAvail();  // as in ProcessRx: not re-armed, the next rx notify retries
          LogOnce(&logged_rx_error_,
                  std::string(ErrnoError(err, "reading from the tap").message()));
        }
        return used;
      }
      if (static_cast<uint64_t>(n) < kNetHeaderSize ||
          !PrepareRxHeader(offloads_, &pending_header_).ok()) {
        ++counters_.rx_dropped;
        continue;
      }
      pending_size_ = static_cast<uint64_t>(n);
    }
    const uint16_t used_before = rx_->used_idx();
    const bool delivered = DeliverPendingFrame();
    used = used || rx_->used_idx() != used_before;
    // Too few buffers: the frame waits in pending_size_ and the tap stays disarmed until the
    // driver notifies (Pop asked it to, with EVENT_IDX).
    if (!delivered) return used;
  }
  ArmTap();  // budget spent: come back through the loop
  return used;
}

bool NetDevice::DeliverPendingFrame() {
  struct Taken {
    DescriptorChain chain;
    uint64_t bytes;  // what this chain gets of the frame
  };
  std::vector<Taken> taken;
  // A broken driver: every chain taken (and `also`, when given) goes back empty, which the driver
  // sees as an error each, and the frame is lost.
  auto give_back_empty = [&](std::optional<uint16_t> also) {
    ++counters_.bad_chains;
    ++counters_.rx_dropped;
    std::vector<Queue::UsedChain> empty;
    if (also.has_value()) empty.push_back({*also, 0});
    for (const Taken& t : taken) empty.push_back({t.chain.head, 0});
    (void)rx_->AddUsed(empty);
    pending_size_ = 0;
    return true;
  };
  uint64_t capacity = 0;
  while (capacity < pending_size_) {
    absl::StatusOr<std::optional<DescriptorChain>> popped = rx_->Pop();
    if (!popped.ok()) return false;  // broken: the device needs a reset
    if (!popped->has_value()) {
      for (size_t i = 0; i < taken.size(); ++i) rx_->UndoPop();
      return false;
    }
    DescriptorChain& chain = **popped;
    // Every buffer must hold at least a header (virtio 1.2, 5.1.6.3.1).
    if (!chain.status.ok() || chain.num_readable != 0 || chain.writable_bytes < kNetHeaderSize) {
      return give_back_empty(chain.head);
    }
    const uint64_t bytes = std::min<uint64_t>(chain.writable_bytes, pending_size_ - capacity);
    capacity += bytes;
    taken.push_back({std::move(chain), bytes});
    if (capacity < pending_size_ && taken.size() == rx_->size()) {
      // Even a full ring of these buffers cannot hold the frame: it never will.
      for (size_t i = 0; i < taken.size(); ++i) rx_->UndoPop();
      ++counters_.rx_dropped;
      pending_size_ = 0;
      return true;
    }
  }
  pending_header_.num_buffers = htole16(static_cast<uint16_t>(taken.size()));
  std::vector<Queue::UsedChain> used;
  uint64_t offset = 0;  // into the frame after its header
  for (size_t i = 0; i < taken.size(); ++i) {
    ChainWriter out(*memory_, taken[i].chain);
    uint64_t data = taken[i].bytes;
    absl::Status written;
    if (i == 0) {
      written = out.WriteObj(pending_header_);
      data -= kNetHeaderSize;
    }
    if (written.ok()) written = out.Write(absl::MakeConstSpan(scratch_.data() + offset, data));
    // Cannot fail (the chains' buffers were checked to be guest RAM); never a short frame.
    if (!written.ok()) return give_back_empty(std::nullopt);
    offset += data;
    used.push_back({taken[i].chain.head, static_cast<uint32_t>(taken[i].bytes)});
  }
  if (!rx_->AddUsed(used).ok()) return false;
  ++counters_.rx_frames;
  counters_.rx_bytes += pending_size_ - kNetHeaderSize;
  pending_size_ = 0;
  return true;
}

bool NetDevice::ProcessRx() {
  if (mergeable_) return ProcessRxMergeable();
  bool used = false;
  std::vector<iovec> iov;
  KapselVirtioNetHdr header;
  for (int frames = 0; frames < kBudget; ++frames) {
    absl::StatusOr<std::optional<DescriptorChain>> popped = rx_->Pop();
    // No buffers (or a broken queue): leave the frames in the tap until the next rx notify.
    if (!popped.ok() || !popped->has_value()) return used;
    const DescriptorChain& chain = **popped;
    // The tap's header lands in `header` (checked before the guest sees it), the frame in the
    // chain after the header's place.
    header = {};
    iov.assign({{&header, sizeof(header)}});
    bool usable =
        chain.status.ok() && chain.num_readable == 0 && chain.writable_bytes >= kNetHeaderSize;
    uint64_t capacity = 0;  // header included
    if (usable) {
      ChainWriter writer(*memory_, chain);
      writer.Skip(kNetHeaderSize);
      writer.Limit(kMaxFrameSize - kNetHeaderSize);
      usable = CollectIovecs(writer, 1, &iov);
      capacity = writer.written();
    }
    if (!usable) {
      ++counters_.bad_chains;
      if (!rx_->AddUsed(chain.head, 0).ok()) return used;
      used = true;
      continue;
    }
    // The scratch buffer takes what does not fit, so a too-large frame is seen whole and dropped.
    iov.push_back({scratch_.data(), scratch_.size()});
    ssize_t n;
    do {
      n = readv(tap_.get(), iov.data(), static_cast<int>(iov.size()));
    } while (n < 0 && errno == EINTR);
    if (n < 0) {
      const int err = errno;
      rx_->UndoPop();
      if (err == EAGAIN || err == EWOULDBLOCK) {
        ArmTap();
      } else {
        // Not re-armed: a dead tap must not spin the loop; the next rx notify tries again (with
        // EVENT_IDX the driver sends one only when asked).
        rx_->NotifyOnNextAvail();
        LogOnce(&logged_rx_error_, std::string(ErrnoError(err, "reading from the tap").message()));
      }
      return used;
    }
    // Too large for the chain, or offloads the guest did not accept (queued by the tap under an
    // earlier activation): dropped, and the chain waits for the next frame.
    if (static_cast<uint64_t>(n) > capacity || static_cast<uint64_t>(n) < kNetHeaderSize ||
        !PrepareRxHeader(offloads_, &header).ok()) {
      ++counters_.rx_dropped;
      rx_->UndoPop();
      continue;
    }
    ChainWriter out(*memory_, chain);
    if (!out.WriteObj(header).ok()) {
      // Cannot happen (the chain's buffers were checked to be guest RAM), but never a short frame.
      ++counters_.bad_chains;
      if (!rx_->AddUsed(chain.head, 0).ok()) return used;
      used = true;
      continue;
    }
    if (!rx_->AddUsed(chain.head, static_cast<uint32_t>(n)).ok()) return used;
    used = true;
    ++counters_.rx_frames;
    counters_.rx_bytes += static_cast<uint64_t>(n) - kNetHeaderSize;
  }
  // Budget spent: come back through the loop (the tap is level-triggered).
  ArmTap();
  return used;
}

}  // namespace kapsel::vmm::virtio
