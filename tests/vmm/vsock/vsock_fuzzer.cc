// Fuzzes the vsock device and its muxer with a hostile guest and busy host programs. The input is a
// list of actions: tx packets (raw headers, optionally fixed up so that they pass the address and
// type checks and reach the connection state machine), rx buffers of any size, host programs
// connecting with CONNECT lines, writing and closing, and turns of the event loop. A Unix listener
// at PATH_1024 accepts guest connections. Between inputs the driver resets the device. Nothing
// may crash, hang, leak or touch memory outside guest RAM.
#include <linux/virtio_vsock.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "common/unique_fd.h"
#include "tests/vmm/virtio/fuzz_driver.h"
#include "vmm/devices/virtio/mmio_transport.h"
#include "vmm/devices/virtio/ring_abi.h"
#include "vmm/devices/virtio/vsock/packet.h"
#include "vmm/devices/virtio/vsock/vsock_device.h"
#include "vmm/event_loop.h"
#include "vmm/memory/guest_memory.h"

namespace kapsel::vmm::virtio {
namespace {

using fuzzing::kQueueNotify;
using fuzzing::kStatus;
using fuzzing::NoInterrupt;
using fuzzing::Ring;

constexpr uint64_t kRamSize = 0x100000;
constexpr uint64_t kGuestCid = 3;
constexpr uint16_t kQueueSize = 64;
constexpr GuestAddress kTxHeader = 0x40000;
constexpr GuestAddress kTxPayload = 0x41000;
constexpr uint32_t kMaxTxPayload = 0x11000;
constexpr GuestAddress kRxData = 0x60000;
constexpr uint32_t kRxSlot = 0x1400;  // 16 rx buffers of up to 5000 bytes
constexpr size_t kMaxHostClients = 8;

class Fixture {
 public:
  Fixture() {
    memory_ = std::move(GuestMemory::Create({{0, kRamSize}})).value();
    loop_ = std::move(EventLoop::Create()).value();
    char dir[] = "/tmp/kapsel-vsock-fuzz-XXXXXX";
    if (mkdtemp(dir) == nullptr) abort();
    dir_ = dir;
    path_ = dir_ + "/v.sock";
    guest_listener_ = Listen(path_ + "_1024");
    auto device = VsockDevice::Create({.guest_cid = kGuestCid, .uds_path = path_}, loop_.get());
    if (!device.ok()) abort();
    transport_ = std::make_unique<MmioTransport>(std::move(*device), memory_.get(),
                                                 std::make_unique<NoInterrupt>());
    for (int q = 0; q < 3; ++q) {
      rings_[q] = {.desc = 0x1000 + 0x3000 * uint64_t(q),
                   .avail = 0x1800 + 0x3000 * uint64_t(q),
                   .used = 0x2000 + 0x3000 * uint64_t(q),
                   .size = kQueueSize};
    }
  }

  ~Fixture() {
    transport_.reset();
    guest_listener_.reset();
    unlink((path_ + "_1024").c_str());
    rmdir(dir_.c_str());
  }

  void Run(const uint8_t* data, size_t size) {
    // The last byte's low bit picks EVENT_IDX (read without consuming it, so the rest of the
    // input means what it did before).
    Start(size > 0 && (data[size - 1] & 1) != 0);
    size_t pos = 0;
    auto byte = [&]() -> uint8_t { return pos < size ? data[pos++] : 0; };
    while (pos < size) {
      switch (byte() % 7) {
        case 0:
          SendPacket(data, size, &pos);
          break;
        case 1: {
          const int count = byte() % 16 + 1;
          const uint32_t len = (uint32_t{byte()} << 8 | byte()) % 5001;
          for (int i = 0; i < count; ++i) PostRx(len);
          Write(kQueueNotify, VsockDevice::kRxQueue);
          break;
        }
        case 2:
          HostConnect(byte() % 3 == 0 ? 1024 : 5000 + byte() % 2, byte() % 4 == 0);
          break;
        case 3:
          (void)loop_->RunOnce(0);
          break;
        case 4: {  // the host listener at PATH_1024 takes a connection, maybe answers, maybe closes
          UniqueFd fd(
              accept4(guest_listener_.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC));
          if (fd && byte() % 2 == 0) {
            (void)!send(fd.get(), "answer", 6, MSG_NOSIGNAL);
            accepted_.push_back(std::move(fd));
          }
          break;
        }
        case 5:
          if (!clients_.empty()) {
            const size_t i = byte() % clients_.size();
            std::string bytes(byte() * 64u, 'h');
            (void)!send(clients_[i].get(), bytes.data(), bytes.size(), MSG_NOSIGNAL);
          }
          break;
        case 6:
          if (!clients_.empty()) clients_.erase(clients_.begin() + byte() % clients_.size());
          break;
      }
    }
    for (int i = 0; i < 4; ++i) (void)loop_->RunOnce(0);
    Write(kStatus, 0);  // reset: every connection closes
    clients_.clear();
    accepted_.clear();
    while (true) {  // connections the guest asked for that nobody accepted
      UniqueFd fd(accept4(guest_listener_.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC));
      if (!fd) break;
    }
    for (int i = 0; i < 4; ++i) (void)loop_->RunOnce(0);
  }

