// Fuzzes the virtio-net device with a hostile guest and a busy host network. The input is a list
// of actions: tx chains of one to four descriptors with fuzzed addresses, lengths, flags and
// header bytes (mostly inside guest RAM, so that chains are often valid), rx chains of fuzzed
// sizes and flags, raw garbage descriptors and available-ring entries in either queue, frames of
// any size injected into the tap, TCP frames with fuzzed offload headers both ways (the host's
// through a PACKET_VNET_HDR socket, so the tap may hand the device GSO frames of up to 64 KiB),
// turns of the event loop, and driver resets with a fuzzed choice of offload features. Nothing
// may crash, hang, leak or touch memory outside guest RAM, and every rx buffer the device returns
// holds 0 or a whole frame with its header (with MRG_RXBUF: at most a maximal frame, as a frame's
// later buffers hold any part of it).
//
// Needs root: the tap lives in a private network namespace, entered at start-up.
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iterator>
#include <memory>
#include <vector>

#include "common/unique_fd.h"
#include "tests/vmm/net/offload_test_util.h"
#include "tests/vmm/net/test_tap.h"
#include "tests/vmm/virtio/fuzz_driver.h"
#include "vmm/devices/virtio/mmio_transport.h"
#include "vmm/devices/virtio/net/net_device.h"
#include "vmm/devices/virtio/ring_abi.h"
#include "vmm/event_loop.h"
#include "vmm/memory/guest_memory.h"

namespace kapsel::vmm::virtio {
namespace {

using fuzzing::kQueueNotify;
using fuzzing::kStatus;
using fuzzing::NoInterrupt;
using fuzzing::Ring;

constexpr uint64_t kRamSize = 0x100000;
constexpr uint16_t kQueueSize = 64;
constexpr GuestAddress kData = 0x10000;  // descriptors point into [kData, kRamSize) mostly
constexpr uint64_t kMaxUsedLen = NetDevice::kMaxFrameSize;
constexpr uint64_t kBaseFeatures = (uint64_t{1} << 32) |  // VIRTIO_F_VERSION_1
                                   (1u << kVirtioNetFMac) | (1u << kVirtioNetFStatus) |
                                   (1u << kVirtioNetFMtu);
// Feature bits a driver may pick from: the six offloads the device offers, MRG_RXBUF (offered
// too), and HOST_UFO, which it does not offer (the transport then refuses FEATURES_OK and the
// device stays inactive).
constexpr int kOffloadBits[] = {kVirtioNetFCsum,      kVirtioNetFGuestCsum, kVirtioNetFGuestTso4,
                                kVirtioNetFGuestTso6, kVirtioNetFHostTso4,  kVirtioNetFHostTso6,
                                kVirtioNetFMrgRxbuf,  kVirtioNetFHostUfo};

class Input {
 public:
  Input(const uint8_t* data, size_t size) : data_(data), size_(size) {}
  bool empty() const { return pos_ >= size_; }
  uint8_t Byte() { return pos_ < size_ ? data_[pos_++] : 0; }
  uint16_t U16() { return static_cast<uint16_t>(Byte() | Byte() << 8); }
  uint32_t U32() { return U16() | uint32_t{U16()} << 16; }
  uint64_t U64() { return U32() | uint64_t{U32()} << 32; }
  // Up to n bytes of the input.
  absl::Span<const uint8_t> Bytes(size_t n) {
    n = std::min(n, size_ - std::min(pos_, size_));
    absl::Span<const uint8_t> s(data_ + pos_, n);
    pos_ += n;
    return s;
  }

 private:
  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
};

class Fixture {
 public:
  Fixture() {
    absl::Status netns = testing::EnterPrivateNetns();
    if (!netns.ok()) Die(netns);
    memory_ = std::move(GuestMemory::Create({{0, kRamSize}})).value();
    loop_ = std::move(EventLoop::Create()).value();
    absl::StatusOr<testing::TestTap> tap = testing::TestTap::Create("kfuzz0");
    if (!tap.ok()) Die(tap.status());
    tap_ = std::make_unique<testing::TestTap>(*std::move(tap));
    absl::StatusOr<testing::VnetHdrSender> host = testing::VnetHdrSender::Create("kfuzz0");
    if (!host.ok()) Die(host.status());
    host_ = std::make_unique<testing::VnetHdrSender>(*std::move(host));
    absl::StatusOr<Tap> adopted = AdoptTap(std::move(tap_->fd()));
    if (!adopted.ok()) Die(adopted.status());
    auto device = NetDevice::Create(
        {.tap = *std::move(adopted), .mac = {0x02, 0, 0, 0, 0, 1}, .mtu = 1500}, loop_.get());
    if (!device.ok()) Die(device.status());
    device_ = device->get();
    transport_ = std::make_unique<MmioTransport>(std::move(*device), memory_.get(),
                                                 std::make_unique<NoInterrupt>());
    rings_[0] = {.desc = 0x1000, .avail = 0x1800, .used = 0x2000, .size = kQueueSize};
    rings_[1] = {.desc = 0x3000, .avail = 0x3800, .used = 0x4000, .size = kQueueSize};
  }

