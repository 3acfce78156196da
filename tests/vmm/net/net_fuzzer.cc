// Fuzzes the virtio-net device with a hostile guest and a busy host network. The input is a list
// of actions: tx chains of one to four descriptors with fuzzed addresses, lengths, flags and
// header bytes (mostly inside guest RAM, so that chains are often valid), rx chains of fuzzed
// sizes and flags, raw garbage descriptors and available-ring entries in either queue, frames of
// any size injected into the tap, turns of the event loop, and driver resets. Nothing may crash,
// hang, leak or touch memory outside guest RAM, and every rx buffer the device returns holds 0 or
// a whole frame with its header.
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
#include <memory>
#include <vector>

#include "common/unique_fd.h"
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
    Start();
    Input in(data, size);
    while (!in.empty()) {
      switch (in.Byte() % 7) {
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
          if (in.Byte() % 8 == 0) Start();  // driver reset and a fresh start
          break;
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
    if (c.rx_bytes > c.rx_frames * 65535 || c.tx_bytes > c.tx_frames * 65535) abort();
  }

 private:
  [[noreturn]] static void Die(const absl::Status& status) {
    std::fprintf(stderr, "net_fuzzer: %s (needs root)\n", std::string(status.message()).c_str());
    abort();
  }

  void Write(uint64_t offset, uint32_t value) {
    fuzzing::WriteRegister(*transport_, offset, value);
  }

  void Start() {
    std::vector<uint8_t> zeros(0x4000);
    (void)memory_->Write(0x1000, zeros.data(), zeros.size());  // both rings
    fuzzing::Start(*transport_,
                   (uint64_t{1} << 32) |  // VIRTIO_F_VERSION_1
                       (1u << kVirtioNetFMac) | (1u << kVirtioNetFStatus) | (1u << kVirtioNetFMtu),
                   absl::MakeSpan(rings_));
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
    // Header and frame bytes at the first buffer: usually a clean header.
    uint8_t header[kNetHeaderSize] = {};
    if (in.Byte() % 4 == 0) {
      absl::Span<const uint8_t> raw = in.Bytes(sizeof(header));
      std::memcpy(header, raw.data(), raw.size());
    }
    (void)memory_->Write(first, header, sizeof(header));
    absl::Span<const uint8_t> frame = in.Bytes(in.Byte());
    (void)memory_->Write(first + sizeof(header), frame.data(), frame.size());
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

  // Every used rx element is 0 (returned unused) or a header and at most a maximal frame.
  void CheckRxUsed() {
    Ring& rx = rings_[NetDevice::kRxQueue];
    const uint16_t used_idx = fuzzing::UsedIdx(*memory_, rx);
    while (rx.used_seen != used_idx) {
      const uint32_t len = fuzzing::UsedLen(*memory_, rx, rx.used_seen);
      if (len != 0 && (len < kNetHeaderSize || len > kMaxUsedLen)) abort();
      ++rx.used_seen;
    }
  }

  std::unique_ptr<GuestMemory> memory_;
  std::unique_ptr<EventLoop> loop_;
  std::unique_ptr<testing::TestTap> tap_;
  NetDevice* device_ = nullptr;
  std::unique_ptr<MmioTransport> transport_;
  Ring rings_[2];
};

}  // namespace
}  // namespace kapsel::vmm::virtio

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // Destroyed at exit; the tap goes with the network namespace when the process ends.
  static kapsel::vmm::virtio::Fixture fixture;
  fixture.Run(data, size);
  return 0;
}