 private:
  static UniqueFd Listen(const std::string& path) {
    UniqueFd fd(socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", path.c_str());
    unlink(path.c_str());
    if (bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
        listen(fd.get(), 16) != 0) {
      abort();
    }
    return fd;
  }

  void Write(uint64_t offset, uint32_t value) {
    fuzzing::WriteRegister(*transport_, offset, value);
  }

  void Start(bool event_idx) {
    std::vector<uint8_t> zeros(0x9000);
    (void)memory_->Write(0x1000, zeros.data(), zeros.size());  // all rings
    uint64_t features = uint64_t{1} << 32;                     // VIRTIO_F_VERSION_1
    if (event_idx) features |= uint64_t{1} << kVirtioRingFEventIdx;
    fuzzing::Start(*transport_, features, absl::MakeSpan(rings_));
  }

  // Adds a one- or two-buffer chain and publishes it.
  void Publish(Ring& ring, GuestAddress a, uint32_t a_len, GuestAddress b, uint32_t b_len,
               uint16_t flags) {
    const uint16_t head = ring.next_desc;
    auto put = [&](GuestAddress addr, uint32_t len, uint16_t f, bool more) {
      const uint16_t index = ring.TakeDescriptor();
      fuzzing::PutDescriptor(*memory_, ring, index, addr, len,
                             static_cast<uint16_t>(f | (more ? kVringDescFNext : 0)),
                             more ? ring.next_desc : 0);
    };
    put(a, a_len, flags, b_len > 0);
    if (b_len > 0) put(b, b_len, flags, false);
    fuzzing::PublishHead(*memory_, ring, head);
  }

  void PostRx(uint32_t len) {
    Ring& rx = rings_[VsockDevice::kRxQueue];
    Publish(rx, kRxData + kRxSlot * uint64_t(rx.next_desc % 16), len, 0, 0, kVringDescFWrite);
  }

  void SendPacket(const uint8_t* data, size_t size, size_t* pos) {
    uint8_t raw[vsock::kHeaderSize] = {};
    const size_t n = std::min(sizeof(raw), size - *pos);
    std::memcpy(raw, data + *pos, n);
    *pos += n;
    const uint8_t fixups = *pos < size ? data[(*pos)++] : 0xff;
    uint32_t payload_len = 0;
    if (*pos + 2 <= size) {
      payload_len = (uint32_t{data[*pos]} << 8 | data[*pos + 1]) * 2 % kMaxTxPayload;
      *pos += 2;
    }
    vsock::PacketHeader h = *vsock::DecodeHeader(raw);
    if (fixups & 1) h.src_cid = kGuestCid;
    if (fixups & 2) h.dst_cid = vsock::kHostCid;
    if (fixups & 4) h.type = VIRTIO_VSOCK_TYPE_STREAM;
    if (fixups & 8) h.len = payload_len;
    if (fixups & 16) h.op = h.op % 8;
    if (fixups & 32) h.dst_port = h.dst_port % 2 == 0 ? 1024 : (1u << 30) + h.dst_port % 4;
    if (fixups & 64) h.src_port = 5000 + h.src_port % 2;
    const auto bytes = vsock::EncodeHeader(h);
    (void)memory_->Write(kTxHeader, bytes.data(), bytes.size());
    const size_t copy = std::min<size_t>(payload_len, size - *pos);
    (void)memory_->Write(kTxPayload, data + *pos, copy);
    *pos += copy;
    Publish(rings_[VsockDevice::kTxQueue], kTxHeader, vsock::kHeaderSize, kTxPayload, payload_len,
            0);
    Write(kQueueNotify, VsockDevice::kTxQueue);
  }

  void HostConnect(uint32_t port, bool garbage) {
    if (clients_.size() >= kMaxHostClients) return;
    UniqueFd fd(socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", path_.c_str());
    if (connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) return;
    const std::string line = garbage ? "CONNECT 12x4\n" : "CONNECT " + std::to_string(port) + "\n";
    (void)!send(fd.get(), line.data(), line.size(), MSG_NOSIGNAL);
    clients_.push_back(std::move(fd));
  }

  std::unique_ptr<GuestMemory> memory_;
  std::unique_ptr<EventLoop> loop_;
  std::string dir_;
  std::string path_;
  UniqueFd guest_listener_;
  std::unique_ptr<MmioTransport> transport_;
  Ring rings_[3];
  std::vector<UniqueFd> clients_;
  std::vector<UniqueFd> accepted_;
};

}  // namespace
}  // namespace kapsel::vmm::virtio

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // Destroyed at exit: closes the sockets and removes the temporary directory.
  static kapsel::vmm::virtio::Fixture fixture;
  fixture.Run(data, size);
  return 0;
}
