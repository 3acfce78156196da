// The virtio-net device through the virtio-mmio transport with real guest memory and a real tap
// (in a private network namespace, see test_tap.h): the test plays the guest driver and, through
// a packet socket on the tap, the host network. The tap is served by an event loop on its own
// thread, as in the VMM.
#include "vmm/devices/virtio/net/net_device.h"

#include <dirent.h>
#include <fcntl.h>
#include <linux/if_tun.h>
#include <linux/virtio_config.h>
#include <linux/virtio_ids.h>
#include <linux/virtio_mmio.h>
#include <net/if.h>
#include <pthread.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstring>
#include <memory>
#include <thread>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "tests/vmm/net/offload_test_util.h"
#include "tests/vmm/net/test_tap.h"
#include "tests/vmm/virtio/virtio_test_util.h"
#include "vmm/devices/virtio/mmio_transport.h"
#include "vmm/devices/virtio/net/net_abi.h"
#include "vmm/devices/virtio/net/net_offload.h"
#include "vmm/devices/virtio/net/tap.h"
#include "vmm/devices/virtio/ring_abi.h"

namespace kapsel::vmm::virtio {
namespace {

using ::kapsel::vmm::virtio::testing::FakeDriver;
using ::kapsel::vmm::virtio::testing::InterruptCount;
using ::kapsel::vmm::virtio::testing::MakeGuestMemory;
using ::kapsel::vmm::virtio::testing::MmioDriver;
using ::kapsel::vmm::virtio::testing::RecordingInterrupt;
using ::kapsel::vmm::virtio::testing::TcpFrame;
using ::kapsel::vmm::virtio::testing::TcpFrameSpec;
using ::kapsel::vmm::virtio::testing::TcpPayload;
using ::kapsel::vmm::virtio::testing::TcpSegment;
using ::kapsel::vmm::virtio::testing::TestFrame;
using ::kapsel::vmm::virtio::testing::TestTap;

constexpr uint64_t Bit(int bit) { return uint64_t{1} << bit; }
// What the driver of most tests accepts: no offloads.
// With EVENT_IDX, the tests notify only when the device asked for it
// (FakeDriver::TakeNotifyNeeded).
constexpr uint64_t kFeatures = Bit(VIRTIO_F_VERSION_1) | Bit(kVirtioRingFIndirectDesc) |
                               Bit(kVirtioRingFEventIdx) | Bit(kVirtioNetFMac) |
                               Bit(kVirtioNetFStatus) | Bit(kVirtioNetFMtu);
// The offloads the device offers, spelled out here rather than taken from net_offload.h.
constexpr uint64_t kOffloadFeatures = Bit(kVirtioNetFCsum) | Bit(kVirtioNetFGuestCsum) |
                                      Bit(kVirtioNetFGuestTso4) | Bit(kVirtioNetFGuestTso6) |
                                      Bit(kVirtioNetFHostTso4) | Bit(kVirtioNetFHostTso6);
constexpr uint16_t kQueueSize = 256;
constexpr MacAddress kMac = {0x52, 0x54, 0x00, 0x12, 0x34, 0x56};
constexpr uint32_t kMtu = 1500;
constexpr GuestAddress kRxData = 0x20000;  // rx buffers, kRxSlot apart
constexpr uint32_t kRxSlot = 0x800;
constexpr GuestAddress kTxData = 0x80000;
// Big rx chains, as Linux posts them without MRG_RXBUF when it took GUEST_TSO: the header, then
// 17 pages.
constexpr GuestAddress kBigRxData = 0xa0000;
constexpr uint32_t kBigRxPages = 17;
constexpr GuestAddress kBigRxPage = kBigRxData + 0x1000;
const absl::Duration kWait = absl::Seconds(5);
// The netdev features (ethtool names) that TUNSETOFFLOAD's TUN_F_CSUM, TSO4, TSO6 turn on.
constexpr char kTapCsum[] = "tx-checksum-ip-generic";
constexpr char kTapTso4[] = "tx-tcp-segmentation";
constexpr char kTapTso6[] = "tx-tcp6-segmentation";

int CountOpenFds() {
  int n = 0;
  DIR* dir = opendir("/proc/self/fd");
  if (dir == nullptr) return -1;
  while (readdir(dir) != nullptr) ++n;
  closedir(dir);
  return n - 3;
}

KapselVirtioNetHdr ReadHeader(const GuestMemory& memory, GuestAddress addr) {
  KapselVirtioNetHdr h{};
  EXPECT_TRUE(memory.Read(addr, &h, sizeof(h)).ok());
  return h;
}

class NetDeviceTest : public ::testing::Test {
 protected:
  NetDeviceTest()
      : memory_(MakeGuestMemory()),
        rx_(*memory_, kQueueSize, 0x1000, 0x2000, 0x3000),
        tx_(*memory_, kQueueSize, 0x4000, 0x5000, 0x6000) {}

  void SetUp() override {
    fds_before_ = CountOpenFds();
    absl::StatusOr<TestTap> tap = TestTap::Create("ktest0");
    ASSERT_TRUE(tap.ok()) << tap.status();
    tap_ = std::make_unique<TestTap>(*std::move(tap));
    absl::StatusOr<std::unique_ptr<EventLoop>> loop = EventLoop::Create();
    ASSERT_TRUE(loop.ok()) << loop.status();
    loop_ = *std::move(loop);
    absl::StatusOr<Tap> adopted = AdoptTap(std::move(tap_->fd()));
    ASSERT_TRUE(adopted.ok()) << adopted.status();
    EXPECT_EQ(adopted->name, "ktest0");
    absl::StatusOr<std::unique_ptr<NetDevice>> device =
        NetDevice::Create({.tap = *std::move(adopted), .mac = kMac, .mtu = kMtu}, loop_.get());
    ASSERT_TRUE(device.ok()) << device.status();
    device_ = device->get();
    transport_ = std::make_unique<MmioTransport>(std::move(*device), memory_.get(),
                                                 std::make_unique<RecordingInterrupt>(&irq_));
    Start();
    loop_thread_ = std::thread([this] {
      loop_tid_ = pthread_self();
      loop_started_ = true;
      while (!stop_) (void)loop_->RunOnce(5);
    });
    while (!loop_started_) absl::SleepFor(absl::Milliseconds(1));
  }

  // Negotiates driver_features_, sets up both queues and sets DRIVER_OK.
  void Start() {
    MmioDriver mmio(*transport_);
    const uint32_t status = mmio.Negotiate(driver_features_);
    ASSERT_NE(status & VIRTIO_CONFIG_S_FEATURES_OK, 0u);
    mmio.SetUpQueue(NetDevice::kRxQueue, rx_);
    mmio.SetUpQueue(NetDevice::kTxQueue, tx_);
    mmio.Write32(VIRTIO_MMIO_STATUS, status | VIRTIO_CONFIG_S_DRIVER_OK);
    ASSERT_NE(mmio.Read32(VIRTIO_MMIO_STATUS) & VIRTIO_CONFIG_S_DRIVER_OK, 0u)
        << transport_->last_error();
  }

  void TearDown() override {
    stop_ = true;
    if (loop_thread_.joinable()) loop_thread_.join();
    transport_.reset();
    loop_.reset();
    tap_.reset();
    EXPECT_EQ(CountOpenFds(), fds_before_) << "file descriptors leaked";
  }

  // Posts an rx buffer of `len` bytes in slot `slot` (or `buffers` as one chain) without notify.
  uint16_t PostRx(int slot, uint32_t len = kRxSlot) {
    const uint16_t head = rx_.AddChain({{kRxData + kRxSlot * uint64_t(slot), len, true}});
    rx_.Publish(head);
    return head;
  }
  // Notifies the rx queue if the device asked for it (EVENT_IDX), as a driver does.
  void NotifyRx() {
    if (rx_.TakeNotifyNeeded()) transport_->NotifyQueue(NetDevice::kRxQueue);
  }
  void NotifyTx() {
    if (tx_.TakeNotifyNeeded()) transport_->NotifyQueue(NetDevice::kTxQueue);
  }

