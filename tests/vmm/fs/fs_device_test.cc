// virtio-fs through the virtio-mmio transport: the test plays the guest driver (registers, rings in
// guest memory) and, on a socketpair, the vhost-user backend; the event loop runs on its own
// thread as in the VMM. The last test drives Debian's real virtiofsd with FUSE requests.
#include "vmm/devices/virtio/fs/fs_device.h"

#include <linux/fuse.h>
#include <linux/virtio_config.h>
#include <linux/virtio_ids.h>
#include <linux/virtio_mmio.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "tests/support/subprocess.h"
#include "tests/vmm/vhost_user/backend_peer.h"
#include "tests/vmm/virtio/virtio_test_util.h"
#include "vmm/devices/virtio/mmio_transport.h"
#include "vmm/event_loop.h"
#include "vmm/vhost_user/frontend.h"

namespace kapsel::vmm::virtio {
namespace {

namespace vu = ::kapsel::vmm::vhost_user;
using ::kapsel::vmm::virtio::testing::FakeDriver;
using ::kapsel::vmm::virtio::testing::InterruptCount;
using ::kapsel::vmm::virtio::testing::MakeGuestMemory;
using ::kapsel::vmm::virtio::testing::MmioDriver;
using ::kapsel::vmm::virtio::testing::RecordingInterrupt;
using vu::Request;

constexpr uint64_t Bit(int n) { return uint64_t{1} << n; }
constexpr int kRingPacked = 34;
constexpr uint64_t kBackendFeatures = Bit(VIRTIO_F_VERSION_1) | Bit(28) | Bit(29) |
                                      Bit(kRingPacked) | Bit(vu::kFeatureProtocolFeatures);
constexpr uint64_t kBackendProtocolFeatures = Bit(vu::kProtocolFeatureMq) |
                                              Bit(vu::kProtocolFeatureReplyAck) |
                                              Bit(vu::kProtocolFeatureConfig);
constexpr GuestAddress kDesc1 = 0x20000, kAvail1 = 0x22000, kUsed1 = 0x23000;

uint32_t U32At(const std::vector<uint8_t>& bytes, size_t at) {
  uint32_t v = 0;
  if (at + 4 <= bytes.size()) std::memcpy(&v, bytes.data() + at, 4);
  return v;
}
uint64_t U64At(const std::vector<uint8_t>& bytes, size_t at) {
  uint64_t v = 0;
  if (at + 8 <= bytes.size()) std::memcpy(&v, bytes.data() + at, 8);
  return v;
}

// Waits until `predicate` holds (polling), up to `timeout`.
template <typename F>
bool WaitUntil(F predicate, absl::Duration timeout = absl::Seconds(5)) {
  const absl::Time deadline = absl::Now() + timeout;
  while (absl::Now() < deadline) {
    if (predicate()) return true;
    absl::SleepFor(absl::Milliseconds(2));
  }
  return predicate();
}

// A scripted backend on its own thread: answers GET_* and acks, records every message.
class FakeBackend {
 public:
  struct Options {
    uint64_t features = kBackendFeatures;
    uint64_t protocol_features = kBackendProtocolFeatures;
    uint64_t queue_num = 2;
    // Ack value for this request (default 0 = success).
    std::map<uint32_t, uint64_t> ack_results;
    // Requests that get no answer at all.
    std::vector<uint32_t> ignore;
  };

  FakeBackend(UniqueFd socket, Options options)
      : socket_(std::move(socket)), options_(std::move(options)) {
    thread_ = std::thread([this] { Serve(); });
  }
  ~FakeBackend() { Close(); }

  // Closes the backend's end, as a dying virtiofsd would.
  void Close() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
    socket_.reset();
  }

  std::vector<vu::testing::Received> Take() {
    absl::MutexLock lock(&mu_);
    return std::move(log_);
  }
  size_t count() {
    absl::MutexLock lock(&mu_);
    return log_.size();
  }
  // The requests received so far, as names.
  std::vector<std::string> Names() {
    absl::MutexLock lock(&mu_);
    std::vector<std::string> names;
    for (const auto& r : log_) names.push_back(vu::RequestName(r.message.request));
    return names;
  }

