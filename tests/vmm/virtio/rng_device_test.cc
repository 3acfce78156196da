#include "vmm/devices/virtio/rng/rng_device.h"

#include <linux/virtio_config.h>
#include <linux/virtio_ids.h>
#include <linux/virtio_mmio.h>

#include <algorithm>
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
using ::kapsel::vmm::virtio::testing::MakeGuestMemory;
using ::kapsel::vmm::virtio::testing::MmioDriver;
using ::kapsel::vmm::virtio::testing::RecordingInterrupt;

constexpr uint64_t kFeatures = (uint64_t{1} << VIRTIO_F_VERSION_1) |
                               (uint64_t{1} << kVirtioRingFIndirectDesc) |
                               (uint64_t{1} << kVirtioRingFEventIdx);

class RngDeviceTest : public ::testing::Test {
 protected:
  RngDeviceTest()
      : memory_(MakeGuestMemory()),
        transport_(std::make_unique<RngDevice>(), memory_.get(),
                   std::make_unique<RecordingInterrupt>(&irq_)),
        mmio_(transport_),
        queue_(*memory_, 64) {}

  void SetUp() override {
    ASSERT_NE(mmio_.Initialize(kFeatures, queue_) & VIRTIO_CONFIG_S_DRIVER_OK, 0u)
        << transport_.last_error();
  }

  std::vector<uint8_t> GuestBytes(GuestAddress at, size_t n) {
    std::vector<uint8_t> out(n);
    EXPECT_TRUE(memory_->Read(at, out.data(), n).ok());
    return out;
  }

  InterruptCount irq_;
  std::unique_ptr<GuestMemory> memory_;
  MmioTransport transport_;
  MmioDriver mmio_;
  FakeDriver queue_;
};

TEST_F(RngDeviceTest, Identity) {
  EXPECT_EQ(mmio_.Read32(VIRTIO_MMIO_DEVICE_ID), uint32_t{VIRTIO_ID_RNG});
  EXPECT_EQ(mmio_.Read32(0x100), 0u);
  EXPECT_EQ(transport_.name(), "virtio-mmio:virtio-rng");
}

TEST_F(RngDeviceTest, FillsWritableBuffers) {
  queue_.Publish(queue_.AddChain({{kData, 100, true}, {kData + 0x1000, 4000, true}}));
  transport_.NotifyQueue(0);
  ASSERT_EQ(queue_.UsedIdx(), 1);
  EXPECT_EQ(queue_.Used(0).len, 4100u);
  // 4000 random bytes are not all zero (probability 2^-32000).
  std::vector<uint8_t> bytes = GuestBytes(kData + 0x1000, 4000);
  EXPECT_TRUE(std::any_of(bytes.begin(), bytes.end(), [](uint8_t b) { return b != 0; }));
  EXPECT_EQ(irq_.triggers, 1);
}

TEST_F(RngDeviceTest, CapsBytesPerRequest) {
  // 128 KiB of buffer, half of it beyond the cap.
  queue_.Publish(queue_.AddChain({{kData, 0x20000, true}}));
  transport_.NotifyQueue(0);
  ASSERT_EQ(queue_.UsedIdx(), 1);
  EXPECT_EQ(queue_.Used(0).len, RngDevice::kMaxBytesPerRequest);
  std::vector<uint8_t> tail = GuestBytes(kData + RngDevice::kMaxBytesPerRequest, 0x10000);
  EXPECT_TRUE(std::all_of(tail.begin(), tail.end(), [](uint8_t b) { return b == 0; }));
}

TEST_F(RngDeviceTest, ReadableOnlyAndMalformedChains) {
  queue_.Publish(queue_.AddChain({{kData, 16, false}}));
  queue_.SetDescriptor(10, kData, 16, kVringDescFWrite | kVringDescFNext, 10);  // loop
  queue_.Publish(10);
  transport_.NotifyQueue(0);
  ASSERT_EQ(queue_.UsedIdx(), 2);
  EXPECT_EQ(queue_.Used(0).len, 0u);
  EXPECT_EQ(queue_.Used(1).len, 0u);
}

}  // namespace
}  // namespace kapsel::vmm::virtio