  // Waits until the rx used index reaches `idx`.
  bool WaitRxUsed(uint16_t idx) {
    const absl::Time deadline = absl::Now() + kWait;
    while (rx_.UsedIdx() != idx) {
      if (absl::Now() > deadline) return false;
      absl::SleepFor(absl::Milliseconds(1));
    }
    return true;
  }

  // Writes header + frame to kTxData and returns the chain's buffers split at `cuts`.
  std::vector<testing::Buffer> TxBuffers(const std::vector<uint8_t>& frame,
                                         std::vector<uint32_t> cuts = {},
                                         const KapselVirtioNetHdr& header = {}) {
    std::vector<uint8_t> bytes(sizeof(header));
    std::memcpy(bytes.data(), &header, sizeof(header));
    bytes.insert(bytes.end(), frame.begin(), frame.end());
    EXPECT_TRUE(memory_->Write(kTxData, bytes.data(), bytes.size()).ok());
    std::vector<testing::Buffer> buffers;
    uint32_t start = 0;
    cuts.push_back(static_cast<uint32_t>(bytes.size()));
    for (uint32_t cut : cuts) {
      // Each piece 0x100 bytes further than the last, so the pieces are not contiguous.
      buffers.push_back({kTxData + start, cut - start, false});
      start = cut;
    }
    return buffers;
  }

  // Publishes a tx chain and notifies; expects it back with used length 0.
  void SendTx(const std::vector<testing::Buffer>& chain) {
    const uint16_t used_before = tx_.UsedIdx();
    const uint16_t head = tx_.AddChain(chain);
    tx_.Publish(head);
    NotifyTx();
    ASSERT_EQ(tx_.UsedIdx(), static_cast<uint16_t>(used_before + 1));
    EXPECT_EQ(tx_.Used(used_before).id, head);
    EXPECT_EQ(tx_.Used(used_before).len, 0u);
  }

  void ExpectNothingOnTap() {
    std::vector<uint8_t> frame = tap_->Receive(100);
    EXPECT_TRUE(frame.empty()) << "a frame of " << frame.size() << " bytes reached the tap";
  }

  void ExpectRxFrame(uint16_t used_slot, int buffer_slot, const std::vector<uint8_t>& frame) {
    const testing::UsedElem used = rx_.Used(used_slot);
    ASSERT_EQ(used.len, kNetHeaderSize + frame.size());
    const GuestAddress addr = kRxData + kRxSlot * uint64_t(buffer_slot);
    const KapselVirtioNetHdr h = ReadHeader(*memory_, addr);
    EXPECT_EQ(h.gso_type, kVirtioNetHdrGsoNone);
    EXPECT_EQ(h.num_buffers, 1);
    std::vector<uint8_t> got(frame.size());
    ASSERT_TRUE(memory_->Read(addr + kNetHeaderSize, got.data(), got.size()).ok());
    EXPECT_EQ(got, frame);
  }

  // Posts one chain like Linux's "big packets": the header alone, then kBigRxPages pages.
  uint16_t PostBigRx() {
    std::vector<testing::Buffer> buffers = {{kBigRxData, kNetHeaderSize, true}};
    for (uint32_t i = 0; i < kBigRxPages; ++i) {
      buffers.push_back({kBigRxPage + 0x1000 * i, 0x1000, true});
    }
    const uint16_t head = rx_.AddChain(buffers);
    rx_.Publish(head);
    return head;
  }
  // The header and frame the device put into the PostBigRx chain, given its used length.
  std::pair<KapselVirtioNetHdr, std::vector<uint8_t>> ReadBigRx(uint32_t used_len) {
    const KapselVirtioNetHdr h = ReadHeader(*memory_, kBigRxData);
    std::vector<uint8_t> frame(used_len - kNetHeaderSize);
    EXPECT_TRUE(memory_->Read(kBigRxPage, frame.data(), frame.size()).ok());
    return {h, frame};
  }

  // The header and frame in rx slot `slot` (posted with PostRx) for used element `used_slot`.
  std::pair<KapselVirtioNetHdr, std::vector<uint8_t>> ReadRxSlot(uint16_t used_slot, int slot) {
    const GuestAddress addr = kRxData + kRxSlot * uint64_t(slot);
    const uint32_t len = rx_.Used(used_slot).len;
    std::vector<uint8_t> frame(len > kNetHeaderSize ? len - kNetHeaderSize : 0);
    EXPECT_TRUE(memory_->Read(addr + kNetHeaderSize, frame.data(), frame.size()).ok());
    return {ReadHeader(*memory_, addr), frame};
  }

  // The host's stack hands the tap a coalesced TCP frame of `payload` bytes (GSO TCPv4,
  // gso_size 1448, checksum left to the receiver); returns the frame, or nothing after a failure.
  std::vector<uint8_t> SendCoalescedTcpFrame(size_t payload = 65535 - testing::kTcpHeadersLen) {
    absl::StatusOr<testing::VnetHdrSender> host = testing::VnetHdrSender::Create("ktest0");
    EXPECT_TRUE(host.ok()) << host.status();
    if (!host.ok()) return {};
    TcpFrameSpec spec;
    spec.payload_size = payload;
    spec.full_checksum = false;
    const std::vector<uint8_t> frame = TcpFrame(spec);
    const absl::Status sent = host->Send(testing::TcpOffloadHeader(1448), frame);
    EXPECT_TRUE(sent.ok()) << sent;
    return sent.ok() ? frame : std::vector<uint8_t>{};
  }