 private:
  void Serve() {
    while (!stop_) {
      std::optional<vu::testing::Received> r =
          vu::testing::ReadMessage(socket_.get(), absl::Milliseconds(50));
      if (!r.has_value()) continue;
      // Logged before the answer, which lets the frontend go on.
      const uint32_t request = r->message.request;
      const uint32_t flags = r->message.flags;
      const std::vector<uint8_t> payload = r->message.payload;
      {
        absl::MutexLock lock(&mu_);
        log_.push_back(std::move(*r));
      }
      Answer(request, flags, payload);
    }
  }

  void Answer(uint32_t req, uint32_t flags, const std::vector<uint8_t>& payload) {
    const int fd = socket_.get();
    for (uint32_t ignored : options_.ignore) {
      if (ignored == req) return;
    }
    switch (static_cast<Request>(req)) {
      case Request::kGetFeatures:
        vu::testing::ReplyU64(fd, Request::kGetFeatures, options_.features);
        return;
      case Request::kGetProtocolFeatures:
        vu::testing::ReplyU64(fd, Request::kGetProtocolFeatures, options_.protocol_features);
        return;
      case Request::kGetQueueNum:
        vu::testing::ReplyU64(fd, Request::kGetQueueNum, options_.queue_num);
        return;
      case Request::kGetVringBase:
        vu::testing::Reply(fd, Request::kGetVringBase,
                           vu::EncodeVringState({U32At(payload, 0), 0}));
        return;
      default:
        break;
    }
    if ((flags & vu::kFlagNeedReply) != 0) {
      auto it = options_.ack_results.find(req);
      vu::testing::ReplyU64(fd, static_cast<Request>(req),
                            it == options_.ack_results.end() ? 0 : it->second);
    }
  }

  UniqueFd socket_;
  const Options options_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
  absl::Mutex mu_;
  std::vector<vu::testing::Received> log_ ABSL_GUARDED_BY(mu_);
};

class FsDeviceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto loop = EventLoop::Create();
    ASSERT_TRUE(loop.ok());
    loop_ = *std::move(loop);
    loop_thread_ = std::thread([this] {
      while (!stop_loop_) (void)loop_->RunOnce(20);
    });
    for (UniqueFd& fd : notify_) fd.reset(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  }

  void TearDown() override {
    // The device goes while the loop is not running (as in the VMM, after Run).
    stop_loop_ = true;
    loop_thread_.join();
    transport_.reset();
    backend_.reset();
  }

  // Creates the device over a socketpair with a FakeBackend and puts it behind a transport.
  absl::Status Start(FakeBackend::Options options = {}, const std::string& tag = "myfs",
                     absl::Duration timeout = absl::Seconds(2)) {
    if (transport_) {
      // A device goes only while the loop is not running.
      stop_loop_ = true;
      loop_thread_.join();
      transport_.reset();
      stop_loop_ = false;
      loop_thread_ = std::thread([this] {
        while (!stop_loop_) (void)loop_->RunOnce(20);
      });
    }
    auto [frontend_end, backend_end] = vu::testing::SocketPair();
    backend_ = std::make_unique<FakeBackend>(std::move(backend_end), std::move(options));
    auto device = FsDevice::Create(
        tag, vu::Frontend::FromSocket(std::move(frontend_end), {.timeout = timeout}), loop_.get(),
        [this](const std::string& why) {
          absl::MutexLock lock(&failure_mu_);
          failures_.push_back(why);
        });
    if (!device.ok()) return device.status();
    device_ = device->get();
    transport_ = std::make_unique<MmioTransport>(*std::move(device), memory_.get(),
                                                 std::make_unique<RecordingInterrupt>(&irqs_));
    transport_->SetQueueNotifyFds({notify_[0].get(), notify_[1].get()});
    return absl::OkStatus();
  }

  // Negotiates, sets up both queues and sets DRIVER_OK; returns the status register.
  uint32_t Activate(uint64_t features) {
    MmioDriver driver(*transport_);
    const uint32_t status = driver.Negotiate(features);
    driver.SetUpQueue(0, hiprio_);
    driver.SetUpQueue(1, requests_);
    driver.Write32(VIRTIO_MMIO_STATUS, status | VIRTIO_CONFIG_S_DRIVER_OK);
    return driver.Read32(VIRTIO_MMIO_STATUS);
  }