  void Run(const uint8_t* data, size_t size) {
    Input in(data, size);
    Start(in);
    while (!in.empty()) {
      switch (in.Byte() % 8) {
        case 0:
          SendTx(in);
          break;
        case 1:
          PostRx(in);
          break;
        case 2:
          RawChain(in);
          break;
        case 3: {
          const size_t len = 14 + in.U16() % 1600;
          std::vector<uint8_t> frame = testing::TestFrame(len, in.Byte());
          (void)tap_->Inject(frame);
          break;
        }
        case 4:
          (void)loop_->RunOnce(0);
          break;
        case 5:
          Write(kQueueNotify, in.Byte() % 3);  // queue 2 does not exist
          break;
        case 6:
          if (in.Byte() % 8 == 0) Start(in);  // driver reset and a fresh start
          break;
        case 7: {
          // The host stack hands the tap a TCP frame with an offload header (the kernel checks
          // it first; what it refuses is simply not sent).
          std::vector<uint8_t> frame;
          const KapselVirtioNetHdr header = OffloadHeader(in, &frame);
          (void)host_->Send(header, frame);
          break;
        }
      }
      CheckRxUsed();
    }
    for (int i = 0; i < 4; ++i) (void)loop_->RunOnce(0);
    CheckRxUsed();
    Write(kStatus, 0);
    // Nothing carries over into the next input: frames left in the tap or on the packet socket.
    std::vector<uint8_t> buffer(NetDevice::kMaxFrameSize);
    while (read(device_->tap_fd(), buffer.data(), buffer.size()) > 0) {
    }
    while (!tap_->Receive(0).empty()) {
    }
    const NetCounters c = device_->counters();
    constexpr uint64_t kMaxFrame = NetDevice::kMaxFrameSize - kNetHeaderSize;
    if (c.rx_bytes > c.rx_frames * kMaxFrame || c.tx_bytes > c.tx_frames * kMaxFrame) abort();
  }

 private:
  [[noreturn]] static void Die(const absl::Status& status) {
    std::fprintf(stderr, "net_fuzzer: %s (needs root)\n", std::string(status.message()).c_str());
    abort();
  }

  void Write(uint64_t offset, uint32_t value) {
    fuzzing::WriteRegister(*transport_, offset, value);
  }

  // A fresh start with the offloads the input picks: all, none, or any subset (which may hold
  // two the device does not offer); and EVENT_IDX or not.
  void Start(Input& in) {
    std::vector<uint8_t> zeros(0x4000);
    (void)memory_->Write(0x1000, zeros.data(), zeros.size());  // both rings
    const uint8_t mode = in.Byte();
    const uint8_t subset = mode % 4 == 0 ? 0x3f : mode % 4 == 1 ? 0 : in.Byte();
    uint64_t features = kBaseFeatures;
    for (size_t i = 0; i < std::size(kOffloadBits); ++i) {
      if ((subset >> i) & 1) features |= uint64_t{1} << kOffloadBits[i];
    }
    if ((mode & 4) != 0) features |= uint64_t{1} << kVirtioRingFEventIdx;
    mergeable_ = (features & (uint64_t{1} << kVirtioNetFMrgRxbuf)) != 0;
    fuzzing::Start(*transport_, features, absl::MakeSpan(rings_));
  }

  // A TCP/IPv4 frame of up to ~20 KiB in *frame and an offload header for it, mostly plausible
  // (NEEDS_CSUM at the TCP checksum, TSO with some MSS), with fuzzed types, sizes and offsets.
  static KapselVirtioNetHdr OffloadHeader(Input& in, std::vector<uint8_t>* frame) {
    testing::TcpFrameSpec spec;
    spec.payload_size = in.U16() % 20000;
    spec.full_checksum = false;
    *frame = testing::TcpFrame(spec);
    static constexpr uint8_t kGsoTypes[] = {kVirtioNetHdrGsoNone, kVirtioNetHdrGsoTcpv4,
                                            kVirtioNetHdrGsoTcpv6, kVirtioNetHdrGsoUdp,
                                            kVirtioNetHdrGsoTcpv4 | kVirtioNetHdrGsoEcn};
    KapselVirtioNetHdr h{};
    const uint8_t shape = in.Byte();
    h.flags = shape % 4 == 0 ? in.Byte() : kVirtioNetHdrFNeedsCsum;
    h.gso_type = kGsoTypes[in.Byte() % std::size(kGsoTypes)];
    h.gso_size = shape % 8 == 1 ? in.U16() : static_cast<uint16_t>(536 + in.U16() % 1000);
    h.hdr_len = shape % 8 == 2 ? in.U16() : testing::kTcpHeadersLen;
    h.csum_start = shape % 8 == 3 ? in.U16() : testing::kTcpCsumStart;
    h.csum_offset = shape % 8 == 4 ? in.U16() : testing::kTcpCsumOffset;
    return h;
  }