  uint64_t driver_features_ = kFeatures;
  int fds_before_ = 0;
  InterruptCount irq_;
  std::unique_ptr<GuestMemory> memory_;
  FakeDriver rx_;
  FakeDriver tx_;
  std::unique_ptr<TestTap> tap_;
  std::unique_ptr<EventLoop> loop_;
  std::unique_ptr<MmioTransport> transport_;
  NetDevice* device_ = nullptr;
  std::atomic<bool> stop_{false};
  std::atomic<bool> loop_started_{false};
  pthread_t loop_tid_{};
  std::thread loop_thread_;
};

TEST_F(NetDeviceTest, FeaturesAndConfigSpace) {
  MmioDriver mmio(*transport_);
  EXPECT_EQ(mmio.Read32(VIRTIO_MMIO_DEVICE_ID), uint32_t{VIRTIO_ID_NET});
  EXPECT_EQ(mmio.DeviceFeatures(), kFeatures | kOffloadFeatures | Bit(kVirtioNetFMrgRxbuf));
  uint8_t config[16];
  for (int i = 0; i < 16; ++i) {
    transport_->Read(VIRTIO_MMIO_CONFIG + i, absl::MakeSpan(&config[i], 1));
  }
  EXPECT_EQ(0, std::memcmp(config, kMac.data(), 6));
  EXPECT_EQ(config[6] | config[7] << 8, kVirtioNetSLinkUp);  // status
  EXPECT_EQ(config[8] | config[9] << 8, 1);                  // max_virtqueue_pairs
  EXPECT_EQ(config[10] | config[11] << 8, int{kMtu});
  EXPECT_EQ(config[12] | config[13] | config[14] | config[15], 0);
  // The driver cannot change the MAC.
  const uint8_t other = 0xee;
  transport_->Write(VIRTIO_MMIO_CONFIG, absl::MakeConstSpan(&other, 1));
  transport_->Read(VIRTIO_MMIO_CONFIG, absl::MakeSpan(config, 1));
  EXPECT_EQ(config[0], kMac[0]);
}

TEST_F(NetDeviceTest, NoMtuFeatureWithoutMtu) {
  absl::StatusOr<UniqueFd> fd = testing::CreateTap("ktest1", IFF_TAP | IFF_NO_PI | IFF_VNET_HDR);
  ASSERT_TRUE(fd.ok()) << fd.status();
  absl::StatusOr<Tap> tap = AdoptTap(*std::move(fd));
  ASSERT_TRUE(tap.ok()) << tap.status();
  absl::StatusOr<std::unique_ptr<NetDevice>> device =
      NetDevice::Create({.tap = *std::move(tap), .mac = kMac}, loop_.get());
  ASSERT_TRUE(device.ok()) << device.status();
  EXPECT_EQ((*device)->device_features() & (uint64_t{1} << kVirtioNetFMtu), 0u);
  EXPECT_EQ((*device)->device_type(), uint32_t{VIRTIO_ID_NET});
  EXPECT_EQ((*device)->name(), "virtio-net(ktest1)");
}

TEST_F(NetDeviceTest, TxFrameReachesTheTap) {
  const std::vector<uint8_t> frame = TestFrame(200, 7);
  // The header split across two descriptors, the frame across two more.
  SendTx(TxBuffers(frame, {5, 12, 60}));
  EXPECT_EQ(tap_->Receive(5000), frame);
  const NetCounters c = device_->counters();
  EXPECT_EQ(c.tx_frames, 1u);
  EXPECT_EQ(c.tx_bytes, frame.size());
  EXPECT_EQ(c.tx_dropped, 0u);
  EXPECT_EQ(c.bad_chains, 0u);
}

TEST_F(NetDeviceTest, TxLargestFrame) {
  const std::vector<uint8_t> frame = TestFrame(65535, 1);
  SendTx(TxBuffers(frame, {12}));
  // The tap's MTU is 1500: the kernel takes the frame (the write succeeds) and drops it later, or
  // delivers it; either way it was written whole.
  const NetCounters c = device_->counters();
  EXPECT_EQ(c.tx_frames + c.tx_dropped, 1u);
  EXPECT_EQ(c.bad_chains, 0u);
}

TEST_F(NetDeviceTest, RxFrameReachesTheRxQueueWithItsHeader) {
  // Garbage where num_buffers goes: the device must set it to 1.
  const std::vector<uint8_t> junk(kRxSlot, 0xab);
  ASSERT_TRUE(memory_->Write(kRxData, junk.data(), junk.size()).ok());
  PostRx(0);
  NotifyRx();
  const int irqs_before = irq_.triggers;
  const std::vector<uint8_t> frame = TestFrame(300, 3);
  ASSERT_TRUE(tap_->Inject(frame).ok());
  ASSERT_TRUE(WaitRxUsed(1));
  ExpectRxFrame(0, 0, frame);
  // Without GUEST_CSUM the header is all zeros (the tap may have said DATA_VALID).
  const KapselVirtioNetHdr h = ReadHeader(*memory_, kRxData);
  EXPECT_EQ(h.flags, 0);
  EXPECT_EQ(h.hdr_len | h.gso_size | h.csum_start | h.csum_offset, 0);
  EXPECT_GT(irq_.triggers, irqs_before) << "no used-buffer interrupt";
  const NetCounters c = device_->counters();
  EXPECT_EQ(c.rx_frames, 1u);
  EXPECT_EQ(c.rx_bytes, frame.size());
  EXPECT_EQ(c.rx_dropped, 0u);
}

TEST_F(NetDeviceTest, RxIntoAChainOfManyPieces) {
  // Header split, frame across three more buffers.
  const uint16_t head = rx_.AddChain({{kRxData, 7, true},
                                      {kRxData + 0x100, 9, true},
                                      {kRxData + 0x200, 50, true},
                                      {kRxData + 0x400, 1000, true}});
  rx_.Publish(head);
  NotifyRx();
  const std::vector<uint8_t> frame = TestFrame(600, 9);
  ASSERT_TRUE(tap_->Inject(frame).ok());
  ASSERT_TRUE(WaitRxUsed(1));
  ASSERT_EQ(rx_.Used(0).len, kNetHeaderSize + frame.size());
  std::vector<uint8_t> bytes(kNetHeaderSize + frame.size());
  const std::vector<std::pair<GuestAddress, uint32_t>> pieces = {
      {kRxData, 7}, {kRxData + 0x100, 9}, {kRxData + 0x200, 50}, {kRxData + 0x400, 1000}};
  size_t pos = 0;
  for (auto [addr, len] : pieces) {
    const size_t n = std::min<size_t>(len, bytes.size() - pos);
    ASSERT_TRUE(memory_->Read(addr, bytes.data() + pos, n).ok());
    pos += n;
  }
  KapselVirtioNetHdr h;
  std::memcpy(&h, bytes.data(), sizeof(h));
  EXPECT_EQ(h.num_buffers, 1);
  EXPECT_EQ(std::vector<uint8_t>(bytes.begin() + kNetHeaderSize, bytes.end()), frame);
}

TEST_F(NetDeviceTest, RxIntoAnIndirectChain) {
  // How Linux posts its big rx buffers when it took INDIRECT_DESC: one ring slot, a table of
  // pieces (header, then pages).
  constexpr GuestAddress kTable = 0x9000;
  const uint16_t head = rx_.AddIndirectChain(kTable, {{kRxData, kNetHeaderSize, true},
                                                      {kRxData + 0x100, 100, true},
                                                      {kRxData + 0x400, 1000, true}});
  rx_.Publish(head);
  NotifyRx();
  const std::vector<uint8_t> frame = TestFrame(700, 3);
  ASSERT_TRUE(tap_->Inject(frame).ok());
  ASSERT_TRUE(WaitRxUsed(1));
  ASSERT_EQ(rx_.Used(0).id, head);
  ASSERT_EQ(rx_.Used(0).len, kNetHeaderSize + frame.size());
  std::vector<uint8_t> bytes(frame.size());
  ASSERT_TRUE(memory_->Read(kRxData + 0x100, bytes.data(), 100).ok());
  ASSERT_TRUE(memory_->Read(kRxData + 0x400, bytes.data() + 100, frame.size() - 100).ok());
  EXPECT_EQ(bytes, frame);
}

// CPU time the event loop thread has used.
absl::Duration ThreadCpu(pthread_t thread) {
  clockid_t clock;
  if (pthread_getcpuclockid(thread, &clock) != 0) return absl::ZeroDuration();
  timespec ts;
  clock_gettime(clock, &ts);
  return absl::DurationFromTimespec(ts);
}

TEST_F(NetDeviceTest, NoRxBuffersLeavesFramesInTheTapUntilTheDriverNotifies) {
  std::vector<std::vector<uint8_t>> frames;
  for (int i = 0; i < 3; ++i) {
    frames.push_back(TestFrame(100 + i, static_cast<uint8_t>(i)));
    ASSERT_TRUE(tap_->Inject(frames.back()).ok());
  }
  // Nothing to read into: the device stops watching the tap instead of spinning on it.
  absl::SleepFor(absl::Milliseconds(50));
  const absl::Duration cpu_before = ThreadCpu(loop_tid_);
  absl::SleepFor(absl::Milliseconds(300));
  EXPECT_LT(ThreadCpu(loop_tid_) - cpu_before, absl::Milliseconds(100)) << "the loop spins";
  EXPECT_EQ(rx_.UsedIdx(), 0);
  EXPECT_EQ(device_->counters().rx_frames, 0u);
  EXPECT_EQ(device_->counters().rx_dropped, 0u);

  // Buffers without a notify: still nothing (the driver must notify).
  PostRx(0);
  PostRx(1);
  absl::SleepFor(absl::Milliseconds(100));
  EXPECT_EQ(rx_.UsedIdx(), 0);
  NotifyRx();
  ASSERT_TRUE(WaitRxUsed(2));
  ExpectRxFrame(0, 0, frames[0]);
  ExpectRxFrame(1, 1, frames[1]);
  // The third waits again, and arrives with the next buffer.
  absl::SleepFor(absl::Milliseconds(50));
  EXPECT_EQ(rx_.UsedIdx(), 2);
  PostRx(2);
  NotifyRx();
  ASSERT_TRUE(WaitRxUsed(3));
  ExpectRxFrame(2, 2, frames[2]);
  // And the tap is watched again: a new frame goes straight into a posted buffer.
  PostRx(3);
  NotifyRx();
  const std::vector<uint8_t> later = TestFrame(64, 42);
  ASSERT_TRUE(tap_->Inject(later).ok());
  ASSERT_TRUE(WaitRxUsed(4));
  ExpectRxFrame(3, 3, later);
  EXPECT_EQ(device_->counters().rx_frames, 4u);
}

TEST_F(NetDeviceTest, FrameLargerThanTheRxChainIsDropped) {
  PostRx(0, kNetHeaderSize + 100);
  NotifyRx();
  const std::vector<uint8_t> big = TestFrame(500, 1);
  const std::vector<uint8_t> small = TestFrame(100, 2);
  ASSERT_TRUE(tap_->Inject(big).ok());
  ASSERT_TRUE(tap_->Inject(small).ok());
  ASSERT_TRUE(WaitRxUsed(1));
  // The chain was kept for the next frame, which fits exactly.
  ExpectRxFrame(0, 0, small);
  const NetCounters c = device_->counters();
  EXPECT_EQ(c.rx_dropped, 1u);
  EXPECT_EQ(c.rx_frames, 1u);
  EXPECT_EQ(c.bad_chains, 0u);
}

TEST_F(NetDeviceTest, HostileTxChainsAreReturnedAndTheQueueGoesOn) {
  const std::vector<uint8_t> frame = TestFrame(80, 5);
  std::vector<testing::Buffer> with_writable = TxBuffers(frame);
  with_writable.push_back({kTxData + 0x1000, 64, true});
  SendTx(with_writable);
  SendTx({{kTxData, 0, false}});                              // zero length
  SendTx({{kTxData, kNetHeaderSize + 13, false}});            // shorter than an Ethernet header
  SendTx({{kTxData, 0x1000, false}, {0x180000, 64, false}});  // in the RAM hole
  SendTx({{testing::kHighRam + testing::kHighRamSize - 8, 64, false}});  // off the end of RAM
  SendTx({{kTxData, uint32_t(NetDevice::kMaxFrameSize + 1), false}});    // too large
  // A loop: descriptor 200 points at itself.
  {
    const uint16_t used_before = tx_.UsedIdx();
    tx_.SetDescriptor(200, kTxData, 64, kVringDescFNext, 200);
    tx_.Publish(200);
    NotifyTx();
    ASSERT_EQ(tx_.UsedIdx(), static_cast<uint16_t>(used_before + 1));
    EXPECT_EQ(tx_.Used(used_before).len, 0u);
  }
  // Offloads the driver did not accept.
  {
    std::vector<testing::Buffer> chain = TxBuffers(frame);
    KapselVirtioNetHdr h{};
    h.flags = kVirtioNetHdrFNeedsCsum;
    ASSERT_TRUE(memory_->Write(kTxData, &h, sizeof(h)).ok());
    SendTx(chain);
    chain = TxBuffers(frame);
    h = {};
    h.gso_type = kVirtioNetHdrGsoTcpv4;
    h.gso_size = 100;
    ASSERT_TRUE(memory_->Write(kTxData, &h, sizeof(h)).ok());
    SendTx(chain);
  }
  ExpectNothingOnTap();
  EXPECT_EQ(device_->counters().bad_chains, 9u);
  EXPECT_EQ(device_->counters().tx_frames, 0u);
  // The queue still works.
  SendTx(TxBuffers(frame));
  EXPECT_EQ(tap_->Receive(5000), frame);
  EXPECT_EQ(device_->counters().tx_frames, 1u);
  EXPECT_EQ(transport_->last_error(), absl::OkStatus());
}

TEST_F(NetDeviceTest, HostileRxChainsAreReturnedEmpty) {
  uint16_t heads[5];
  heads[0] = rx_.AddChain({{kRxData, 64, false}, {kRxData + 0x100, 1000, true}});  // readable
  heads[1] = rx_.AddChain({{kRxData, kNetHeaderSize - 1, true}});                  // too small
  heads[2] = rx_.AddChain({{kRxData, 0, true}});                                   // empty
  heads[3] = rx_.AddChain({{0x180000, 2000, true}});                               // in the hole
  rx_.SetDescriptor(250, kRxData, 64, kVringDescFNext | kVringDescFWrite, 250);    // loop
  heads[4] = 250;
  for (uint16_t head : heads) rx_.Publish(head);
  PostRx(4);
  NotifyRx();
  // The bad chains come back at once, empty; the good one waits for a frame.
  ASSERT_TRUE(WaitRxUsed(5));
  for (int i = 0; i < 5; ++i) {
    EXPECT_EQ(rx_.Used(i).id, heads[i]);
    EXPECT_EQ(rx_.Used(i).len, 0u);
  }
  EXPECT_EQ(device_->counters().bad_chains, 5u);
  const std::vector<uint8_t> frame = TestFrame(90, 8);
  ASSERT_TRUE(tap_->Inject(frame).ok());
  ASSERT_TRUE(WaitRxUsed(6));
  ExpectRxFrame(5, 4, frame);
}

TEST_F(NetDeviceTest, ResetStopsReadingTheTapAndActivationResumes) {
  PostRx(0);
  NotifyRx();
  MmioDriver mmio(*transport_);
  mmio.Write32(VIRTIO_MMIO_STATUS, 0);  // driver reset
  // The tap fd is off the loop.
  EXPECT_EQ(loop_->Remove(device_->tap_fd()).code(), absl::StatusCode::kNotFound);
  const std::vector<uint8_t> frame = TestFrame(120, 4);
  ASSERT_TRUE(tap_->Inject(frame).ok());
  absl::SleepFor(absl::Milliseconds(100));
  EXPECT_EQ(device_->counters().rx_frames, 0u);
  // After a new DRIVER_OK the device starts over at the first available entry (the buffer posted
  // before the reset) and gets the frame that waited in the tap.
  Start();
  NotifyRx();
  ASSERT_TRUE(WaitRxUsed(1));
  ExpectRxFrame(0, 0, frame);
}

// --- Mergeable rx buffers (VIRTIO_NET_F_MRG_RXBUF) ---

// The driver takes MRG_RXBUF and posts small buffers, as Linux does.
class NetMergeableTest : public NetDeviceTest {
 protected:
  NetMergeableTest() { driver_features_ = kFeatures | Bit(kVirtioNetFMrgRxbuf); }