  std::vector<std::string> Failures() {
    absl::MutexLock lock(&failure_mu_);
    return failures_;
  }

  std::unique_ptr<GuestMemory> memory_ = MakeGuestMemory();  // before the drivers below
  std::unique_ptr<EventLoop> loop_;
  std::atomic<bool> stop_loop_{false};
  std::thread loop_thread_;
  UniqueFd notify_[2];
  std::unique_ptr<FakeBackend> backend_;
  FsDevice* device_ = nullptr;
  InterruptCount irqs_;
  std::unique_ptr<MmioTransport> transport_;
  FakeDriver hiprio_{*memory_, 64};
  FakeDriver requests_{*memory_, 128, kDesc1, kAvail1, kUsed1};
  absl::Mutex failure_mu_;
  std::vector<std::string> failures_ ABSL_GUARDED_BY(failure_mu_);
};

TEST_F(FsDeviceTest, HandshakeConfigAndFeatures) {
  ASSERT_TRUE(Start().ok());
  EXPECT_EQ(backend_->Names(),
            (std::vector<std::string>{"GET_FEATURES", "GET_PROTOCOL_FEATURES",
                                      "SET_PROTOCOL_FEATURES", "SET_OWNER", "GET_QUEUE_NUM"}));
  auto log = backend_->Take();
  // Only the protocol features we use: REPLY_ACK and MQ, not CONFIG.
  EXPECT_EQ(U64At(log[2].message.payload, 0),
            Bit(vu::kProtocolFeatureMq) | Bit(vu::kProtocolFeatureReplyAck));
  EXPECT_EQ(log[3].message.flags, vu::kVersion | vu::kFlagNeedReply);

  MmioDriver driver(*transport_);
  EXPECT_EQ(driver.Read32(VIRTIO_MMIO_DEVICE_ID), uint32_t{VIRTIO_ID_FS});
  EXPECT_EQ(driver.DeviceFeatures(), Bit(VIRTIO_F_VERSION_1) | Bit(28) | Bit(29));
  uint8_t config[48];
  std::memset(config, 0xaa, sizeof(config));
  transport_->Read(VIRTIO_MMIO_CONFIG, absl::MakeSpan(config));
  EXPECT_EQ(std::string(reinterpret_cast<char*>(config), 4), "myfs");
  for (int i = 4; i < 36; ++i) EXPECT_EQ(config[i], 0) << i;
  uint32_t num_request_queues;
  std::memcpy(&num_request_queues, config + 36, 4);
  EXPECT_EQ(num_request_queues, 1u);
  // Two queues: hiprio and one request queue.
  driver.Write32(VIRTIO_MMIO_QUEUE_SEL, 2);
  EXPECT_EQ(driver.Read32(VIRTIO_MMIO_QUEUE_NUM_MAX), 0u);
  driver.Write32(VIRTIO_MMIO_QUEUE_SEL, 1);
  EXPECT_EQ(driver.Read32(VIRTIO_MMIO_QUEUE_NUM_MAX), FsDevice::kRequestQueueSize);
}

TEST_F(FsDeviceTest, BadTagsAndBackendsAreRefused) {
  EXPECT_FALSE(Start({}, "").ok());
  EXPECT_FALSE(Start({}, std::string(37, 't')).ok());
  EXPECT_TRUE(Start({}, std::string(36, 't')).ok());
  FakeBackend::Options legacy;
  legacy.features = Bit(vu::kFeatureProtocolFeatures);
  absl::Status status = Start(legacy);
  EXPECT_NE(status.message().find("VIRTIO_F_VERSION_1"), std::string::npos) << status;
  FakeBackend::Options one_ring;
  one_ring.queue_num = 1;
  status = Start(one_ring);
  EXPECT_NE(status.message().find("1 rings"), std::string::npos) << status;
}

