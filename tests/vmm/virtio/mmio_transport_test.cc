#include "vmm/devices/virtio/mmio_transport.h"

#include <linux/virtio_config.h>
#include <linux/virtio_mmio.h>

#include <memory>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/vmm/virtio/virtio_test_util.h"
#include "vmm/devices/virtio/ring_abi.h"

namespace kapsel::vmm::virtio {
namespace {

using ::kapsel::vmm::virtio::testing::FakeDriver;
using ::kapsel::vmm::virtio::testing::InterruptCount;
using ::kapsel::vmm::virtio::testing::kData;
using ::kapsel::vmm::virtio::testing::kRamEnd;
using ::kapsel::vmm::virtio::testing::MakeGuestMemory;
using ::kapsel::vmm::virtio::testing::MmioDriver;
using ::kapsel::vmm::virtio::testing::RecordingInterrupt;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

constexpr uint32_t kTestDeviceType = 0x2a;
constexpr uint64_t kVersion1 = uint64_t{1} << VIRTIO_F_VERSION_1;
constexpr uint64_t kFeatureA = uint64_t{1} << 0;
constexpr uint64_t kFeatureHigh = uint64_t{1} << 40;
constexpr uint32_t kAckDriver = VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER;

// What the fake device saw; owned by the test because the transport owns the device.
struct DeviceLog {
  int activations = 0;
  int resets = 0;
  std::vector<uint16_t> processed;
  ActivateContext context;
  std::vector<std::pair<uint64_t, std::vector<uint8_t>>> config_writes;
  bool fail_activation = false;
};

// Two queues (max 64 and 16), features A (bit 0) and bit 40, an 8-byte config {1..8}. Processing
// a queue returns every chain with used length 1.
class FakeDevice : public VirtioDevice {
 public:
  explicit FakeDevice(DeviceLog* log) : log_(log) {}
  std::string name() const override { return "fake"; }
  uint32_t device_type() const override { return kTestDeviceType; }
  // VERSION_1 is added by the transport.
  uint64_t device_features() const override { return kFeatureA | kFeatureHigh; }
  uint16_t num_queues() const override { return 2; }
  uint16_t max_queue_size(uint16_t index) const override { return index == 0 ? 64 : 16; }
  void ReadConfig(uint64_t offset, absl::Span<uint8_t> data) override {
    static const uint8_t kConfig[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    ReadConfigImage(kConfig, offset, data);
  }
  void WriteConfig(uint64_t offset, absl::Span<const uint8_t> data) override {
    log_->config_writes.push_back({offset, std::vector<uint8_t>(data.begin(), data.end())});
  }
  absl::Status Activate(ActivateContext context) override {
    if (log_->fail_activation) return absl::InternalError("no backend");
    ++log_->activations;
    log_->context = std::move(context);
    return absl::OkStatus();
  }
  void ProcessQueue(uint16_t index) override {
    log_->processed.push_back(index);
    Queue& queue = log_->context.queues[index];
    while (true) {
      absl::StatusOr<std::optional<DescriptorChain>> chain = queue.Pop();
      if (!chain.ok() || !chain->has_value()) return;
      if (!queue.AddUsed((*chain)->head, 1).ok()) return;
    }
  }
  void Reset() override {
    ++log_->resets;
    log_->context = {};
  }

 private:
  DeviceLog* log_;
};

class MmioTransportTest : public ::testing::Test {
 protected:
  MmioTransportTest()
      : memory_(MakeGuestMemory()),
        transport_(std::make_unique<FakeDevice>(&log_), memory_.get(),
                   std::make_unique<RecordingInterrupt>(&irq_)),
        mmio_(transport_),
        queue0_(*memory_, 64) {}

  uint32_t Status() { return mmio_.Read32(VIRTIO_MMIO_STATUS); }
  void PublishChain() { queue0_.Publish(queue0_.AddChain({{kData, 4, true}})); }