  // Posts `count` buffers of `len` bytes at kRxData + kRxSlot * (first + i), without notify.
  std::vector<uint16_t> PostBuffers(int first, int count, uint32_t len) {
    std::vector<uint16_t> heads;
    for (int i = 0; i < count; ++i) heads.push_back(PostRx(first + i, len));
    return heads;
  }

  // The frame in used elements [from, from + header.num_buffers): each used element must name the
  // buffer posted in slot first_slot + i, and the buffers hold header + frame in order.
  std::pair<KapselVirtioNetHdr, std::vector<uint8_t>> ReadMerged(uint16_t from, int first_slot) {
    const KapselVirtioNetHdr h = ReadHeader(*memory_, kRxData + kRxSlot * uint64_t(first_slot));
    std::vector<uint8_t> bytes;
    for (int i = 0; i < std::max<int>(h.num_buffers, 1); ++i) {
      const testing::UsedElem used = rx_.Used(static_cast<uint16_t>(from + i));
      std::vector<uint8_t> piece(used.len);
      EXPECT_TRUE(
          memory_->Read(kRxData + kRxSlot * uint64_t(first_slot + i), piece.data(), used.len).ok());
      bytes.insert(bytes.end(), piece.begin(), piece.end());
    }
    if (bytes.size() < kNetHeaderSize) return {h, {}};
    return {h, std::vector<uint8_t>(bytes.begin() + kNetHeaderSize, bytes.end())};
  }
};

TEST_F(NetMergeableTest, FeatureIsOfferedAndSmallFramesTakeOneBuffer) {
  EXPECT_NE(device_->device_features() & Bit(kVirtioNetFMrgRxbuf), 0u);
  PostBuffers(0, 2, 1536);
  NotifyRx();
  const std::vector<uint8_t> frame = TestFrame(300, 3);
  ASSERT_TRUE(tap_->Inject(frame).ok());
  ASSERT_TRUE(WaitRxUsed(1));
  auto [h, got] = ReadMerged(0, 0);
  EXPECT_EQ(h.num_buffers, 1);
  EXPECT_EQ(rx_.Used(0).len, kNetHeaderSize + frame.size());
  EXPECT_EQ(got, frame);
}

TEST_F(NetMergeableTest, LargeFrameSpreadsOverBuffersPublishedTogether) {
  const std::vector<uint16_t> heads = PostBuffers(0, 4, 1024);
  NotifyRx();
  const std::vector<uint8_t> frame = TestFrame(1500, 7);  // + header: 1512 = 1024 + 488
  ASSERT_TRUE(tap_->Inject(frame).ok());
  ASSERT_TRUE(WaitRxUsed(2));
  absl::SleepFor(absl::Milliseconds(50));
  EXPECT_EQ(rx_.UsedIdx(), 2) << "a buffer the frame did not need was used";
  EXPECT_EQ(rx_.Used(0).id, heads[0]);
  EXPECT_EQ(rx_.Used(0).len, 1024u);
  EXPECT_EQ(rx_.Used(1).id, heads[1]);
  EXPECT_EQ(rx_.Used(1).len, kNetHeaderSize + frame.size() - 1024);
  auto [h, got] = ReadMerged(0, 0);
  EXPECT_EQ(h.num_buffers, 2);
  EXPECT_EQ(got, frame);
  // The next frame starts in the next buffer.
  const std::vector<uint8_t> next = TestFrame(100, 1);
  ASSERT_TRUE(tap_->Inject(next).ok());
  ASSERT_TRUE(WaitRxUsed(3));
  EXPECT_EQ(rx_.Used(2).id, heads[2]);
  EXPECT_EQ(ReadMerged(2, 2).second, next);
  EXPECT_EQ(device_->counters().rx_frames, 2u);
}

TEST_F(NetMergeableTest, FrameWaitsWholeUntilEnoughBuffersArrive) {
  PostBuffers(0, 2, 512);
  NotifyRx();
  const std::vector<uint8_t> frame = TestFrame(1400, 5);  // 1412 bytes: three buffers
  ASSERT_TRUE(tap_->Inject(frame).ok());
  absl::SleepFor(absl::Milliseconds(200));
  EXPECT_EQ(rx_.UsedIdx(), 0) << "part of a frame was published";
  EXPECT_EQ(device_->counters().rx_dropped, 0u);
  // The third buffer, notified as a driver does: the frame arrives whole, in order.
  PostBuffers(2, 1, 512);
  NotifyRx();
  ASSERT_TRUE(WaitRxUsed(3));
  auto [h, got] = ReadMerged(0, 0);
  EXPECT_EQ(h.num_buffers, 3);
  EXPECT_EQ(got, frame);
  // And the tap is watched again.
  PostBuffers(3, 1, 512);
  NotifyRx();
  const std::vector<uint8_t> later = TestFrame(64, 9);
  ASSERT_TRUE(tap_->Inject(later).ok());
  ASSERT_TRUE(WaitRxUsed(4));
  EXPECT_EQ(ReadMerged(3, 3).second, later);
}

// ... and every offload, as Linux does.
class NetMergeableOffloadTest : public NetMergeableTest {
 protected:
  NetMergeableOffloadTest() { driver_features_ |= kOffloadFeatures; }
};

TEST_F(NetMergeableOffloadTest, CoalescedTcpFrameOfSixtyFourKiBInPages) {
  // 17 pages for 65547 bytes of header + frame: as Linux posts them, one page each.
  constexpr GuestAddress kPages = 0xc0000;
  for (int i = 0; i < 17; ++i) {
    rx_.Publish(rx_.AddChain({{kPages + 0x1000 * uint64_t(i), 0x1000, true}}));
  }
  NotifyRx();
  const std::vector<uint8_t> frame = SendCoalescedTcpFrame();
  ASSERT_FALSE(frame.empty());
  ASSERT_TRUE(WaitRxUsed(17));
  std::vector<uint8_t> bytes(17 * 0x1000);
  ASSERT_TRUE(memory_->Read(kPages, bytes.data(), bytes.size()).ok());
  uint32_t total = 0;
  for (int i = 0; i < 17; ++i) total += rx_.Used(static_cast<uint16_t>(i)).len;
  ASSERT_EQ(total, kNetHeaderSize + frame.size());
  KapselVirtioNetHdr h;
  std::memcpy(&h, bytes.data(), sizeof(h));
  EXPECT_EQ(h.num_buffers, 17);
  EXPECT_EQ(h.gso_type, kVirtioNetHdrGsoTcpv4);
  EXPECT_EQ(h.gso_size, 1448);
  EXPECT_TRUE(std::equal(frame.begin(), frame.end(), bytes.begin() + kNetHeaderSize))
      << "the frame differs";
}

TEST_F(NetMergeableTest, BadBufferDropsTheFrameAndTheQueueGoesOn) {
  const uint16_t good = PostRx(0, 1024);
  const uint16_t bad = rx_.AddChain({{kRxData + kRxSlot, 64, false}});  // readable
  rx_.Publish(bad);
  NotifyRx();
  ASSERT_TRUE(tap_->Inject(TestFrame(1500, 2)).ok());  // needs both
  ASSERT_TRUE(WaitRxUsed(2));
  // Both back, empty; the frame is counted as dropped.
  for (uint16_t i = 0; i < 2; ++i) EXPECT_EQ(rx_.Used(i).len, 0u);
  EXPECT_TRUE((rx_.Used(0).id == good && rx_.Used(1).id == bad) ||
              (rx_.Used(0).id == bad && rx_.Used(1).id == good));
  EXPECT_EQ(device_->counters().bad_chains, 1u);
  EXPECT_EQ(device_->counters().rx_dropped, 1u);
  PostBuffers(2, 1, 1024);
  NotifyRx();
  const std::vector<uint8_t> frame = TestFrame(200, 4);
  ASSERT_TRUE(tap_->Inject(frame).ok());
  ASSERT_TRUE(WaitRxUsed(3));
  EXPECT_EQ(ReadMerged(2, 2).second, frame);
}

TEST_F(NetMergeableOffloadTest, FrameNoFullRingCanHoldIsDropped) {
  // 256 buffers of 16 bytes hold 4096 bytes: a 64 KiB TCP frame never fits and must not block
  // the queue; the buffers serve the next frame.
  constexpr GuestAddress kTiny = 0xc0000;
  for (int i = 0; i < kQueueSize; ++i) {
    rx_.Publish(rx_.AddChain({{kTiny + 16 * uint64_t(i), 16, true}}));
  }
  NotifyRx();
  ASSERT_FALSE(SendCoalescedTcpFrame().empty());
  const std::vector<uint8_t> small = TestFrame(60, 2);  // 72 bytes: five buffers
  ASSERT_TRUE(tap_->Inject(small).ok());
  ASSERT_TRUE(WaitRxUsed(5));
  std::vector<uint8_t> bytes(80);
  ASSERT_TRUE(memory_->Read(kTiny, bytes.data(), bytes.size()).ok());
  KapselVirtioNetHdr h;
  std::memcpy(&h, bytes.data(), sizeof(h));
  EXPECT_EQ(h.num_buffers, 5);
  EXPECT_TRUE(std::equal(small.begin(), small.end(), bytes.begin() + kNetHeaderSize));
  EXPECT_EQ(device_->counters().rx_dropped, 1u);
}

// --- Offloads ---

TEST(NetOffloadRulesTest, TapOffloadsFollowTheGuestFeaturesAndTheirPrerequisites) {
  EXPECT_EQ(TunOffloadFlags(OffloadsFromFeatures(0)), 0u);
  EXPECT_EQ(TunOffloadFlags(OffloadsFromFeatures(kOffloadFeatures)),
            unsigned{TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6});
  EXPECT_EQ(TunOffloadFlags(OffloadsFromFeatures(Bit(kVirtioNetFGuestCsum))), unsigned{TUN_F_CSUM});
  EXPECT_EQ(
      TunOffloadFlags(OffloadsFromFeatures(Bit(kVirtioNetFGuestCsum) | Bit(kVirtioNetFGuestTso6))),
      unsigned{TUN_F_CSUM | TUN_F_TSO6});
  // TSO without GUEST_CSUM (which the specification forbids): nothing. Host features: nothing.
  EXPECT_EQ(TunOffloadFlags(OffloadsFromFeatures(Bit(kVirtioNetFGuestTso4) | Bit(kVirtioNetFCsum) |
                                                 Bit(kVirtioNetFHostTso4))),
            0u);
  const NetOffloads host =
      OffloadsFromFeatures(Bit(kVirtioNetFHostTso4) | Bit(kVirtioNetFHostTso6));
  EXPECT_FALSE(host.tx_csum || host.tx_tso4 || host.tx_tso6);
}

TEST(NetOffloadRulesTest, TxHeadersMayUseOnlyWhatWasNegotiated) {
  const NetOffloads all = OffloadsFromFeatures(kOffloadFeatures);
  const NetOffloads none = OffloadsFromFeatures(0);
  const NetOffloads v4 = OffloadsFromFeatures(Bit(kVirtioNetFCsum) | Bit(kVirtioNetFHostTso4));
  auto header = [](uint8_t flags, uint8_t gso_type) {
    KapselVirtioNetHdr h{};
    h.flags = flags;
    h.gso_type = gso_type;
    h.gso_size = 1448;
    return h;
  };
  const uint8_t csum = kVirtioNetHdrFNeedsCsum;
  EXPECT_TRUE(CheckTxHeader(header(0, kVirtioNetHdrGsoNone), none).ok());
  EXPECT_FALSE(CheckTxHeader(header(csum, kVirtioNetHdrGsoNone), none).ok());
  EXPECT_FALSE(CheckTxHeader(header(0, kVirtioNetHdrGsoTcpv4), none).ok());
  EXPECT_TRUE(CheckTxHeader(header(csum, kVirtioNetHdrGsoTcpv4), v4).ok());
  EXPECT_FALSE(CheckTxHeader(header(csum, kVirtioNetHdrGsoTcpv6), v4).ok());
  EXPECT_TRUE(CheckTxHeader(header(csum, kVirtioNetHdrGsoTcpv6), all).ok());
  EXPECT_FALSE(CheckTxHeader(header(kVirtioNetHdrFDataValid, kVirtioNetHdrGsoNone), all).ok());
  EXPECT_FALSE(CheckTxHeader(header(0x80, kVirtioNetHdrGsoNone), all).ok());
  EXPECT_FALSE(CheckTxHeader(header(csum, kVirtioNetHdrGsoUdp), all).ok());
  EXPECT_FALSE(CheckTxHeader(header(csum, kVirtioNetHdrGsoTcpv4 | kVirtioNetHdrGsoEcn), all).ok());
  EXPECT_FALSE(CheckTxHeader(header(csum, 5), all).ok());  // UDP_L4 (USO)
}

TEST(NetOffloadRulesTest, RxHeadersAreCheckedAndCleaned) {
  const NetOffloads all = OffloadsFromFeatures(kOffloadFeatures);
  const NetOffloads csum_only = OffloadsFromFeatures(Bit(kVirtioNetFGuestCsum));
  const NetOffloads none = OffloadsFromFeatures(0);
  KapselVirtioNetHdr h{};
  h.flags = kVirtioNetHdrFNeedsCsum;
  h.gso_type = kVirtioNetHdrGsoTcpv4;
  h.gso_size = 1448;
  h.csum_start = 34;
  h.csum_offset = 16;
  h.num_buffers = 77;
  KapselVirtioNetHdr out = h;
  ASSERT_TRUE(PrepareRxHeader(all, &out).ok());
  EXPECT_EQ(out.gso_type, kVirtioNetHdrGsoTcpv4);
  EXPECT_EQ(out.gso_size, 1448);
  EXPECT_EQ(out.csum_start, 34);
  EXPECT_EQ(out.num_buffers, 1);
  out = h;
  EXPECT_FALSE(PrepareRxHeader(csum_only, &out).ok());
  out = h;
  EXPECT_FALSE(PrepareRxHeader(none, &out).ok());
  out = h;
  out.gso_type = kVirtioNetHdrGsoNone;
  EXPECT_TRUE(PrepareRxHeader(csum_only, &out).ok());
  EXPECT_FALSE(PrepareRxHeader(none, &out).ok()) << "NEEDS_CSUM without GUEST_CSUM";
  out = KapselVirtioNetHdr{};
  out.flags = kVirtioNetHdrFDataValid;
  out.num_buffers = 9;
  ASSERT_TRUE(PrepareRxHeader(none, &out).ok());
  EXPECT_EQ(out.flags, 0);
  EXPECT_EQ(out.num_buffers, 1);
  out.flags = 0x40;
  EXPECT_FALSE(PrepareRxHeader(all, &out).ok());
}

// The driver accepts every offload the device offers.
class NetOffloadTest : public NetDeviceTest {
 protected:
  NetOffloadTest() { driver_features_ = kFeatures | kOffloadFeatures; }