TEST_F(FsDeviceTest, ActivationSharesMemoryAndRings) {
  ASSERT_TRUE(Start().ok());
  backend_->Take();
  const uint64_t features = Bit(VIRTIO_F_VERSION_1) | Bit(29);
  const uint32_t status = Activate(features);
  ASSERT_EQ(status & VIRTIO_CONFIG_S_NEEDS_RESET, 0u) << transport_->last_error();
  ASSERT_NE(status & VIRTIO_CONFIG_S_DRIVER_OK, 0u);
  const std::vector<std::string> ring = {"SET_VRING_NUM",  "SET_VRING_BASE", "SET_VRING_ADDR",
                                         "SET_VRING_CALL", "SET_VRING_KICK", "SET_VRING_ENABLE"};
  std::vector<std::string> want = {"SET_FEATURES", "SET_MEM_TABLE"};
  for (int i = 0; i < 2; ++i) want.insert(want.end(), ring.begin(), ring.end());
  ASSERT_EQ(backend_->Names(), want);
  auto log = backend_->Take();
  for (const auto& r : log) EXPECT_EQ(r.message.flags, vu::kVersion | vu::kFlagNeedReply);

  // The driver's features plus the vhost-user protocol bit.
  EXPECT_EQ(U64At(log[0].message.payload, 0), features | Bit(vu::kFeatureProtocolFeatures));

  // One region per guest RAM range, each with an fd that maps the very same pages.
  absl::StatusOr<std::vector<vu::MemRegion>> table = vu::DecodeMemTable(log[1].message.payload);
  ASSERT_TRUE(table.ok()) << table.status();
  ASSERT_EQ(table->size(), memory_->regions().size());
  ASSERT_EQ(log[1].fds.size(), table->size());
  for (size_t i = 0; i < table->size(); ++i) {
    const vu::MemRegion& r = (*table)[i];
    const MemoryRegion& ours = memory_->regions()[i];
    EXPECT_EQ(r.guest_phys_addr, ours.guest_start);
    EXPECT_EQ(r.memory_size, ours.size);
    EXPECT_EQ(r.userspace_addr, reinterpret_cast<uint64_t>(ours.host));
    void* map = mmap(nullptr, r.memory_size, PROT_READ, MAP_SHARED, log[1].fds[i].get(),
                     static_cast<off_t>(r.mmap_offset));
    ASSERT_NE(map, MAP_FAILED);
    const uint64_t marker = 0x6b6170736c000000 + i;
    ASSERT_TRUE(memory_->WriteObj(ours.guest_start + 0x100, marker).ok());
    uint64_t seen;
    std::memcpy(&seen, static_cast<uint8_t*>(map) + 0x100, sizeof(seen));
    EXPECT_EQ(seen, marker) << "region " << i;
    munmap(map, r.memory_size);
  }

  // Ring 1: size, base, and addresses in our address space.
  const size_t r1 = 2 + ring.size();
  EXPECT_EQ(U32At(log[r1].message.payload, 0), 1u);
  EXPECT_EQ(U32At(log[r1].message.payload, 4), 128u);
  EXPECT_EQ(U32At(log[r1 + 1].message.payload, 4), 0u);
  absl::StatusOr<vu::VringAddr> addr = vu::DecodeVringAddr(log[r1 + 2].message.payload);
  ASSERT_TRUE(addr.ok());
  EXPECT_EQ(addr->index, 1u);
  EXPECT_EQ(addr->desc_user_addr, reinterpret_cast<uint64_t>(*memory_->Translate(kDesc1, 1)));
  EXPECT_EQ(addr->avail_user_addr, reinterpret_cast<uint64_t>(*memory_->Translate(kAvail1, 1)));
  EXPECT_EQ(addr->used_user_addr, reinterpret_cast<uint64_t>(*memory_->Translate(kUsed1, 1)));
  EXPECT_EQ(U32At(log[r1 + 5].message.payload, 4), 1u);  // enabled

  // The kick fd is the queue's notification eventfd: a guest notify reaches the backend.
  const int kick = log[r1 + 4].fds.at(0).get();
  const uint64_t one = 1;
  ASSERT_EQ(write(notify_[1].get(), &one, 8), 8);
  uint64_t value = 0;
  ASSERT_EQ(read(kick, &value, 8), 8);
  EXPECT_EQ(value, 1u);
  // A QueueNotify write that did not go through the ioeventfd is forwarded to it.
  MmioDriver(*transport_).Write32(VIRTIO_MMIO_QUEUE_NOTIFY, 1);
  ASSERT_EQ(read(kick, &value, 8), 8);

  // The backend's call becomes an interrupt with the VRING bit set.
  const int call = log[r1 + 3].fds.at(0).get();
  const int before = irqs_.triggers.load();
  ASSERT_EQ(write(call, &one, 8), 8);
  ASSERT_TRUE(WaitUntil([&] { return irqs_.triggers.load() > before; }));
  EXPECT_EQ(MmioDriver(*transport_).Read32(VIRTIO_MMIO_INTERRUPT_STATUS) & VIRTIO_MMIO_INT_VRING,
            uint32_t{VIRTIO_MMIO_INT_VRING});
  EXPECT_TRUE(Failures().empty());
}

