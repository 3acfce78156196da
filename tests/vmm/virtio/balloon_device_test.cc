#include "vmm/devices/virtio/balloon/balloon_device.h"

#include <linux/virtio_balloon.h>
#include <linux/virtio_config.h>
#include <linux/virtio_ids.h>
#include <linux/virtio_mmio.h>
#include <sys/stat.h>

#include <memory>
#include <vector>

#include "gtest/gtest.h"
#include "tests/vmm/virtio/virtio_test_util.h"
#include "vmm/devices/virtio/mmio_transport.h"
#include "vmm/devices/virtio/ring_abi.h"

namespace kapsel::vmm::virtio {
namespace {

using ::kapsel::vmm::virtio::testing::FakeDriver;
using ::kapsel::vmm::virtio::testing::InterruptCount;
using ::kapsel::vmm::virtio::testing::kData;
using ::kapsel::vmm::virtio::testing::kUsedRing;
using ::kapsel::vmm::virtio::testing::MakeGuestMemory;
using ::kapsel::vmm::virtio::testing::MmioDriver;
using ::kapsel::vmm::virtio::testing::RecordingInterrupt;

constexpr uint64_t kFeatures = (uint64_t{1} << VIRTIO_F_VERSION_1) |
                               (uint64_t{1} << kVirtioRingFEventIdx) |
                               (uint64_t{1} << VIRTIO_BALLOON_F_REPORTING);
constexpr uint64_t kPage = 4096;

class BalloonDeviceTest : public ::testing::Test {
 protected:
  BalloonDeviceTest()
      : memory_(MakeGuestMemory()),
        device_(new BalloonDevice()),
        transport_(std::unique_ptr<BalloonDevice>(device_), memory_.get(),
                   std::make_unique<RecordingInterrupt>(&irq_)),
        mmio_(transport_),
        reporting_(*memory_, 64) {}

  void SetUp() override {
    const uint32_t status = mmio_.Negotiate(kFeatures);
    mmio_.SetUpQueue(BalloonDevice::kReportingQueue, reporting_);
    mmio_.Write32(VIRTIO_MMIO_STATUS, status | VIRTIO_CONFIG_S_DRIVER_OK);
    ASSERT_NE(mmio_.Read32(VIRTIO_MMIO_STATUS) & VIRTIO_CONFIG_S_DRIVER_OK, 0u)
        << transport_.last_error();
  }

  // Bytes of the guest memory's memfd backed by host memory.
  int64_t AllocatedBytes() {
    struct stat st;
    EXPECT_EQ(fstat(memory_->memfd(), &st), 0);
    return static_cast<int64_t>(st.st_blocks) * 512;
  }
  void Fill(GuestAddress at, uint64_t len, uint8_t value) {
    std::vector<uint8_t> bytes(len, value);
    ASSERT_TRUE(memory_->Write(at, bytes.data(), len).ok());
  }
  bool AllBytesAre(GuestAddress at, uint64_t len, uint8_t value) {
    std::vector<uint8_t> bytes(len);
    EXPECT_TRUE(memory_->Read(at, bytes.data(), len).ok());
    for (uint8_t b : bytes) {
      if (b != value) return false;
    }
    return true;
  }

  InterruptCount irq_;
  std::unique_ptr<GuestMemory> memory_;
  BalloonDevice* device_;  // owned by the transport
  MmioTransport transport_;
  MmioDriver mmio_;
  FakeDriver reporting_;
};

TEST_F(BalloonDeviceTest, IdentityAndConfig) {
  EXPECT_EQ(mmio_.Read32(VIRTIO_MMIO_DEVICE_ID), uint32_t{VIRTIO_ID_BALLOON});
  EXPECT_EQ(mmio_.Read32(0x100), 0u);  // num_pages: the balloon never inflates
  mmio_.Write32(0x104, 7);             // actual
  EXPECT_EQ(mmio_.Read32(0x104), 7u);
  mmio_.Write32(0x100, 99);  // num_pages is the device's
  EXPECT_EQ(mmio_.Read32(0x100), 0u);
}

TEST_F(BalloonDeviceTest, ReportedPagesGoBackToTheHost) {
  Fill(kData, 4 * kPage, 0xab);
  Fill(kUsedRing, kPage, 0);  // the used ring's page, allocated before the count below
  reporting_.Publish(
      reporting_.AddChain({{kData, 2 * kPage, true}, {kData + 3 * kPage, kPage, true}}));
  const int64_t before = AllocatedBytes();
  ASSERT_TRUE(reporting_.TakeNotifyNeeded());
  transport_.NotifyQueue(BalloonDevice::kReportingQueue);
  ASSERT_EQ(reporting_.UsedIdx(), 1);
  EXPECT_EQ(reporting_.Used(0).len, 0u);
  EXPECT_EQ(irq_.triggers, 1);
  EXPECT_EQ(device_->discarded_bytes(), 3 * kPage);
  EXPECT_EQ(AllocatedBytes(), before - static_cast<int64_t>(3 * kPage));
  // Discarded pages read as zeros; the page the guest did not report keeps its contents.
  EXPECT_TRUE(AllBytesAre(kData, 2 * kPage, 0));
  EXPECT_TRUE(AllBytesAre(kData + 2 * kPage, kPage, 0xab));
  EXPECT_TRUE(AllBytesAre(kData + 3 * kPage, kPage, 0));
}

TEST_F(BalloonDeviceTest, HostileReportsDropNothingElse) {
  Fill(kData, 4 * kPage, 0xcd);
  // Unaligned and partial pages, and a device-readable buffer: all returned, nothing discarded.
  reporting_.Publish(reporting_.AddChain({{kData + 1, kPage, true}}));
  reporting_.Publish(reporting_.AddChain({{kData, kPage / 2, true}}));
  reporting_.Publish(reporting_.AddChain({{kData, kPage, false}}));
  ASSERT_TRUE(reporting_.TakeNotifyNeeded());
  transport_.NotifyQueue(BalloonDevice::kReportingQueue);
  EXPECT_EQ(reporting_.UsedIdx(), 3);
  EXPECT_EQ(device_->discarded_bytes(), 0u);
  EXPECT_TRUE(AllBytesAre(kData, 4 * kPage, 0xcd));
}

}  // namespace
}  // namespace kapsel::vmm::virtio