  // A TCP/IPv4 frame from the guest (kMac) with the checksum left to the device, and its header.
  static std::pair<KapselVirtioNetHdr, std::vector<uint8_t>> GuestTcp(size_t payload,
                                                                      uint16_t gso_size,
                                                                      uint32_t seq = 1000) {
    TcpFrameSpec spec;
    std::memcpy(spec.src_mac, kMac.data(), 6);
    spec.payload_size = payload;
    spec.seq = seq;
    spec.seed = static_cast<uint8_t>(seq);
    spec.full_checksum = false;
    return {testing::TcpOffloadHeader(gso_size), TcpFrame(spec)};
  }
};

// The cuts of a tx frame as Linux sends a TSO skb: header, then the packet headers, then pages.
std::vector<uint32_t> LinuxLikeCuts(size_t frame_size) {
  std::vector<uint32_t> cuts = {kNetHeaderSize, kNetHeaderSize + testing::kTcpHeadersLen};
  for (uint32_t at = cuts.back() + 0x1000; at < kNetHeaderSize + frame_size; at += 0x1000) {
    cuts.push_back(at);
  }
  return cuts;
}

// The host segments the guest's TSO frame and completes its checksums where the peer needs it:
// the guest's tap is bridged to a plain tap without offloads, which gets MTU-sized segments.
TEST_F(NetOffloadTest, TxChecksumAndTsoFramesLeaveChecksummedAndSegmented) {
  absl::StatusOr<UniqueFd> peer = testing::CreateTap("kpeer0", IFF_TAP | IFF_NO_PI);
  ASSERT_TRUE(peer.ok()) << peer.status();
  ASSERT_TRUE(testing::BringUp("kpeer0").ok());
  absl::StatusOr<testing::Bridge> bridge = testing::Bridge::Create("kbr0", {"ktest0", "kpeer0"});
  ASSERT_TRUE(bridge.ok()) << bridge.status();

  // Checksum offload alone: one frame, its TCP checksum completed.
  auto [csum_header, small] = GuestTcp(300, 0);
  SendTx(TxBuffers(small, {kNetHeaderSize, 40}, csum_header));
  std::vector<TcpSegment> got = testing::ReadTcpSegments(peer->get(), 300, 5000);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_TRUE(got[0].ip_checksum_ok);
  EXPECT_TRUE(got[0].tcp_checksum_ok);
  EXPECT_EQ(got[0].payload,
            std::vector<uint8_t>(small.begin() + testing::kTcpHeadersLen, small.end()));

  // TSO: 10000 bytes of payload with MSS 1448 leave as 7 segments of at most 1500 bytes of IP.
  constexpr size_t kPayload = 10000;
  auto [tso_header, big] = GuestTcp(kPayload, 1448, 5000);
  SendTx(TxBuffers(big, LinuxLikeCuts(big.size()), tso_header));
  got = testing::ReadTcpSegments(peer->get(), kPayload, 5000);
  ASSERT_EQ(got.size(), 7u);
  std::vector<uint8_t> payload;
  uint32_t seq = 5000;
  for (const TcpSegment& segment : got) {
    EXPECT_LE(segment.ip_total_length, kMtu);
    EXPECT_TRUE(segment.ip_checksum_ok);
    EXPECT_TRUE(segment.tcp_checksum_ok) << "segment at seq " << segment.seq;
    EXPECT_EQ(segment.seq, seq);
    seq += static_cast<uint32_t>(segment.payload.size());
    payload.insert(payload.end(), segment.payload.begin(), segment.payload.end());
  }
  EXPECT_EQ(payload, std::vector<uint8_t>(big.begin() + testing::kTcpHeadersLen, big.end()));
  const NetCounters c = device_->counters();
  EXPECT_EQ(c.tx_frames, 2u);
  EXPECT_EQ(c.tx_bytes, small.size() + big.size());
  EXPECT_EQ(c.tx_refused + c.tx_dropped + c.bad_chains, 0u);
}

TEST_F(NetOffloadTest, MalformedOffloadHeadersAreDroppedAndTheQueueGoesOn) {
  // Negotiated offloads, but headers the tap refuses (EINVAL).
  auto [h, frame] = GuestTcp(3000, 1448);
  KapselVirtioNetHdr bad = h;
  bad.gso_size = 0;
  SendTx(TxBuffers(frame, {kNetHeaderSize}, bad));
  bad = h;
  bad.csum_start = 60000;  // beyond the frame
  SendTx(TxBuffers(frame, {kNetHeaderSize}, bad));
  bad = h;
  bad.gso_type = kVirtioNetHdrGsoNone;
  bad.csum_offset = 4000;  // the checksum field beyond the frame
  SendTx(TxBuffers(frame, {kNetHeaderSize}, bad));
  // Not negotiated: returned unsent.
  bad = h;
  bad.gso_type = kVirtioNetHdrGsoUdp;
  SendTx(TxBuffers(frame, {kNetHeaderSize}, bad));
  bad = h;
  bad.gso_type = kVirtioNetHdrGsoTcpv4 | kVirtioNetHdrGsoEcn;
  SendTx(TxBuffers(frame, {kNetHeaderSize}, bad));
  bad = h;
  bad.flags |= kVirtioNetHdrFDataValid;
  SendTx(TxBuffers(frame, {kNetHeaderSize}, bad));
  NetCounters c = device_->counters();
  EXPECT_EQ(c.tx_refused, 3u);
  EXPECT_EQ(c.bad_chains, 3u);
  EXPECT_EQ(c.tx_frames, 0u);
  // The queue still works.
  const std::vector<uint8_t> good = TestFrame(500, 3);
  SendTx(TxBuffers(good));
  EXPECT_EQ(tap_->Receive(5000), good);
  EXPECT_EQ(device_->counters().tx_frames, 1u);
  EXPECT_EQ(transport_->last_error(), absl::OkStatus());
}

// The host hands the guest a 64 KiB TCP frame whole, with its GSO header, into a "big packets"
// chain: the largest the host stack gives a tap unsegmented (below its gso_max_size, 64 KiB).
TEST_F(NetOffloadTest, RxLargeCoalescedFrameReachesTheGuestWhole) {
  PostBigRx();
  NotifyRx();
  const std::vector<uint8_t> frame = SendCoalescedTcpFrame();
  ASSERT_FALSE(frame.empty());
  ASSERT_TRUE(WaitRxUsed(1));
  ASSERT_EQ(rx_.Used(0).len, kNetHeaderSize + frame.size());
  auto [got_header, got] = ReadBigRx(rx_.Used(0).len);
  EXPECT_EQ(got_header.flags & kVirtioNetHdrFNeedsCsum, kVirtioNetHdrFNeedsCsum);
  EXPECT_EQ(got_header.gso_type, kVirtioNetHdrGsoTcpv4);
  EXPECT_EQ(got_header.gso_size, 1448);
  EXPECT_EQ(got_header.csum_start, testing::kTcpCsumStart);
  EXPECT_EQ(got_header.csum_offset, testing::kTcpCsumOffset);
  EXPECT_EQ(got_header.num_buffers, 1);
  EXPECT_TRUE(got == frame) << "the frame differs";
  EXPECT_EQ(device_->counters().rx_frames, 1u);
  EXPECT_EQ(device_->counters().rx_dropped, 0u);
}

// TUNSETOFFLOAD follows what each driver accepted, as the tap's netdev features show (what
// `ethtool -k` prints); a reset turns everything off.
TEST_F(NetOffloadTest, TapOffloadsFollowTheAcceptedFeatures) {
  auto expect_tap = [](bool csum, bool tso4, bool tso6) {
    for (auto [feature, want] :
         {std::pair<const char*, bool>{kTapCsum, csum}, {kTapTso4, tso4}, {kTapTso6, tso6}}) {
      absl::StatusOr<bool> active = testing::FeatureActive("ktest0", feature);
      ASSERT_TRUE(active.ok()) << active.status();
      EXPECT_EQ(*active, want) << feature;
    }
  };
  expect_tap(true, true, true);
  MmioDriver mmio(*transport_);
  mmio.Write32(VIRTIO_MMIO_STATUS, 0);
  expect_tap(false, false, false);
  const uint64_t csum = Bit(kVirtioNetFGuestCsum);
  for (auto [features, csum_on, tso4, tso6] : std::vector<std::tuple<uint64_t, bool, bool, bool>>{
           {csum, true, false, false},
           {csum | Bit(kVirtioNetFGuestTso4), true, true, false},
           {csum | Bit(kVirtioNetFGuestTso6), true, false, true},
           {Bit(kVirtioNetFGuestTso4) | Bit(kVirtioNetFGuestTso6), false, false, false},
           {Bit(kVirtioNetFCsum) | Bit(kVirtioNetFHostTso4) | Bit(kVirtioNetFHostTso6), false,
            false, false},
           {kOffloadFeatures, true, true, true},
           {0, false, false, false}}) {
    SCOPED_TRACE(::testing::Message() << "acked offloads 0x" << std::hex << features);
    driver_features_ = kFeatures | features;
    Start();
    expect_tap(csum_on, tso4, tso6);
  }
}

// Without GUEST_TSO the host stack segments a GSO frame before the tap; without GUEST_CSUM it
// also completes the checksums, and the guest sees plain frames.
TEST_F(NetDeviceTest, GsoFrameFromTheHostArrivesSegmentedWithoutOffloads) {
  for (int slot = 0; slot < 16; ++slot) PostRx(slot);
  NotifyRx();
  const std::vector<uint8_t> frame = SendCoalescedTcpFrame(20000);
  ASSERT_FALSE(frame.empty());
  ASSERT_TRUE(WaitRxUsed(14));  // ceil(20000 / 1448)
  std::vector<uint8_t> payload;
  for (uint16_t i = 0; i < 14; ++i) {
    auto [got_header, got] = ReadRxSlot(i, i);
    EXPECT_EQ(got_header.flags, 0);
    EXPECT_EQ(got_header.gso_type, kVirtioNetHdrGsoNone);
    EXPECT_EQ(got_header.num_buffers, 1);
    std::optional<TcpSegment> segment = testing::ParseTcpFrame(got);
    ASSERT_TRUE(segment.has_value());
    EXPECT_LE(segment->ip_total_length, kMtu);
    EXPECT_TRUE(segment->tcp_checksum_ok) << "segment " << i;
    payload.insert(payload.end(), segment->payload.begin(), segment->payload.end());
  }
  EXPECT_EQ(payload, std::vector<uint8_t>(frame.begin() + testing::kTcpHeadersLen, frame.end()));
}

// A frame the tap queued with offloads the guest did not accept (here: the tap's offloads changed
// behind the device's back) is dropped, not handed to the guest; the chain takes the next frame.
TEST_F(NetDeviceTest, RxFrameWithOffloadsTheGuestDidNotAcceptIsDropped) {
  ASSERT_EQ(ioctl(device_->tap_fd(), TUNSETOFFLOAD, TUN_F_CSUM | TUN_F_TSO4), 0);
  ASSERT_FALSE(SendCoalescedTcpFrame(20000).empty());
  const std::vector<uint8_t> later = TestFrame(200, 5);
  ASSERT_TRUE(tap_->Inject(later).ok());
  PostBigRx();  // large enough for the GSO frame: size is not why it is dropped
  NotifyRx();
  ASSERT_TRUE(WaitRxUsed(1));
  ASSERT_EQ(rx_.Used(0).len, kNetHeaderSize + later.size());
  auto [got_header, got] = ReadBigRx(rx_.Used(0).len);
  EXPECT_EQ(got, later);
  EXPECT_EQ(got_header.flags, 0);
  EXPECT_EQ(device_->counters().rx_dropped, 1u);
  EXPECT_EQ(device_->counters().rx_frames, 1u);
}

TEST(TapTest, AdoptRefusesWhatIsNotAVnetHdrTap) {
  int pipe_fds[2];
  ASSERT_EQ(pipe2(pipe_fds, O_CLOEXEC), 0);
  close(pipe_fds[1]);
  absl::StatusOr<Tap> tap = AdoptTap(UniqueFd(pipe_fds[0]));
  ASSERT_FALSE(tap.ok());
  EXPECT_NE(tap.status().message().find("is not an attached tun/tap device"), std::string::npos)
      << tap.status();
  EXPECT_LT(fcntl(pipe_fds[0], F_GETFD), 0) << "the refused fd was not closed";

  absl::StatusOr<UniqueFd> tun = testing::CreateTap("ktun0", IFF_TUN | IFF_NO_PI | IFF_VNET_HDR);
  ASSERT_TRUE(tun.ok()) << tun.status();
  tap = AdoptTap(*std::move(tun));
  ASSERT_FALSE(tap.ok());
  EXPECT_NE(tap.status().message().find("not IFF_TAP"), std::string::npos) << tap.status();

  // (Not tested: a tap without IFF_NO_PI. Some kernels, 6.18 here, report IFF_NO_PI in TUNGETIFF
  // whatever was asked for.)
  absl::StatusOr<UniqueFd> plain = testing::CreateTap("ktap9", IFF_TAP | IFF_NO_PI);
  ASSERT_TRUE(plain.ok()) << plain.status();
  tap = AdoptTap(*std::move(plain));
  ASSERT_FALSE(tap.ok());
  EXPECT_NE(tap.status().message().find("(ktap9) is not usable: IFF_VNET_HDR is not set"),
            std::string::npos)
      << tap.status();

  tap = AdoptTap(UniqueFd(987));
  ASSERT_FALSE(tap.ok());
  EXPECT_NE(tap.status().message().find("fd 987 is not open"), std::string::npos) << tap.status();
}

TEST(TapTest, AdoptConfiguresTheFd) {
  absl::StatusOr<UniqueFd> fd = testing::CreateTap("ktap8", IFF_TAP | IFF_NO_PI | IFF_VNET_HDR);
  ASSERT_TRUE(fd.ok()) << fd.status();
  absl::StatusOr<Tap> tap = AdoptTap(*std::move(fd));
  ASSERT_TRUE(tap.ok()) << tap.status();
  EXPECT_EQ(tap->name, "ktap8");
  int size = 0;
  ASSERT_EQ(ioctl(tap->fd.get(), TUNGETVNETHDRSZ, &size), 0);
  EXPECT_EQ(size, 12);
  EXPECT_NE(fcntl(tap->fd.get(), F_GETFL) & O_NONBLOCK, 0);
  EXPECT_NE(fcntl(tap->fd.get(), F_GETFD) & FD_CLOEXEC, 0);
}

TEST(TapTest, OpenCreatesTheNamedTapAndChecksTheName) {
  absl::StatusOr<Tap> tap = OpenTap("kopen0");
  ASSERT_TRUE(tap.ok()) << tap.status();
  EXPECT_EQ(tap->name, "kopen0");
  EXPECT_NE(if_nametoindex("kopen0"), 0u);
  tap->fd.reset();
  EXPECT_EQ(if_nametoindex("kopen0"), 0u) << "a tap kapsel-vmm created outlives it";
  EXPECT_FALSE(OpenTap("a-name-too-long-1").ok());
  EXPECT_FALSE(OpenTap("").ok());
  EXPECT_FALSE(OpenTap("a/b").ok());
}

TEST(NetDeviceCreateTest, RefusesBadMacAndMtu) {
  absl::StatusOr<std::unique_ptr<EventLoop>> loop = EventLoop::Create();
  ASSERT_TRUE(loop.ok());
  for (auto [mac, mtu] : std::vector<std::pair<MacAddress, uint32_t>>{
           {MacAddress{0x01, 0, 0, 0, 0, 1}, 0}, {MacAddress{}, 0}, {kMac, 67}, {kMac, 65522}}) {
    absl::StatusOr<Tap> tap = OpenTap("kbad0");
    ASSERT_TRUE(tap.ok()) << tap.status();
    EXPECT_FALSE(
        NetDevice::Create({.tap = *std::move(tap), .mac = mac, .mtu = mtu}, loop->get()).ok());
  }
}

}  // namespace
}  // namespace kapsel::vmm::virtio

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  absl::Status netns = kapsel::vmm::virtio::testing::EnterPrivateNetns();
  if (!netns.ok()) {
    std::fprintf(stderr, "net_device_test: %s (needs root)\n",
                 std::string(netns.message()).c_str());
    return 1;
  }
  return RUN_ALL_TESTS();
}