TEST_F(FsDeviceTest, ResetStopsTheRingsAndASecondActivationWorks) {
  ASSERT_TRUE(Start().ok());
  backend_->Take();
  ASSERT_NE(Activate(Bit(VIRTIO_F_VERSION_1)) & VIRTIO_CONFIG_S_DRIVER_OK, 0u);
  auto first = backend_->Take();
  const int old_call = first[2 + 3].fds.at(0).get();  // ring 0's call fd, as the backend has it
  UniqueFd old_call_copy(dup(old_call));

  MmioDriver(*transport_).Write32(VIRTIO_MMIO_STATUS, 0);
  EXPECT_EQ(backend_->Names(), (std::vector<std::string>{"SET_VRING_ENABLE", "GET_VRING_BASE",
                                                         "SET_VRING_ENABLE", "GET_VRING_BASE"}));
  auto stop = backend_->Take();
  EXPECT_EQ(U32At(stop[0].message.payload, 4), 0u);  // disabled
  EXPECT_EQ(U32At(stop[3].message.payload, 0), 1u);  // ring 1

  // The old call eventfd is no longer watched.
  const int before = irqs_.triggers.load();
  const uint64_t one = 1;
  ASSERT_EQ(write(old_call_copy.get(), &one, 8), 8);
  absl::SleepFor(absl::Milliseconds(100));
  EXPECT_EQ(irqs_.triggers.load(), before);

  ASSERT_NE(Activate(Bit(VIRTIO_F_VERSION_1)) & VIRTIO_CONFIG_S_DRIVER_OK, 0u);
  auto second = backend_->Names();
  ASSERT_GE(second.size(), 2u);
  EXPECT_EQ(second[0], "SET_FEATURES");
  EXPECT_EQ(second[1], "SET_MEM_TABLE");
  EXPECT_EQ(second.size(), 14u);
  EXPECT_TRUE(Failures().empty());
}

TEST_F(FsDeviceTest, RejectedMessageFailsOnlyThisActivation) {
  FakeBackend::Options options;
  options.ack_results[static_cast<uint32_t>(Request::kSetVringAddr)] = 1;
  ASSERT_TRUE(Start(options).ok());
  backend_->Take();
  const uint32_t status = Activate(Bit(VIRTIO_F_VERSION_1));
  EXPECT_NE(status & VIRTIO_CONFIG_S_NEEDS_RESET, 0u);
  const std::string error(transport_->last_error().message());
  EXPECT_NE(error.find("SET_VRING_ADDR"), std::string::npos) << error;
  EXPECT_NE(error.find("virtio-fs(myfs)"), std::string::npos) << error;
  EXPECT_TRUE(Failures().empty()) << "a refusal is not a dead backend";
  // Nothing had started (the kick comes after the address), so nothing is stopped.
  const std::vector<std::string> names = backend_->Names();
  EXPECT_EQ(names.back(), "SET_VRING_ADDR");
}