  DeviceLog log_;
  InterruptCount irq_;
  std::unique_ptr<GuestMemory> memory_;
  MmioTransport transport_;
  MmioDriver mmio_;
  FakeDriver queue0_;
};

TEST_F(MmioTransportTest, Identification) {
  EXPECT_EQ(mmio_.Read32(VIRTIO_MMIO_MAGIC_VALUE), 0x74726976u);
  EXPECT_EQ(mmio_.Read32(VIRTIO_MMIO_VERSION), 2u);
  EXPECT_EQ(mmio_.Read32(VIRTIO_MMIO_DEVICE_ID), kTestDeviceType);
  EXPECT_EQ(mmio_.Read32(VIRTIO_MMIO_VENDOR_ID), kMmioVendorId);
  EXPECT_EQ(transport_.name(), "virtio-mmio:fake");
  EXPECT_EQ(transport_.num_queues(), 2);
  EXPECT_EQ(Status(), 0u);
  EXPECT_EQ(mmio_.Read32(VIRTIO_MMIO_SHM_LEN_LOW), UINT32_MAX);
}

TEST_F(MmioTransportTest, DeviceFeaturesBothWordsIncludeVersion1) {
  EXPECT_EQ(mmio_.DeviceFeatures(), kFeatureA | kFeatureHigh | kVersion1);
  mmio_.Write32(VIRTIO_MMIO_DEVICE_FEATURES_SEL, 2);
  EXPECT_EQ(mmio_.Read32(VIRTIO_MMIO_DEVICE_FEATURES), 0u);
}

TEST_F(MmioTransportTest, FeaturesAccepted) {
  EXPECT_EQ(mmio_.Negotiate(kVersion1 | kFeatureHigh), kAckDriver | VIRTIO_CONFIG_S_FEATURES_OK);
}

TEST_F(MmioTransportTest, FeaturesNotOfferedAreRefused) {
  EXPECT_EQ(mmio_.Negotiate(kVersion1 | (uint64_t{1} << 3)), kAckDriver);
  EXPECT_EQ(mmio_.Negotiate(kVersion1 | (uint64_t{1} << 63)), kAckDriver);
}

TEST_F(MmioTransportTest, LegacyDriverIsRefused) {
  EXPECT_EQ(mmio_.Negotiate(kFeatureA), kAckDriver);
}

TEST_F(MmioTransportTest, FeatureWritesIgnoredAfterFeaturesOk) {
  mmio_.Negotiate(kVersion1);
  mmio_.SetDriverFeatures(kVersion1 | kFeatureA);
  mmio_.Write32(VIRTIO_MMIO_STATUS, Status() | VIRTIO_CONFIG_S_DRIVER_OK);
  ASSERT_EQ(log_.activations, 1);
  EXPECT_EQ(log_.context.acked_features, kVersion1);
}

TEST_F(MmioTransportTest, QueueNumMaxAndSelection) {
  mmio_.Write32(VIRTIO_MMIO_QUEUE_SEL, 0);
  EXPECT_EQ(mmio_.Read32(VIRTIO_MMIO_QUEUE_NUM_MAX), 64u);
  mmio_.Write32(VIRTIO_MMIO_QUEUE_SEL, 1);
  EXPECT_EQ(mmio_.Read32(VIRTIO_MMIO_QUEUE_NUM_MAX), 16u);
  mmio_.Write32(VIRTIO_MMIO_QUEUE_SEL, 2);
  EXPECT_EQ(mmio_.Read32(VIRTIO_MMIO_QUEUE_NUM_MAX), 0u);
  mmio_.Write32(VIRTIO_MMIO_QUEUE_READY, 1);  // no such queue: ignored
  EXPECT_EQ(mmio_.Read32(VIRTIO_MMIO_QUEUE_READY), 0u);
}

TEST_F(MmioTransportTest, DriverOkActivatesWithQueues) {
  const uint32_t status = mmio_.Initialize(kVersion1 | kFeatureA, queue0_);
  EXPECT_EQ(status, kAckDriver | VIRTIO_CONFIG_S_FEATURES_OK | VIRTIO_CONFIG_S_DRIVER_OK);
  ASSERT_EQ(log_.activations, 1);
  EXPECT_EQ(log_.context.memory, memory_.get());
  EXPECT_EQ(log_.context.acked_features, kVersion1 | kFeatureA);
  ASSERT_EQ(log_.context.queues.size(), 2u);
  const Queue& q0 = log_.context.queues[0];
  EXPECT_TRUE(q0.ready());
  EXPECT_TRUE(q0.active());
  EXPECT_EQ(q0.size(), 64);
  EXPECT_EQ(q0.desc_table(), queue0_.desc());
  EXPECT_EQ(q0.avail_ring(), queue0_.avail());
  EXPECT_EQ(q0.used_ring(), queue0_.used());
  EXPECT_FALSE(log_.context.queues[1].ready());
  EXPECT_FALSE(log_.context.queues[1].active());
  mmio_.Write32(VIRTIO_MMIO_QUEUE_SEL, 0);
  EXPECT_EQ(mmio_.Read32(VIRTIO_MMIO_QUEUE_READY), 1u);
}

TEST_F(MmioTransportTest, HighAddressHalves) {
  mmio_.Negotiate(kVersion1);
  mmio_.SetUpQueue(0, queue0_);
  mmio_.Write32(VIRTIO_MMIO_QUEUE_SEL, 1);
  mmio_.Write32(VIRTIO_MMIO_QUEUE_DESC_HIGH, 1);  // 0x1_0000_0000: outside guest memory
  mmio_.Write32(VIRTIO_MMIO_QUEUE_READY, 1);
  mmio_.Write32(VIRTIO_MMIO_STATUS, Status() | VIRTIO_CONFIG_S_DRIVER_OK);
  EXPECT_EQ(log_.activations, 0);
  EXPECT_NE(Status() & VIRTIO_CONFIG_S_NEEDS_RESET, 0u);
  EXPECT_THAT(transport_.last_error().message(), HasSubstr("queue 1"));
}

TEST_F(MmioTransportTest, QueueConfigIgnoredWhileReady) {
  mmio_.Negotiate(kVersion1);
  mmio_.SetUpQueue(0, queue0_);
  mmio_.Write32(VIRTIO_MMIO_QUEUE_NUM, 8);
  mmio_.Write32(VIRTIO_MMIO_QUEUE_DESC_LOW, 0x9000);
  mmio_.Write32(VIRTIO_MMIO_QUEUE_AVAIL_LOW, 0x9800);
  mmio_.Write32(VIRTIO_MMIO_QUEUE_USED_LOW, 0x9c00);
  mmio_.Write32(VIRTIO_MMIO_STATUS, Status() | VIRTIO_CONFIG_S_DRIVER_OK);
  ASSERT_EQ(log_.activations, 1);
  EXPECT_EQ(log_.context.queues[0].size(), 64);
  EXPECT_EQ(log_.context.queues[0].desc_table(), queue0_.desc());
  EXPECT_EQ(log_.context.queues[0].avail_ring(), queue0_.avail());
  EXPECT_EQ(log_.context.queues[0].used_ring(), queue0_.used());
}

TEST_F(MmioTransportTest, QueueConfigIgnoredAfterDriverOk) {
  mmio_.Initialize(kVersion1, queue0_);
  mmio_.Write32(VIRTIO_MMIO_QUEUE_SEL, 1);
  mmio_.Write32(VIRTIO_MMIO_QUEUE_NUM, 8);
  mmio_.Write32(VIRTIO_MMIO_QUEUE_READY, 1);
  EXPECT_EQ(mmio_.Read32(VIRTIO_MMIO_QUEUE_READY), 0u);
  EXPECT_EQ(log_.context.queues[1].size(), 16);
}

TEST_F(MmioTransportTest, DriverOkWithoutFeaturesOkIsIgnored) {
  mmio_.Write32(VIRTIO_MMIO_STATUS, VIRTIO_CONFIG_S_ACKNOWLEDGE);
  mmio_.Write32(VIRTIO_MMIO_STATUS, kAckDriver);
  mmio_.SetUpQueue(0, queue0_);
  mmio_.Write32(VIRTIO_MMIO_STATUS, kAckDriver | VIRTIO_CONFIG_S_DRIVER_OK);
  EXPECT_EQ(Status(), kAckDriver);
  EXPECT_EQ(log_.activations, 0);
}

TEST_F(MmioTransportTest, InvalidQueueAtDriverOkNeedsReset) {
  FakeDriver bad(*memory_, 64, kRamEnd - 0x100);  // descriptor table runs off guest RAM
  mmio_.Initialize(kVersion1, bad);
  EXPECT_EQ(log_.activations, 0);
  EXPECT_NE(Status() & VIRTIO_CONFIG_S_NEEDS_RESET, 0u);
  EXPECT_EQ(mmio_.Read32(VIRTIO_MMIO_INTERRUPT_STATUS), uint32_t{VIRTIO_MMIO_INT_CONFIG});
  EXPECT_EQ(irq_.triggers, 1);
  EXPECT_FALSE(transport_.last_error().ok());
  // Notifications go nowhere.
  transport_.NotifyQueue(0);
  EXPECT_TRUE(log_.processed.empty());
}

TEST_F(MmioTransportTest, QueueSizeNotPowerOfTwoNeedsReset) {
  mmio_.Negotiate(kVersion1);
  mmio_.SetUpQueue(0, queue0_);
  mmio_.Write32(VIRTIO_MMIO_QUEUE_READY, 0);
  mmio_.Write32(VIRTIO_MMIO_QUEUE_NUM, 48);
  mmio_.Write32(VIRTIO_MMIO_QUEUE_READY, 1);
  mmio_.Write32(VIRTIO_MMIO_STATUS, Status() | VIRTIO_CONFIG_S_DRIVER_OK);
  EXPECT_NE(Status() & VIRTIO_CONFIG_S_NEEDS_RESET, 0u);
  EXPECT_THAT(transport_.last_error().message(), HasSubstr("power of two"));
}

TEST_F(MmioTransportTest, DeviceActivationFailureNeedsReset) {
  log_.fail_activation = true;
  mmio_.Initialize(kVersion1, queue0_);
  EXPECT_NE(Status() & VIRTIO_CONFIG_S_NEEDS_RESET, 0u);
  EXPECT_NE(mmio_.Read32(VIRTIO_MMIO_INTERRUPT_STATUS) & VIRTIO_MMIO_INT_CONFIG, 0u);
  EXPECT_THAT(transport_.last_error().message(), HasSubstr("no backend"));
  const uint32_t generation = mmio_.Read32(VIRTIO_MMIO_CONFIG_GENERATION);
  EXPECT_GT(generation, 0u);
}

TEST_F(MmioTransportTest, ClearingStatusBitsNeedsAReset) {
  mmio_.Negotiate(kVersion1);
  mmio_.Write32(VIRTIO_MMIO_STATUS, VIRTIO_CONFIG_S_ACKNOWLEDGE);
  EXPECT_EQ(Status(), kAckDriver | VIRTIO_CONFIG_S_FEATURES_OK);
  mmio_.Write32(VIRTIO_MMIO_STATUS, Status() | VIRTIO_CONFIG_S_FAILED);
  EXPECT_NE(Status() & VIRTIO_CONFIG_S_FAILED, 0u);
}

TEST_F(MmioTransportTest, ResetClearsEverything) {
  mmio_.Initialize(kVersion1 | kFeatureA, queue0_);
  PublishChain();
  transport_.NotifyQueue(0);
  ASSERT_NE(mmio_.Read32(VIRTIO_MMIO_INTERRUPT_STATUS), 0u);
  const int resets_before = log_.resets;

  mmio_.Write32(VIRTIO_MMIO_STATUS, 0);
  EXPECT_EQ(Status(), 0u);
  EXPECT_EQ(log_.resets, resets_before + 1);
  EXPECT_EQ(mmio_.Read32(VIRTIO_MMIO_INTERRUPT_STATUS), 0u);
  mmio_.Write32(VIRTIO_MMIO_QUEUE_SEL, 0);
  EXPECT_EQ(mmio_.Read32(VIRTIO_MMIO_QUEUE_READY), 0u);
  EXPECT_EQ(mmio_.Read32(VIRTIO_MMIO_QUEUE_NUM_MAX), 64u);
  // Notifications are ignored until the driver sets the device up again.
  transport_.NotifyQueue(0);
  EXPECT_EQ(log_.processed.size(), 1u);

  // A second initialization starts from clean queue state (indexes back at 0).
  FakeDriver fresh(*memory_, 64, 0x20000, 0x21000, 0x22000);
  mmio_.Initialize(kVersion1, fresh);
  ASSERT_EQ(log_.activations, 2);
  EXPECT_EQ(log_.context.acked_features, kVersion1);
  fresh.Publish(fresh.AddChain({{kData, 4, true}}));
  transport_.NotifyQueue(0);
  EXPECT_EQ(fresh.UsedIdx(), 1);
}

TEST_F(MmioTransportTest, NotifyBeforeDriverOkIsIgnored) {
  mmio_.Negotiate(kVersion1);
  mmio_.SetUpQueue(0, queue0_);
  PublishChain();
  transport_.NotifyQueue(0);
  mmio_.Write32(VIRTIO_MMIO_QUEUE_NOTIFY, 0);
  EXPECT_TRUE(log_.processed.empty());
}

TEST_F(MmioTransportTest, NotifyProcessesQueueAndRaisesUsedInterrupt) {
  mmio_.Initialize(kVersion1, queue0_);
  PublishChain();
  mmio_.Write32(VIRTIO_MMIO_QUEUE_NOTIFY, 0);  // as a guest without ioeventfd
  EXPECT_THAT(log_.processed, ElementsAre(0));
  EXPECT_EQ(queue0_.UsedIdx(), 1);
  EXPECT_EQ(queue0_.Used(0).len, 1u);
  EXPECT_EQ(mmio_.Read32(VIRTIO_MMIO_INTERRUPT_STATUS), uint32_t{VIRTIO_MMIO_INT_VRING});
  EXPECT_EQ(irq_.triggers, 1);

  mmio_.Write32(VIRTIO_MMIO_INTERRUPT_ACK, VIRTIO_MMIO_INT_VRING);
  EXPECT_EQ(mmio_.Read32(VIRTIO_MMIO_INTERRUPT_STATUS), 0u);

  // A notify with nothing new: processed, but no interrupt.
  transport_.NotifyQueue(0);
  EXPECT_EQ(log_.processed.size(), 2u);
  EXPECT_EQ(irq_.triggers, 1);
}

TEST_F(MmioTransportTest, NoInterruptFlagSuppressesInterrupt) {
  mmio_.Initialize(kVersion1, queue0_);
  queue0_.SetAvailFlags(kVringAvailFNoInterrupt);
  PublishChain();
  transport_.NotifyQueue(0);
  EXPECT_EQ(queue0_.UsedIdx(), 1);
  EXPECT_EQ(irq_.triggers, 0);
  EXPECT_EQ(mmio_.Read32(VIRTIO_MMIO_INTERRUPT_STATUS), 0u);
}

TEST_F(MmioTransportTest, NotifyOfUnreadyOrMissingQueueIsIgnored) {
  mmio_.Initialize(kVersion1, queue0_);
  transport_.NotifyQueue(1);
  transport_.NotifyQueue(2);
  transport_.NotifyQueue(0xffff);
  mmio_.Write32(VIRTIO_MMIO_QUEUE_NOTIFY, 0x10000);
  EXPECT_TRUE(log_.processed.empty());
}

TEST_F(MmioTransportTest, BrokenQueueNeedsReset) {
  mmio_.Initialize(kVersion1, queue0_);
  queue0_.SetAvailIdx(1000);
  transport_.NotifyQueue(0);
  EXPECT_NE(Status() & VIRTIO_CONFIG_S_NEEDS_RESET, 0u);
  EXPECT_EQ(mmio_.Read32(VIRTIO_MMIO_INTERRUPT_STATUS), uint32_t{VIRTIO_MMIO_INT_CONFIG});
  EXPECT_EQ(irq_.triggers, 1);
  EXPECT_THAT(transport_.last_error().message(), HasSubstr("ahead"));
  transport_.NotifyQueue(0);
  EXPECT_EQ(log_.processed.size(), 1u);
  // The driver resets and all is well again.
  mmio_.Initialize(kVersion1, queue0_);
  EXPECT_EQ(Status() & VIRTIO_CONFIG_S_NEEDS_RESET, 0u);
  EXPECT_TRUE(transport_.last_error().ok());
}

TEST_F(MmioTransportTest, ConfigSpaceAnyWidth) {
  uint8_t byte = 0;
  transport_.Read(0x100 + 2, absl::MakeSpan(&byte, 1));
  EXPECT_EQ(byte, 3);
  uint16_t half = 0;
  transport_.Read(0x100 + 6, absl::Span<uint8_t>(reinterpret_cast<uint8_t*>(&half), 2));
  EXPECT_EQ(half, 0x0807);
  EXPECT_EQ(mmio_.Read32(0x100), 0x04030201u);
  uint64_t wide = 0;
  transport_.Read(0x100, absl::Span<uint8_t>(reinterpret_cast<uint8_t*>(&wide), 8));
  EXPECT_EQ(wide, 0x0807060504030201u);
  // Straddling the end: the tail reads zero. Beyond it: all zero.
  EXPECT_EQ(mmio_.Read32(0x100 + 6), 0x0807u);
  EXPECT_EQ(mmio_.Read32(0x100 + 8), 0u);
  EXPECT_EQ(mmio_.Read32(0xffc), 0u);

  const uint8_t data[2] = {9, 10};
  transport_.Write(0x104, absl::MakeConstSpan(data, 2));
  ASSERT_EQ(log_.config_writes.size(), 1u);
  EXPECT_EQ(log_.config_writes[0].first, 4u);
  EXPECT_THAT(log_.config_writes[0].second, ElementsAre(9, 10));
}

TEST_F(MmioTransportTest, RegistersNeed32BitAlignedAccesses) {
  uint8_t byte = 0xff;
  transport_.Read(VIRTIO_MMIO_MAGIC_VALUE, absl::MakeSpan(&byte, 1));
  EXPECT_EQ(byte, 0);
  uint64_t wide = ~uint64_t{0};
  transport_.Read(VIRTIO_MMIO_MAGIC_VALUE,
                  absl::Span<uint8_t>(reinterpret_cast<uint8_t*>(&wide), 8));
  EXPECT_EQ(wide, 0u);
  EXPECT_EQ(mmio_.Read32(VIRTIO_MMIO_MAGIC_VALUE + 1), 0u);

  const uint16_t ack = VIRTIO_CONFIG_S_ACKNOWLEDGE;
  transport_.Write(VIRTIO_MMIO_STATUS,
                   absl::Span<const uint8_t>(reinterpret_cast<const uint8_t*>(&ack), 2));
  EXPECT_EQ(Status(), 0u);
  const uint64_t ack64 = VIRTIO_CONFIG_S_ACKNOWLEDGE;
  transport_.Write(VIRTIO_MMIO_STATUS,
                   absl::Span<const uint8_t>(reinterpret_cast<const uint8_t*>(&ack64), 8));
  EXPECT_EQ(Status(), 0u);
  mmio_.Write32(VIRTIO_MMIO_STATUS + 2, VIRTIO_CONFIG_S_ACKNOWLEDGE);
  EXPECT_EQ(Status(), 0u);
}

TEST_F(MmioTransportTest, WriteOnlyAndUnknownRegistersReadZero) {
  mmio_.Negotiate(kVersion1);
  mmio_.SetUpQueue(0, queue0_);
  for (int offset : {VIRTIO_MMIO_DRIVER_FEATURES, VIRTIO_MMIO_QUEUE_NUM, VIRTIO_MMIO_QUEUE_DESC_LOW,
                     VIRTIO_MMIO_QUEUE_NOTIFY, VIRTIO_MMIO_INTERRUPT_ACK,
                     VIRTIO_MMIO_GUEST_PAGE_SIZE, VIRTIO_MMIO_QUEUE_PFN, 0xf0}) {
    EXPECT_EQ(mmio_.Read32(offset), 0u) << offset;
  }
}

}  // namespace
}  // namespace kapsel::vmm::virtio
