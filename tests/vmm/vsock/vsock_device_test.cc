// The vsock device through the virtio-mmio transport, with real guest memory: the test plays the
// guest driver (rx buffers, tx packets) and host programs on the Unix sockets, while the device's
// sockets are served by an event loop on its own thread, as in the VMM.
#include "vmm/devices/virtio/vsock/vsock_device.h"

#include <dirent.h>
#include <linux/virtio_config.h>
#include <linux/virtio_ids.h>
#include <linux/virtio_mmio.h>
#include <linux/virtio_vsock.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/unique_fd.h"
#include "gtest/gtest.h"
#include "tests/vmm/virtio/virtio_test_util.h"
#include "vmm/devices/virtio/mmio_transport.h"
#include "vmm/devices/virtio/ring_abi.h"
#include "vmm/devices/virtio/vsock/packet.h"

namespace kapsel::vmm::virtio {
namespace {

using ::kapsel::vmm::virtio::testing::FakeDriver;
using ::kapsel::vmm::virtio::testing::InterruptCount;
using ::kapsel::vmm::virtio::testing::MakeGuestMemory;
using ::kapsel::vmm::virtio::testing::MmioDriver;
using ::kapsel::vmm::virtio::testing::RecordingInterrupt;
using vsock::PacketHeader;

constexpr uint64_t kGuestCid = 3;
// With EVENT_IDX, the tests notify only when the device asked for it
// (FakeDriver::TakeNotifyNeeded).
constexpr uint64_t kFeatures =
    (uint64_t{1} << VIRTIO_F_VERSION_1) | (uint64_t{1} << kVirtioRingFEventIdx);
constexpr uint16_t kQueueSize = 64;
constexpr int kRxBuffers = 32;
constexpr uint32_t kRxBufferSize = vsock::kHeaderSize + 4096;
constexpr GuestAddress kRxData = 0x10000;  // kRxBuffers * 0x1100 bytes
constexpr GuestAddress kTxHeader = 0x40000;
constexpr GuestAddress kTxPayload = 0x41000;  // up to 0x11000 bytes
constexpr uint32_t kFirstHostPort = vsock::kFirstHostPort;
const absl::Duration kWait = absl::Seconds(5);

int CountOpenFds() {
  int n = 0;
  DIR* dir = opendir("/proc/self/fd");
  if (dir == nullptr) return -1;
  while (readdir(dir) != nullptr) ++n;
  closedir(dir);
  return n - 3;  // ".", ".." and the directory's own fd
}

// Removes `dir` and the files the test created in it (host listeners).
void RemoveDir(const std::string& dir) {
  if (DIR* d = opendir(dir.c_str())) {
    while (dirent* e = readdir(d)) {
      if (std::strcmp(e->d_name, ".") != 0 && std::strcmp(e->d_name, "..") != 0) {
        unlink((dir + "/" + e->d_name).c_str());
      }
    }
    closedir(d);
  }
  rmdir(dir.c_str());
}

struct RxPacket {
  PacketHeader header;
  std::string payload;
};

// The header a guest sends from `guest_port` to host port `host_port`.
PacketHeader GuestHeader(uint16_t op, uint32_t guest_port, uint32_t host_port,
                         uint32_t buf_alloc = 65536, uint32_t fwd_cnt = 0) {
  PacketHeader h;
  h.src_cid = kGuestCid;
  h.dst_cid = vsock::kHostCid;
  h.src_port = guest_port;
  h.dst_port = host_port;
  h.type = VIRTIO_VSOCK_TYPE_STREAM;
  h.op = op;
  h.buf_alloc = buf_alloc;
  h.fwd_cnt = fwd_cnt;
  return h;
}

UniqueFd UnixSocket() {
  UniqueFd fd(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  timeval tv{5, 0};
  setsockopt(fd.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  setsockopt(fd.get(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
  return fd;
}

sockaddr_un Address(const std::string& path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, path.c_str(), sizeof(addr.sun_path) - 1);
  return addr;
}

UniqueFd ConnectTo(const std::string& path) {
  UniqueFd fd = UnixSocket();
  sockaddr_un addr = Address(path);
  EXPECT_EQ(connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0)
      << path << ": " << strerror(errno);
  return fd;
}

UniqueFd ListenAt(const std::string& path) {
  UniqueFd fd = UnixSocket();
  sockaddr_un addr = Address(path);
  EXPECT_EQ(bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  EXPECT_EQ(listen(fd.get(), 8), 0);
  return fd;
}

void WriteAll(int fd, const std::string& data) {
  ASSERT_EQ(send(fd, data.data(), data.size(), MSG_NOSIGNAL), static_cast<ssize_t>(data.size()));
}

// Reads exactly n bytes (fewer on EOF or timeout).
std::string ReadN(int fd, size_t n) {
  std::string out;
  char buf[4096];
  while (out.size() < n) {
    ssize_t r = read(fd, buf, std::min(sizeof(buf), n - out.size()));
    if (r <= 0) break;
    out.append(buf, r);
  }
  return out;
}

std::string ReadLine(int fd) {
  std::string line;
  char c;
  while (line.size() < 64 && read(fd, &c, 1) == 1) {
    line.push_back(c);
    if (c == '\n') break;
  }
  return line;
}

// True when the peer closed: end of file, or a reset when it closed with our bytes unread (not a
// timeout).
bool PeerClosed(int fd) {
  char c;
  const ssize_t n = read(fd, &c, 1);
  return n == 0 || (n < 0 && errno == ECONNRESET);
}

class VsockDeviceTest : public ::testing::Test {
 protected:
  VsockDeviceTest()
      : memory_(MakeGuestMemory()),
        rx_(*memory_, kQueueSize, 0x1000, 0x1800, 0x2000),
        tx_(*memory_, kQueueSize, 0x3000, 0x3800, 0x4000),
        event_(*memory_, kQueueSize, 0x5000, 0x5800, 0x6000) {}

  void SetUp() override {
    fds_before_ = CountOpenFds();
    char dir[] = "/tmp/kapsel-vsock-test-XXXXXX";
    ASSERT_NE(mkdtemp(dir), nullptr);
    dir_ = dir;
    path_ = dir_ + "/vsock.sock";
    absl::StatusOr<std::unique_ptr<EventLoop>> loop = EventLoop::Create();
    ASSERT_TRUE(loop.ok()) << loop.status();
    loop_ = *std::move(loop);
    StartDevice();
  }

  void StartDevice(vsock::MuxerOptions options = {}) {
    options.guest_cid = kGuestCid;
    options.uds_path = path_;
    absl::StatusOr<std::unique_ptr<VsockDevice>> device = VsockDevice::Create(options, loop_.get());
    ASSERT_TRUE(device.ok()) << device.status();
    device_ = device->get();
    transport_ = std::make_unique<MmioTransport>(std::move(*device), memory_.get(),
                                                 std::make_unique<RecordingInterrupt>(&irq_));
    MmioDriver mmio(*transport_);
    const uint32_t status = mmio.Negotiate(kFeatures);
    ASSERT_NE(status & VIRTIO_CONFIG_S_FEATURES_OK, 0u);
    mmio.SetUpQueue(VsockDevice::kRxQueue, rx_);
    mmio.SetUpQueue(VsockDevice::kTxQueue, tx_);
    mmio.SetUpQueue(VsockDevice::kEventQueue, event_);
    mmio.Write32(VIRTIO_MMIO_STATUS, status | VIRTIO_CONFIG_S_DRIVER_OK);
    ASSERT_NE(mmio.Read32(VIRTIO_MMIO_STATUS) & VIRTIO_CONFIG_S_DRIVER_OK, 0u)
        << transport_->last_error();
    stop_ = false;
    loop_thread_ = std::thread([this] {
      while (!stop_) (void)loop_->RunOnce(5);
    });
  }

  void StopDevice() {
    stop_ = true;
    if (loop_thread_.joinable()) loop_thread_.join();
    transport_.reset();
    device_ = nullptr;
  }

  void TearDown() override {
    StopDevice();
    loop_.reset();
    EXPECT_NE(access(path_.c_str(), F_OK), 0) << "the listener's socket file is left behind";
    RemoveDir(dir_);
    EXPECT_EQ(CountOpenFds(), fds_before_) << "file descriptors leaked";
  }

  // Posts `n` rx buffers (of kRxBufferSize) and notifies.
  void PostRxBuffers(int n = kRxBuffers) {
    for (int i = 0; i < n; ++i) PostRxBuffer(kRxData + 0x1100 * uint64_t(i % kRxBuffers));
    NotifyRx();
  }
  // Notify a queue if the device asked for it (EVENT_IDX), as a driver does.
  void NotifyRx() {
    if (rx_.TakeNotifyNeeded()) transport_->NotifyQueue(VsockDevice::kRxQueue);
  }
  void NotifyTx() {
    if (tx_.TakeNotifyNeeded()) transport_->NotifyQueue(VsockDevice::kTxQueue);
  }
  void PostRxBuffer(GuestAddress addr) {
    const uint16_t head = rx_.AddChain({{addr, kRxBufferSize, true}});
    rx_addr_[head] = addr;
    rx_.Publish(head);
  }

  // Collects used rx buffers (reposting each) into received_.
  void CollectRx() {
    bool reposted = false;
    while (rx_.UsedIdx() != rx_seen_) {
      const testing::UsedElem used = rx_.Used(rx_seen_++);
      const GuestAddress addr = rx_addr_[static_cast<uint16_t>(used.id)];
      std::string bytes(used.len, '\0');
      EXPECT_TRUE(memory_->Read(addr, bytes.data(), bytes.size()).ok());
      absl::StatusOr<PacketHeader> h = vsock::DecodeHeader(
          absl::MakeConstSpan(reinterpret_cast<uint8_t*>(bytes.data()), bytes.size()));
      EXPECT_TRUE(h.ok()) << "used rx buffer of " << used.len << " bytes";
      if (h.ok()) {
        EXPECT_EQ(h->len + vsock::kHeaderSize, used.len);
        received_.push_back({*h, bytes.substr(vsock::kHeaderSize)});
      }
      if (repost_) {
        PostRxBuffer(addr);
        reposted = true;
      }
    }
    if (reposted) NotifyRx();
  }

  // The next packet the device sent the guest, within kWait.
  std::optional<RxPacket> NextRx(absl::Duration timeout = kWait) {
    const absl::Time deadline = absl::Now() + timeout;
    while (true) {
      CollectRx();
      if (!received_.empty()) {
        RxPacket p = received_.front();
        received_.pop_front();
        return p;
      }
      if (absl::Now() > deadline) return std::nullopt;
      absl::SleepFor(absl::Milliseconds(1));
    }
  }

  // Waits for the next packet and checks its op.
  RxPacket ExpectRx(uint16_t op) {
    std::optional<RxPacket> p = NextRx();
    EXPECT_TRUE(p.has_value()) << "no packet for the guest (expected op " << op << ")";
    if (!p.has_value()) return {};
    EXPECT_EQ(p->header.op, op) << vsock::DebugString(p->header);
    EXPECT_EQ(p->header.src_cid, vsock::kHostCid);
    EXPECT_EQ(p->header.dst_cid, kGuestCid);
    EXPECT_EQ(p->header.type, VIRTIO_VSOCK_TYPE_STREAM);
    return *p;
  }

  void ExpectNoRx(absl::Duration wait = absl::Milliseconds(100)) {
    std::optional<RxPacket> p = NextRx(wait);
    EXPECT_FALSE(p.has_value()) << vsock::DebugString(p->header);
  }

  // Sends one packet on the tx queue (the header's len is set from the payload unless
  // `keep_len`).
  void SendTx(PacketHeader h, const std::string& payload = "", bool keep_len = false) {
    if (!keep_len) h.len = static_cast<uint32_t>(payload.size());
    const auto bytes = vsock::EncodeHeader(h);
    ASSERT_TRUE(memory_->Write(kTxHeader, bytes.data(), bytes.size()).ok());
    ASSERT_LE(payload.size(), 0x11000u);
    ASSERT_TRUE(memory_->Write(kTxPayload, payload.data(), payload.size()).ok());
    std::vector<testing::Buffer> chain = {{kTxHeader, vsock::kHeaderSize, false}};
    if (!payload.empty()) {
      chain.push_back({kTxPayload, static_cast<uint32_t>(payload.size()), false});
    }
    const uint16_t used_before = tx_.UsedIdx();
    tx_.Publish(tx_.AddChain(chain));
    NotifyTx();
    EXPECT_EQ(tx_.UsedIdx(), static_cast<uint16_t>(used_before + 1));
  }

  // A host program connects to guest port `guest_port`; the guest accepts. Returns the host
  // socket and fills *host_port with the port the device chose.
  UniqueFd HostConnect(uint32_t guest_port, uint32_t* host_port, uint32_t guest_buf_alloc = 65536) {
    UniqueFd host = ConnectTo(path_);
    WriteAll(host.get(), absl::StrCat("CONNECT ", guest_port, "\n"));
    RxPacket request = ExpectRx(VIRTIO_VSOCK_OP_REQUEST);
    EXPECT_EQ(request.header.dst_port, guest_port);
    *host_port = request.header.src_port;
    SendTx(GuestHeader(VIRTIO_VSOCK_OP_RESPONSE, guest_port, *host_port, guest_buf_alloc));
    EXPECT_EQ(ReadLine(host.get()), absl::StrCat("OK ", *host_port, "\n"));
    return host;
  }

  int fds_before_ = 0;
  std::string dir_;
  std::string path_;
  InterruptCount irq_;
  std::unique_ptr<GuestMemory> memory_;
  FakeDriver rx_;
  FakeDriver tx_;
  FakeDriver event_;
  std::unique_ptr<EventLoop> loop_;
  std::unique_ptr<MmioTransport> transport_;
  VsockDevice* device_ = nullptr;
  std::atomic<bool> stop_{false};
  std::thread loop_thread_;
  std::map<uint16_t, GuestAddress> rx_addr_;
  uint16_t rx_seen_ = 0;
  bool repost_ = true;
  std::deque<RxPacket> received_;
};

TEST_F(VsockDeviceTest, IdentityAndConfig) {
  MmioDriver mmio(*transport_);
  EXPECT_EQ(mmio.Read32(VIRTIO_MMIO_DEVICE_ID), uint32_t{VIRTIO_ID_VSOCK});
  EXPECT_EQ(mmio.Read32(VIRTIO_MMIO_CONFIG), kGuestCid);
  EXPECT_EQ(mmio.Read32(VIRTIO_MMIO_CONFIG + 4), 0u);
  EXPECT_EQ(transport_->name(), "virtio-mmio:virtio-vsock");
  // The rx queue is kept small: the guest fills it with 4 KiB buffers it never gives back.
  for (uint32_t queue : {0u, 1u, 2u}) {
    mmio.Write32(VIRTIO_MMIO_QUEUE_SEL, queue);
    EXPECT_EQ(mmio.Read32(VIRTIO_MMIO_QUEUE_NUM_MAX), queue == 0 ? 64u : 256u) << "queue " << queue;
  }
  struct stat st;
  ASSERT_EQ(stat(path_.c_str(), &st), 0);
  EXPECT_TRUE(S_ISSOCK(st.st_mode));
}

TEST_F(VsockDeviceTest, HostConnectsToGuestAndDataFlowsBothWays) {
  PostRxBuffers();
  uint32_t port = 0;
  UniqueFd host = HostConnect(5000, &port);
  EXPECT_EQ(port, kFirstHostPort);

  WriteAll(host.get(), "ping from the host");
  RxPacket data = ExpectRx(VIRTIO_VSOCK_OP_RW);
  EXPECT_EQ(data.payload, "ping from the host");
  EXPECT_EQ(data.header.src_port, port);
  EXPECT_EQ(data.header.dst_port, 5000u);
  EXPECT_EQ(data.header.buf_alloc, vsock::kBufAlloc);

  SendTx(GuestHeader(VIRTIO_VSOCK_OP_RW, 5000, port), "pong from the guest");
  EXPECT_EQ(ReadN(host.get(), 19), "pong from the guest");

  // The host half-closes: the guest hears SHUTDOWN(SEND); then the guest closes: RST, and the
  // host socket ends.
  shutdown(host.get(), SHUT_WR);
  RxPacket shut = ExpectRx(VIRTIO_VSOCK_OP_SHUTDOWN);
  EXPECT_EQ(shut.header.flags, uint32_t{VIRTIO_VSOCK_SHUTDOWN_SEND});
  PacketHeader close = GuestHeader(VIRTIO_VSOCK_OP_SHUTDOWN, 5000, port);
  close.flags = VIRTIO_VSOCK_SHUTDOWN_SEND | VIRTIO_VSOCK_SHUTDOWN_RCV;
  SendTx(close);
  ExpectRx(VIRTIO_VSOCK_OP_RST);
  EXPECT_TRUE(PeerClosed(host.get()));
  EXPECT_EQ(device_->muxer().num_connections(), 0u);
  EXPECT_GT(irq_.triggers, 0);
}

TEST_F(VsockDeviceTest, HostPortsAreUniquePerLiveConnection) {
  PostRxBuffers();
  uint32_t a = 0, b = 0;
  UniqueFd first = HostConnect(5000, &a);
  UniqueFd second = HostConnect(5000, &b);
  EXPECT_EQ(a, kFirstHostPort);
  EXPECT_EQ(b, kFirstHostPort + 1);
}

TEST_F(VsockDeviceTest, GuestRstClosesTheHostSocket) {
  PostRxBuffers();
  UniqueFd host = ConnectTo(path_);
  WriteAll(host.get(), "CONNECT 6000\n");
  RxPacket request = ExpectRx(VIRTIO_VSOCK_OP_REQUEST);
  SendTx(GuestHeader(VIRTIO_VSOCK_OP_RST, 6000, request.header.src_port));
  // The host program learns why, then the socket closes.
  EXPECT_EQ(ReadLine(host.get()), "ERR the guest refused or reset the connection (RST)\n");
  EXPECT_TRUE(PeerClosed(host.get()));
  ExpectNoRx();  // no answer to a RST
  EXPECT_EQ(device_->muxer().num_connections(), 0u);
}

TEST_F(VsockDeviceTest, GuestAnsweringARequestWithoutResponseIsAnError) {
  PostRxBuffers();
  UniqueFd host = ConnectTo(path_);
  WriteAll(host.get(), "CONNECT 6001\n");
  RxPacket request = ExpectRx(VIRTIO_VSOCK_OP_REQUEST);
  SendTx(GuestHeader(VIRTIO_VSOCK_OP_CREDIT_UPDATE, 6001, request.header.src_port));
  EXPECT_EQ(ReadLine(host.get()), absl::StrCat("ERR the guest answered the request with op ",
                                               VIRTIO_VSOCK_OP_CREDIT_UPDATE, "\n"));
  EXPECT_TRUE(PeerClosed(host.get()));
  ExpectRx(VIRTIO_VSOCK_OP_RST);  // the guest hears the stream is gone
  EXPECT_EQ(device_->muxer().num_connections(), 0u);
}

TEST_F(VsockDeviceTest, MalformedConnectLinesAreClosed) {
  PostRxBuffers();
  for (const std::string& line : std::vector<std::string>{
           "CONNECT\n", "CONNECT x\n", "connect 5\n", "CONNECT -1\n", "CONNECT 99999999999\n",
           "CONNECT  5\n", "CONNECT +5\n", std::string(40, 'C')}) {
    UniqueFd host = ConnectTo(path_);
    WriteAll(host.get(), line);
    EXPECT_TRUE(PeerClosed(host.get())) << line;
  }
  ExpectNoRx();
}

TEST_F(VsockDeviceTest, SilentClientTimesOut) {
  StopDevice();
  vsock::MuxerOptions options;
  options.connect_line_timeout = absl::Milliseconds(200);
  StartDevice(options);
  UniqueFd host = ConnectTo(path_);
  WriteAll(host.get(), "CONN");
  EXPECT_TRUE(PeerClosed(host.get()));
}

TEST_F(VsockDeviceTest, ConnectWaitsForRxBuffersAndResumesOnNotify) {
  UniqueFd host = ConnectTo(path_);
  WriteAll(host.get(), "CONNECT 7000\n");
  absl::SleepFor(absl::Milliseconds(100));
  EXPECT_EQ(rx_.UsedIdx(), 0);  // no buffers yet
  PostRxBuffers(1);
  RxPacket request = ExpectRx(VIRTIO_VSOCK_OP_REQUEST);
  EXPECT_EQ(request.header.dst_port, 7000u);
}

TEST_F(VsockDeviceTest, GuestConnectsToAHostListener) {
  PostRxBuffers();
  UniqueFd listener = ListenAt(path_ + "_1024");
  SendTx(GuestHeader(VIRTIO_VSOCK_OP_REQUEST, 40000, 1024));
  RxPacket response = ExpectRx(VIRTIO_VSOCK_OP_RESPONSE);
  EXPECT_EQ(response.header.src_port, 1024u);
  EXPECT_EQ(response.header.dst_port, 40000u);
  UniqueFd accepted(accept4(listener.get(), nullptr, nullptr, SOCK_CLOEXEC));
  ASSERT_TRUE(accepted.valid());
  timeval tv{5, 0};
  setsockopt(accepted.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));

  SendTx(GuestHeader(VIRTIO_VSOCK_OP_RW, 40000, 1024), "hello host\n");
  EXPECT_EQ(ReadLine(accepted.get()), "hello host\n");
  WriteAll(accepted.get(), "hello guest\n");
  EXPECT_EQ(ExpectRx(VIRTIO_VSOCK_OP_RW).payload, "hello guest\n");

  // The guest half-closes: the host reads EOF after the data.
  PacketHeader shut = GuestHeader(VIRTIO_VSOCK_OP_SHUTDOWN, 40000, 1024);
  shut.flags = VIRTIO_VSOCK_SHUTDOWN_SEND;
  SendTx(GuestHeader(VIRTIO_VSOCK_OP_RW, 40000, 1024), "bye");
  SendTx(shut);
  EXPECT_EQ(ReadN(accepted.get(), 3), "bye");
  EXPECT_TRUE(PeerClosed(accepted.get()));
  // The host closes too: both directions are done, so SHUTDOWN(SEND|RCV) and the guest's RST.
  accepted.reset();
  RxPacket both = ExpectRx(VIRTIO_VSOCK_OP_SHUTDOWN);
  if (both.header.flags == VIRTIO_VSOCK_SHUTDOWN_SEND) both = ExpectRx(VIRTIO_VSOCK_OP_SHUTDOWN);
  EXPECT_EQ(both.header.flags, uint32_t{VIRTIO_VSOCK_SHUTDOWN_SEND | VIRTIO_VSOCK_SHUTDOWN_RCV});
  EXPECT_EQ(device_->muxer().num_connections(), 1u);
  SendTx(GuestHeader(VIRTIO_VSOCK_OP_RST, 40000, 1024));
  EXPECT_EQ(device_->muxer().num_connections(), 0u);
}

TEST_F(VsockDeviceTest, GuestConnectingWhereNothingListensGetsRst) {
  PostRxBuffers();
  SendTx(GuestHeader(VIRTIO_VSOCK_OP_REQUEST, 40001, 2048));
  RxPacket rst = ExpectRx(VIRTIO_VSOCK_OP_RST);
  EXPECT_EQ(rst.header.src_port, 2048u);
  EXPECT_EQ(rst.header.dst_port, 40001u);
  // A stale socket file with nobody behind it: the same.
  { UniqueFd gone = ListenAt(path_ + "_2049"); }
  SendTx(GuestHeader(VIRTIO_VSOCK_OP_REQUEST, 40001, 2049));
  ExpectRx(VIRTIO_VSOCK_OP_RST);
  unlink((path_ + "_2049").c_str());
}

TEST_F(VsockDeviceTest, HostilePackets) {
  PostRxBuffers();
  // Unknown connection: RST, except in answer to a RST.
  SendTx(GuestHeader(VIRTIO_VSOCK_OP_RW, 40000, 1024), "data");
  ExpectRx(VIRTIO_VSOCK_OP_RST);
  SendTx(GuestHeader(VIRTIO_VSOCK_OP_RST, 40000, 1024));
  SendTx(GuestHeader(VIRTIO_VSOCK_OP_CREDIT_UPDATE, 40000, 1024));
  ExpectRx(VIRTIO_VSOCK_OP_RST);
  // Spoofed source or foreign destination: dropped without a word.
  PacketHeader h = GuestHeader(VIRTIO_VSOCK_OP_REQUEST, 40000, 1024);
  h.src_cid = 4;
  SendTx(h);
  h = GuestHeader(VIRTIO_VSOCK_OP_REQUEST, 40000, 1024);
  h.dst_cid = 5;
  SendTx(h);
  ExpectNoRx();
  // Wrong type, unknown op, lying lengths: RST.
  h = GuestHeader(VIRTIO_VSOCK_OP_REQUEST, 40000, 1024);
  h.type = VIRTIO_VSOCK_TYPE_SEQPACKET;
  SendTx(h);
  ExpectRx(VIRTIO_VSOCK_OP_RST);
  SendTx(GuestHeader(99, 40000, 1024));
  ExpectRx(VIRTIO_VSOCK_OP_RST);
  h = GuestHeader(VIRTIO_VSOCK_OP_RW, 40000, 1024);
  h.len = 1000;
  SendTx(h, "short", /*keep_len=*/true);
  ExpectRx(VIRTIO_VSOCK_OP_RST);
  h.len = UINT32_MAX;
  SendTx(h, "", /*keep_len=*/true);
  ExpectRx(VIRTIO_VSOCK_OP_RST);
  SendTx(GuestHeader(VIRTIO_VSOCK_OP_RW, 40000, 1024), std::string(vsock::kMaxPayload + 1, 'x'));
  ExpectRx(VIRTIO_VSOCK_OP_RST);
  // Chains too short for a header, or malformed: returned, nothing else happens.
  const uint16_t before = tx_.UsedIdx();
  tx_.Publish(tx_.AddChain({{kTxHeader, 10, false}}));
  tx_.Publish(tx_.AddChain({{kTxHeader, 64, true}}));    // write-only
  tx_.SetDescriptor(60, kTxHeader, 44, 1 /*NEXT*/, 60);  // a loop
  tx_.Publish(60);
  NotifyTx();
  EXPECT_EQ(tx_.UsedIdx(), static_cast<uint16_t>(before + 3));
  ExpectNoRx();
  EXPECT_EQ(device_->muxer().num_connections(), 0u);

  // A protocol violation on an open stream resets it and closes the host socket.
  uint32_t port = 0;
  UniqueFd host = HostConnect(5000, &port);
  SendTx(GuestHeader(VIRTIO_VSOCK_OP_REQUEST, 5000, port));
  ExpectRx(VIRTIO_VSOCK_OP_RST);
  EXPECT_TRUE(PeerClosed(host.get()));
}

TEST_F(VsockDeviceTest, GuestCreditLimitsHostData) {
  PostRxBuffers();
  uint32_t port = 0;
  UniqueFd host = HostConnect(5000, &port, /*guest_buf_alloc=*/100);
  WriteAll(host.get(), std::string(300, 'a'));
  RxPacket first = ExpectRx(VIRTIO_VSOCK_OP_RW);
  EXPECT_EQ(first.payload.size(), 100u);
  ExpectNoRx();  // stalled at zero credit
  SendTx(GuestHeader(VIRTIO_VSOCK_OP_CREDIT_UPDATE, 5000, port, 100, 100));
  EXPECT_EQ(ExpectRx(VIRTIO_VSOCK_OP_RW).payload.size(), 100u);
  ExpectNoRx();
  SendTx(GuestHeader(VIRTIO_VSOCK_OP_CREDIT_UPDATE, 5000, port, 1000, 200));
  EXPECT_EQ(ExpectRx(VIRTIO_VSOCK_OP_RW).payload.size(), 100u);
  // A credit request is answered with our buffer and forwarded count.
  SendTx(GuestHeader(VIRTIO_VSOCK_OP_RW, 5000, port, 1000, 300), "xyz");
  EXPECT_EQ(ReadN(host.get(), 3), "xyz");
  SendTx(GuestHeader(VIRTIO_VSOCK_OP_CREDIT_REQUEST, 5000, port, 1000, 300));
  RxPacket update = ExpectRx(VIRTIO_VSOCK_OP_CREDIT_UPDATE);
  EXPECT_EQ(update.header.buf_alloc, vsock::kBufAlloc);
  EXPECT_EQ(update.header.fwd_cnt, 3u);
}

TEST_F(VsockDeviceTest, GuestExceedingOurCreditIsReset) {
  PostRxBuffers();
  uint32_t port = 0;
  UniqueFd host = HostConnect(5000, &port);
  // The host does not read: the socket buffer fills, then our 256 KiB, then RST. The guest
  // ignores our credit updates.
  const std::string chunk(vsock::kMaxPayload, 'z');
  int sent = 0;
  bool reset = false;
  for (; sent < 64 && !reset; ++sent) {
    SendTx(GuestHeader(VIRTIO_VSOCK_OP_RW, 5000, port), chunk);
    CollectRx();
    for (const RxPacket& p : received_) {
      if (p.header.op == VIRTIO_VSOCK_OP_RST) reset = true;
    }
  }
  EXPECT_TRUE(reset);
  EXPECT_GE(sent * uint64_t{vsock::kMaxPayload}, vsock::kBufAlloc);
  EXPECT_LT(sent, 64);
  EXPECT_EQ(device_->muxer().num_connections(), 0u);
  // What reached the socket is still there, then the end.
  std::string rest = ReadN(host.get(), 64 * vsock::kMaxPayload);
  EXPECT_GT(rest.size(), 0u);
  EXPECT_TRUE(PeerClosed(host.get()));
}

TEST_F(VsockDeviceTest, SlowHostGetsCreditUpdates) {
  PostRxBuffers();
  uint32_t port = 0;
  UniqueFd host = HostConnect(5000, &port);
  // The guest sends 2 MiB within the credit it is given; the host reads it all.
  constexpr size_t kTotal = 2 << 20;
  std::thread reader([&] {
    std::string got = ReadN(host.get(), kTotal);
    EXPECT_EQ(got.size(), kTotal);
    EXPECT_EQ(got.find_first_not_of('q'), std::string::npos);
  });
  const std::string chunk(vsock::kMaxPayload, 'q');
  uint32_t peer_fwd = 0;  // the device's fwd_cnt as the guest last saw it
  uint64_t sent = 0;
  const absl::Time deadline = absl::Now() + absl::Seconds(20);
  while (sent < kTotal && absl::Now() < deadline) {
    if (sent + chunk.size() - peer_fwd <= vsock::kBufAlloc) {
      SendTx(GuestHeader(VIRTIO_VSOCK_OP_RW, 5000, port), chunk);
      sent += chunk.size();
      continue;
    }
    std::optional<RxPacket> p = NextRx(absl::Seconds(1));
    if (!p.has_value()) continue;
    EXPECT_EQ(p->header.op, VIRTIO_VSOCK_OP_CREDIT_UPDATE);
    peer_fwd = p->header.fwd_cnt;
  }
  EXPECT_EQ(sent, kTotal);
  reader.join();
  EXPECT_EQ(device_->muxer().num_connections(), 1u);
}

TEST_F(VsockDeviceTest, ConnectionLimit) {
  StopDevice();
  vsock::MuxerOptions options;
  options.max_connections = 2;
  StartDevice(options);
  PostRxBuffers();
  UniqueFd listener = ListenAt(path_ + "_1024");
  SendTx(GuestHeader(VIRTIO_VSOCK_OP_REQUEST, 40000, 1024));
  SendTx(GuestHeader(VIRTIO_VSOCK_OP_REQUEST, 40001, 1024));
  SendTx(GuestHeader(VIRTIO_VSOCK_OP_REQUEST, 40002, 1024));
  std::map<uint32_t, uint16_t> answers;  // guest port -> op
  for (int i = 0; i < 3; ++i) {
    std::optional<RxPacket> p = NextRx();
    ASSERT_TRUE(p.has_value());
    answers[p->header.dst_port] = p->header.op;
  }
  EXPECT_EQ(answers[40000], VIRTIO_VSOCK_OP_RESPONSE);
  EXPECT_EQ(answers[40001], VIRTIO_VSOCK_OP_RESPONSE);
  EXPECT_EQ(answers[40002], VIRTIO_VSOCK_OP_RST);
  EXPECT_EQ(device_->muxer().num_connections(), 2u);
  // A host CONNECT beyond the limit is closed. The device may close it before the request is
  // even sent (then the send fails with EPIPE): only the close matters.
  UniqueFd host = ConnectTo(path_);
  const std::string request = "CONNECT 1\n";
  (void)send(host.get(), request.data(), request.size(), MSG_NOSIGNAL);
  EXPECT_TRUE(PeerClosed(host.get()));
}

TEST_F(VsockDeviceTest, ResetClosesEveryConnection) {
  PostRxBuffers();
  uint32_t port = 0;
  UniqueFd host = HostConnect(5000, &port);
  MmioDriver mmio(*transport_);
  mmio.Write32(VIRTIO_MMIO_STATUS, 0);
  EXPECT_TRUE(PeerClosed(host.get()));
  EXPECT_EQ(device_->muxer().num_connections(), 0u);
  // The listener stays for the next driver.
  UniqueFd again = ConnectTo(path_);
}

TEST_F(VsockDeviceTest, DestructionClosesEverything) {
  PostRxBuffers();
  uint32_t port = 0;
  UniqueFd host = HostConnect(5000, &port);
  UniqueFd pending = ConnectTo(path_);
  StopDevice();
  EXPECT_TRUE(PeerClosed(host.get()));
  EXPECT_TRUE(PeerClosed(pending.get()));
  EXPECT_NE(access(path_.c_str(), F_OK), 0);
}

TEST(VsockListenerTest, PathInUseStaleOrNotASocket) {
  char dir[] = "/tmp/kapsel-vsock-test-XXXXXX";
  ASSERT_NE(mkdtemp(dir), nullptr);
  const std::string path = std::string(dir) + "/v.sock";
  absl::StatusOr<std::unique_ptr<EventLoop>> loop = EventLoop::Create();
  ASSERT_TRUE(loop.ok());
  {
    UniqueFd other = ListenAt(path);  // a live listener
    absl::StatusOr<std::unique_ptr<VsockDevice>> device =
        VsockDevice::Create({.guest_cid = 3, .uds_path = path}, loop->get());
    EXPECT_EQ(device.status().code(), absl::StatusCode::kAlreadyExists) << device.status();
  }
  // Its file is now stale: replaced.
  absl::StatusOr<std::unique_ptr<VsockDevice>> device =
      VsockDevice::Create({.guest_cid = 3, .uds_path = path}, loop->get());
  EXPECT_TRUE(device.ok()) << device.status();
  device->reset();
  EXPECT_NE(access(path.c_str(), F_OK), 0);
  // A regular file is never removed.
  FILE* f = fopen(path.c_str(), "w");
  ASSERT_NE(f, nullptr);
  fclose(f);
  device = VsockDevice::Create({.guest_cid = 3, .uds_path = path}, loop->get());
  EXPECT_EQ(device.status().code(), absl::StatusCode::kFailedPrecondition) << device.status();
  EXPECT_EQ(access(path.c_str(), F_OK), 0);
  // Reserved CIDs.
  for (uint64_t cid : {0u, 1u, 2u}) {
    EXPECT_EQ(
        VsockDevice::Create({.guest_cid = cid, .uds_path = path}, loop->get()).status().code(),
        absl::StatusCode::kInvalidArgument);
  }
  RemoveDir(dir);
}

}  // namespace
}  // namespace kapsel::vmm::virtio