TEST_F(FsDeviceTest, BackendHangupIsReportedOnce) {
  ASSERT_TRUE(Start().ok());
  ASSERT_NE(Activate(Bit(VIRTIO_F_VERSION_1)) & VIRTIO_CONFIG_S_DRIVER_OK, 0u);
  backend_->Close();
  ASSERT_TRUE(WaitUntil([&] { return !Failures().empty(); }));
  EXPECT_TRUE(device_->backend_failed());
  const std::string why = Failures()[0];
  EXPECT_NE(why.find("virtio-fs(myfs)"), std::string::npos) << why;
  EXPECT_NE(why.find("closed the connection"), std::string::npos) << why;
  // Reset and a new activation neither hang nor report again.
  const absl::Time start = absl::Now();
  const uint32_t status = Activate(Bit(VIRTIO_F_VERSION_1));
  EXPECT_NE(status & VIRTIO_CONFIG_S_NEEDS_RESET, 0u);
  EXPECT_LT(absl::Now() - start, absl::Seconds(1));
  absl::SleepFor(absl::Milliseconds(50));
  EXPECT_EQ(Failures().size(), 1u);
}

TEST_F(FsDeviceTest, BackendThatStopsAnsweringIsAFailure) {
  FakeBackend::Options options;
  options.ignore.push_back(static_cast<uint32_t>(Request::kGetVringBase));
  ASSERT_TRUE(Start(options, "myfs", absl::Milliseconds(300)).ok());
  ASSERT_NE(Activate(Bit(VIRTIO_F_VERSION_1)) & VIRTIO_CONFIG_S_DRIVER_OK, 0u);
  const absl::Time start = absl::Now();
  MmioDriver(*transport_).Write32(VIRTIO_MMIO_STATUS, 0);
  EXPECT_LT(absl::Now() - start, absl::Seconds(2));
  ASSERT_EQ(Failures().size(), 1u);
  EXPECT_NE(Failures()[0].find("GET_VRING_BASE"), std::string::npos) << Failures()[0];
}