  // An address the input chooses: usually in the data area, sometimes anywhere but the rings
  // (a guest may well point buffers at its own rings; then the checks of CheckRxUsed would read
  // frame bytes).
  GuestAddress Address(Input& in) {
    const uint8_t mode = in.Byte();
    if (mode % 16 == 0) {
      const GuestAddress addr = in.U64();
      return addr < kData ? addr + kData : addr;
    }
    return kData + in.U32() % (kRamSize - kData);
  }

  // A chain of 1..4 descriptors: lengths and flags from the input (mostly sane for `writable`).
  uint16_t Chain(Ring& ring, Input& in, bool writable, GuestAddress* first) {
    const int count = in.Byte() % 4 + 1;
    const uint16_t head = ring.next_desc;
    for (int i = 0; i < count; ++i) {
      const uint16_t index = ring.TakeDescriptor();
      const uint8_t shape = in.Byte();
      uint16_t flags = writable ? kVringDescFWrite : 0;
      if (shape % 8 == 0) flags ^= kVringDescFWrite;
      if (shape % 16 == 1) flags |= kVringDescFIndirect;
      if (i + 1 < count) flags |= kVringDescFNext;
      const uint16_t next = shape % 32 == 2 ? in.U16() : ring.next_desc;
      const GuestAddress addr = Address(in);
      const uint32_t len = shape % 64 == 3 ? in.U32() : in.U16() % 0x2000;
      if (i == 0) *first = addr;
      fuzzing::PutDescriptor(*memory_, ring, index, addr, len, flags, next);
    }
    return head;
  }

  void SendTx(Input& in) {
    Ring& tx = rings_[NetDevice::kTxQueue];
    GuestAddress first = 0;
    const uint16_t head = Chain(tx, in, /*writable=*/false, &first);
    // Header and frame bytes at the first buffer: usually a clean header, sometimes raw bytes,
    // sometimes an offload header over a TCP frame (which the tap checks).
    uint8_t header[kNetHeaderSize] = {};
    const uint8_t mode = in.Byte();
    // Where the frame goes: after the header, unless that wraps around (to the rings).
    const GuestAddress body = first + sizeof(header) > first ? first + sizeof(header) : kRamSize;
    if (mode % 4 == 0) {
      absl::Span<const uint8_t> raw = in.Bytes(sizeof(header));
      std::memcpy(header, raw.data(), raw.size());
    }
    if (mode % 4 == 1) {
      std::vector<uint8_t> frame;
      const KapselVirtioNetHdr offload = OffloadHeader(in, &frame);
      std::memcpy(header, &offload, sizeof(header));
      (void)memory_->Write(body, frame.data(), frame.size());
    } else {
      absl::Span<const uint8_t> frame = in.Bytes(in.Byte());
      (void)memory_->Write(body, frame.data(), frame.size());
    }
    (void)memory_->Write(first, header, sizeof(header));
    fuzzing::PublishHead(*memory_, tx, head);
    Write(kQueueNotify, NetDevice::kTxQueue);
  }

  void PostRx(Input& in) {
    Ring& rx = rings_[NetDevice::kRxQueue];
    const int chains = in.Byte() % 8 + 1;
    for (int i = 0; i < chains; ++i) {
      GuestAddress first = 0;
      fuzzing::PublishHead(*memory_, rx, Chain(rx, in, /*writable=*/true, &first));
    }
    Write(kQueueNotify, NetDevice::kRxQueue);
  }

  // A garbage descriptor somewhere in a table and a garbage head in the available ring.
  void RawChain(Input& in) {
    Ring& ring = rings_[in.Byte() % 2];
    const uint16_t index = in.U16();
    const GuestAddress addr = Address(in);
    fuzzing::PutDescriptor(*memory_, ring, index, addr, in.U32(), in.U16(), in.U16());
    if (in.Byte() % 2 == 0) fuzzing::PublishHead(*memory_, ring, in.U16());
  }

  // Every used rx element is 0 (returned unused) or a header and at most a maximal frame; with
  // MRG_RXBUF a frame's later buffers may hold less than a header.
  void CheckRxUsed() {
    Ring& rx = rings_[NetDevice::kRxQueue];
    const uint16_t used_idx = fuzzing::UsedIdx(*memory_, rx);
    while (rx.used_seen != used_idx) {
      const uint32_t len = fuzzing::UsedLen(*memory_, rx, rx.used_seen);
      if (len > kMaxUsedLen || (len != 0 && !mergeable_ && len < kNetHeaderSize)) abort();
      ++rx.used_seen;
    }
  }

  std::unique_ptr<GuestMemory> memory_;
  std::unique_ptr<EventLoop> loop_;
  std::unique_ptr<testing::TestTap> tap_;
  std::unique_ptr<testing::VnetHdrSender> host_;
  NetDevice* device_ = nullptr;
  std::unique_ptr<MmioTransport> transport_;
  Ring rings_[2];
  bool mergeable_ = false;  // the last Start negotiated MRG_RXBUF
};

}  // namespace
}  // namespace kapsel::vmm::virtio

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // Destroyed at exit; the tap goes with the network namespace when the process ends.
  static kapsel::vmm::virtio::Fixture fixture;
  fixture.Run(data, size);
  return 0;
}