// Debian's virtiofsd (qemu 7.2) as the backend, the test as the guest's FUSE driver: FUSE_INIT and
// a LOOKUP through the request queue prove the memory table, the ring addresses, the kick and the
// call all work with the real thing.
TEST_F(FsDeviceTest, RealVirtiofsdAnswersFuseRequests) {
  constexpr char kVirtiofsd[] = "/usr/lib/qemu/virtiofsd";
  if (geteuid() != 0 || access(kVirtiofsd, X_OK) != 0) {
    GTEST_SKIP() << "needs root and " << kVirtiofsd << " (qemu-system-common)";
  }
  char dir[] = "/tmp/kapsel-fs-test-XXXXXX";
  ASSERT_NE(mkdtemp(dir), nullptr);
  absl::Cleanup remove_dir = [&] { std::filesystem::remove_all(dir); };
  const std::string share = absl::StrCat(dir, "/share"), sock = absl::StrCat(dir, "/fs.sock");
  ASSERT_EQ(mkdir(share.c_str(), 0755), 0);
  std::ofstream(share + "/hello") << "0123456789";
  auto virtiofsd = kapsel::testing::Subprocess::Start(
      {kVirtiofsd, "--socket-path=" + sock, "-o", "source=" + share, "-o", "cache=none"});
  ASSERT_TRUE(virtiofsd.ok()) << virtiofsd.status();
  // The socket file appears (bind) a moment before virtiofsd listens on it.
  absl::StatusOr<std::unique_ptr<vu::Frontend>> frontend;
  WaitUntil([&] {
    frontend = vu::Frontend::Connect(sock);
    return frontend.ok();
  });
  ASSERT_TRUE(frontend.ok()) << frontend.status();
  auto device =
      FsDevice::Create("realfs", *std::move(frontend), loop_.get(), [this](const std::string& why) {
        absl::MutexLock lock(&failure_mu_);
        failures_.push_back(why);
      });
  ASSERT_TRUE(device.ok()) << device.status();
  transport_ = std::make_unique<MmioTransport>(*std::move(device), memory_.get(),
                                               std::make_unique<RecordingInterrupt>(&irqs_));
  transport_->SetQueueNotifyFds({notify_[0].get(), notify_[1].get()});
  const uint32_t status = Activate(Bit(VIRTIO_F_VERSION_1));
  ASSERT_NE(status & VIRTIO_CONFIG_S_DRIVER_OK, 0u) << transport_->last_error();
  ASSERT_EQ(status & VIRTIO_CONFIG_S_NEEDS_RESET, 0u) << transport_->last_error();

  // One FUSE request on the request queue: header + body in, a reply buffer out.
  constexpr GuestAddress kIn = 0x40000, kOut = 0x50000;
  uint16_t used = 0;
  auto send = [&](uint32_t opcode, uint64_t nodeid, const std::vector<uint8_t>& body,
                  uint64_t unique) -> std::vector<uint8_t> {
    fuse_in_header in{};
    in.len = static_cast<uint32_t>(sizeof(in) + body.size());
    in.opcode = opcode;
    in.unique = unique;
    in.nodeid = nodeid;
    EXPECT_TRUE(memory_->Write(kIn, &in, sizeof(in)).ok());
    EXPECT_TRUE(memory_->Write(kIn + sizeof(in), body.data(), body.size()).ok());
    const int before = irqs_.triggers.load();
    requests_.Publish(requests_.AddChain({{kIn, in.len, false}, {kOut, 4096, true}}));
    const uint64_t one = 1;
    EXPECT_EQ(write(notify_[1].get(), &one, 8), 8);  // what KVM does on QueueNotify
    EXPECT_TRUE(WaitUntil([&] { return requests_.UsedIdx() == used + 1; }))
        << virtiofsd.value()->Wait(absl::Seconds(1)).err;
    ++used;
    EXPECT_TRUE(WaitUntil([&] { return irqs_.triggers.load() > before; }));
    const uint32_t len = requests_.Used(used - 1).len;
    std::vector<uint8_t> reply(std::min<uint32_t>(len, 4096));
    EXPECT_TRUE(memory_->Read(kOut, reply.data(), reply.size()).ok());
    return reply;
  };

  fuse_init_in init{};
  init.major = FUSE_KERNEL_VERSION;
  init.minor = FUSE_KERNEL_MINOR_VERSION;
  init.max_readahead = 1 << 20;
  std::vector<uint8_t> body(sizeof(init));
  std::memcpy(body.data(), &init, sizeof(init));
  std::vector<uint8_t> reply = send(FUSE_INIT, 0, body, 1);
  ASSERT_GE(reply.size(), sizeof(fuse_out_header) + 8);
  fuse_out_header out;
  std::memcpy(&out, reply.data(), sizeof(out));
  EXPECT_EQ(out.error, 0);
  EXPECT_EQ(out.unique, 1u);
  uint32_t major;
  std::memcpy(&major, reply.data() + sizeof(out), 4);
  EXPECT_EQ(major, uint32_t{FUSE_KERNEL_VERSION});

  const std::string name = "hello";
  std::vector<uint8_t> lookup(name.begin(), name.end());
  lookup.push_back(0);
  reply = send(FUSE_LOOKUP, FUSE_ROOT_ID, lookup, 2);
  ASSERT_GE(reply.size(), sizeof(fuse_out_header) + sizeof(fuse_entry_out));
  std::memcpy(&out, reply.data(), sizeof(out));
  EXPECT_EQ(out.error, 0);
  fuse_entry_out entry;
  std::memcpy(&entry, reply.data() + sizeof(out), sizeof(entry));
  EXPECT_EQ(entry.attr.size, 10u);

  // Reset stops virtiofsd's rings (GET_VRING_BASE) without killing it.
  MmioDriver(*transport_).Write32(VIRTIO_MMIO_STATUS, 0);
  EXPECT_EQ(transport_->status(), 0u);
  EXPECT_TRUE(Failures().empty()) << Failures()[0];

  // Killing virtiofsd is noticed and reported.
  virtiofsd.value()->Signal(SIGKILL);
  EXPECT_TRUE(WaitUntil([&] { return !Failures().empty(); }));
  virtiofsd.value()->Wait(absl::Seconds(5));
}

}  // namespace
}  // namespace kapsel::vmm::virtio
