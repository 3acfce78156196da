#include "vmm/devices/virtio/block/block_device.h"

#include <linux/virtio_blk.h>
#include <linux/virtio_config.h>
#include <linux/virtio_ids.h>
#include <linux/virtio_mmio.h>

#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/vmm/virtio/virtio_test_util.h"
#include "vmm/devices/virtio/mmio_transport.h"
#include "vmm/devices/virtio/ring_abi.h"

namespace kapsel::vmm::virtio {
namespace {

using ::kapsel::vmm::virtio::testing::Buffer;
using ::kapsel::vmm::virtio::testing::FakeDriver;
using ::kapsel::vmm::virtio::testing::InterruptCount;
using ::kapsel::vmm::virtio::testing::kData;
using ::kapsel::vmm::virtio::testing::MakeGuestMemory;
using ::kapsel::vmm::virtio::testing::MmioDriver;
using ::kapsel::vmm::virtio::testing::RecordingInterrupt;
using ::kapsel::vmm::virtio::testing::TempFile;
using ::kapsel::vmm::virtio::testing::UsedElem;
using ::testing::HasSubstr;

constexpr uint64_t kSectors = 64;
constexpr uint64_t kFeatures =
    (uint64_t{1} << VIRTIO_F_VERSION_1) | (uint64_t{1} << kVirtioRingFIndirectDesc) |
    (uint64_t{1} << kVirtioRingFEventIdx) | (uint64_t{1} << VIRTIO_BLK_F_FLUSH);
// Guest buffers.
constexpr GuestAddress kHeader = kData;
constexpr GuestAddress kStatus = kData + 0x100;
constexpr GuestAddress kBuf = kData + 0x1000;  // up to 0x8000 bytes
constexpr uint8_t kUntouched = 0xee;

class BlockDeviceTest : public ::testing::Test {
 protected:
  BlockDeviceTest() : file_(kSectors * 512), memory_(MakeGuestMemory()), queue_(*memory_, 256) {}

  // Opens the image and brings the device up through the MMIO registers.
  void Start(bool read_only = false, std::string serial = "") {
    absl::StatusOr<std::unique_ptr<BlockDevice>> device =
        BlockDevice::Open({file_.path(), read_only, serial});
    ASSERT_TRUE(device.ok()) << device.status();
    device_ = device->get();
    transport_ = std::make_unique<MmioTransport>(std::move(*device), memory_.get(),
                                                 std::make_unique<RecordingInterrupt>(&irq_));
    MmioDriver mmio(*transport_);
    const uint32_t status = mmio.Initialize(kFeatures, queue_);
    ASSERT_NE(status & VIRTIO_CONFIG_S_DRIVER_OK, 0u) << transport_->last_error();
    // Recognisable guest memory.
    ASSERT_TRUE(memory_->Write(kStatus, &kUntouched, 1).ok());
    std::vector<uint8_t> fill(0x8000, kUntouched);
    ASSERT_TRUE(memory_->Write(kBuf, fill.data(), fill.size()).ok());
  }

  void WriteHeader(uint32_t type, uint64_t sector, GuestAddress at = kHeader) {
    struct {
      uint32_t type;
      uint32_t reserved;
      uint64_t sector;
    } header = {type, 0, sector};
    ASSERT_TRUE(memory_->WriteObj(at, header).ok());
  }

  // Publishes a chain, notifies, and returns its used element.
  UsedElem Submit(const std::vector<Buffer>& buffers) {
    queue_.Publish(queue_.AddChain(buffers));
    // EVENT_IDX: the device, having processed everything before, asked for this notification.
    EXPECT_TRUE(queue_.TakeNotifyNeeded());
    transport_->NotifyQueue(0);
    EXPECT_EQ(queue_.UsedIdx(), ++completed_);
    return queue_.Used(static_cast<uint16_t>(completed_ - 1));
  }

  uint8_t StatusByte(GuestAddress at = kStatus) { return memory_->ReadObj<uint8_t>(at).value(); }
  std::vector<uint8_t> GuestBytes(GuestAddress at, size_t n) {
    std::vector<uint8_t> out(n);
    EXPECT_TRUE(memory_->Read(at, out.data(), n).ok());
    return out;
  }
  std::vector<uint8_t> FileBytes(uint64_t offset, size_t n) {
    std::vector<uint8_t> all = file_.Contents();
    return std::vector<uint8_t>(all.begin() + offset, all.begin() + offset + n);
  }
  static std::vector<uint8_t> Pattern(uint64_t offset, size_t n) {
    std::vector<uint8_t> out(n);
    for (size_t i = 0; i < n; ++i) out[i] = TempFile::PatternByte(offset + i);
    return out;
  }

  TempFile file_;
  InterruptCount irq_;
  std::unique_ptr<GuestMemory> memory_;
  FakeDriver queue_;
  BlockDevice* device_ = nullptr;  // owned by transport_
  std::unique_ptr<MmioTransport> transport_;
  uint16_t completed_ = 0;
};

TEST_F(BlockDeviceTest, OpenErrorNamesPath) {
  absl::StatusOr<std::unique_ptr<BlockDevice>> device =
      BlockDevice::Open({"/nonexistent/kapsel-disk.img", false, ""});
  ASSERT_FALSE(device.ok());
  EXPECT_THAT(device.status().message(), HasSubstr("/nonexistent/kapsel-disk.img"));
  EXPECT_EQ(device.status().code(), absl::StatusCode::kNotFound);
}

TEST_F(BlockDeviceTest, RejectsDirectoriesAndLongSerials) {
  EXPECT_FALSE(BlockDevice::Open({"/", true, ""}).ok());
  EXPECT_FALSE(BlockDevice::Open({file_.path(), false, std::string(21, 'x')}).ok());
}

TEST_F(BlockDeviceTest, IdentityFeaturesAndConfig) {
  Start();
  EXPECT_EQ(device_->capacity(), kSectors);
  MmioDriver mmio(*transport_);
  EXPECT_EQ(mmio.Read32(VIRTIO_MMIO_DEVICE_ID), uint32_t{VIRTIO_ID_BLOCK});
  const uint64_t features = mmio.DeviceFeatures();
  EXPECT_NE(features & (uint64_t{1} << VIRTIO_F_VERSION_1), 0u);
  EXPECT_NE(features & (uint64_t{1} << VIRTIO_BLK_F_FLUSH), 0u);
  EXPECT_NE(features & (uint64_t{1} << VIRTIO_BLK_F_SEG_MAX), 0u);
  EXPECT_NE(features & (uint64_t{1} << kVirtioRingFEventIdx), 0u);
  EXPECT_EQ(features & (uint64_t{1} << VIRTIO_BLK_F_RO), 0u);
  uint64_t capacity = 0;
  transport_->Read(0x100 + offsetof(virtio_blk_config, capacity),
                   absl::Span<uint8_t>(reinterpret_cast<uint8_t*>(&capacity), 8));
  EXPECT_EQ(capacity, kSectors);
  EXPECT_EQ(mmio.Read32(0x100 + offsetof(virtio_blk_config, seg_max)), 254u);
  mmio.Write32(VIRTIO_MMIO_QUEUE_SEL, 0);
  EXPECT_EQ(mmio.Read32(VIRTIO_MMIO_QUEUE_NUM_MAX), 256u);
  // Config writes are ignored.
  mmio.Write32(0x100, 0);
  EXPECT_EQ(mmio.Read32(0x100), kSectors);
}

TEST_F(BlockDeviceTest, ReadOnlyOffersRo) {
  Start(/*read_only=*/true);
  MmioDriver mmio(*transport_);
  EXPECT_NE(mmio.DeviceFeatures() & (uint64_t{1} << VIRTIO_BLK_F_RO), 0u);
  EXPECT_TRUE(device_->read_only());
}

TEST_F(BlockDeviceTest, ReadIntoSplitBuffers) {
  Start();
  WriteHeader(VIRTIO_BLK_T_IN, 2);
  UsedElem used = Submit(
      {{kHeader, 16, false}, {kBuf, 512, true}, {kBuf + 0x2000, 512, true}, {kStatus, 1, true}});
  EXPECT_EQ(used.len, 1025u);
  EXPECT_EQ(StatusByte(), VIRTIO_BLK_S_OK);
  EXPECT_EQ(GuestBytes(kBuf, 512), Pattern(1024, 512));
  EXPECT_EQ(GuestBytes(kBuf + 0x2000, 512), Pattern(1536, 512));
  EXPECT_EQ(irq_.triggers, 1);
}

TEST_F(BlockDeviceTest, ReadWithDataAndStatusInOneBuffer) {
  Start();
  WriteHeader(VIRTIO_BLK_T_IN, 0);
  UsedElem used = Submit({{kHeader, 16, false}, {kBuf, 513, true}});
  EXPECT_EQ(used.len, 513u);
  EXPECT_EQ(GuestBytes(kBuf, 512), Pattern(0, 512));
  EXPECT_EQ(StatusByte(kBuf + 512), VIRTIO_BLK_S_OK);
}

TEST_F(BlockDeviceTest, HeaderSplitAcrossDescriptors) {
  Start();
  WriteHeader(VIRTIO_BLK_T_IN, 63);
  // The 16-byte header in pieces of 3, 1 and 12 bytes, from non-adjacent guest addresses.
  ASSERT_TRUE(memory_->Write(kData + 0x200, GuestBytes(kHeader + 3, 1).data(), 1).ok());
  ASSERT_TRUE(memory_->Write(kData + 0x300, GuestBytes(kHeader + 4, 12).data(), 12).ok());
  UsedElem used = Submit({{kHeader, 3, false},
                          {kData + 0x200, 1, false},
                          {kData + 0x300, 12, false},
                          {kBuf, 512, true},
                          {kStatus, 1, true}});
  EXPECT_EQ(used.len, 513u);
  EXPECT_EQ(StatusByte(), VIRTIO_BLK_S_OK);
  EXPECT_EQ(GuestBytes(kBuf, 512), Pattern(63 * 512, 512));
}

TEST_F(BlockDeviceTest, WriteWithHeaderAndDataInOneBuffer) {
  Start();
  WriteHeader(VIRTIO_BLK_T_OUT, 5, kBuf);
  std::vector<uint8_t> data(1024);
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<uint8_t>(i ^ 0x5a);
  ASSERT_TRUE(memory_->Write(kBuf + 16, data.data(), data.size()).ok());
  UsedElem used = Submit({{kBuf, 16 + 1024, false}, {kStatus, 1, true}});
  EXPECT_EQ(used.len, 1u);
  EXPECT_EQ(StatusByte(), VIRTIO_BLK_S_OK);
  EXPECT_EQ(FileBytes(5 * 512, 1024), data);
  EXPECT_EQ(FileBytes(4 * 512, 512), Pattern(4 * 512, 512));
  EXPECT_EQ(FileBytes(7 * 512, 512), Pattern(7 * 512, 512));
}

TEST_F(BlockDeviceTest, WriteThenReadBack) {
  Start();
  std::vector<uint8_t> data(512, 0x42);
  ASSERT_TRUE(memory_->Write(kBuf, data.data(), data.size()).ok());
  WriteHeader(VIRTIO_BLK_T_OUT, 10);
  EXPECT_EQ(Submit({{kHeader, 16, false}, {kBuf, 512, false}, {kStatus, 1, true}}).len, 1u);
  EXPECT_EQ(StatusByte(), VIRTIO_BLK_S_OK);
  WriteHeader(VIRTIO_BLK_T_IN, 10);
  EXPECT_EQ(Submit({{kHeader, 16, false}, {kBuf + 0x1000, 512, true}, {kStatus, 1, true}}).len,
            513u);
  EXPECT_EQ(GuestBytes(kBuf + 0x1000, 512), data);
}

TEST_F(BlockDeviceTest, ReadOnlyRejectsWrites) {
  Start(/*read_only=*/true);
  std::vector<uint8_t> data(512, 0x42);
  ASSERT_TRUE(memory_->Write(kBuf, data.data(), data.size()).ok());
  WriteHeader(VIRTIO_BLK_T_OUT, 0);
  EXPECT_EQ(Submit({{kHeader, 16, false}, {kBuf, 512, false}, {kStatus, 1, true}}).len, 1u);
  EXPECT_EQ(StatusByte(), VIRTIO_BLK_S_IOERR);
  EXPECT_EQ(FileBytes(0, 512), Pattern(0, 512));
  // Reads still work.
  WriteHeader(VIRTIO_BLK_T_IN, 0);
  EXPECT_EQ(Submit({{kHeader, 16, false}, {kBuf, 512, true}, {kStatus, 1, true}}).len, 513u);
  EXPECT_EQ(StatusByte(), VIRTIO_BLK_S_OK);
}

TEST_F(BlockDeviceTest, Flush) {
  Start();
  WriteHeader(VIRTIO_BLK_T_FLUSH, 0);
  EXPECT_EQ(Submit({{kHeader, 16, false}, {kStatus, 1, true}}).len, 1u);
  EXPECT_EQ(StatusByte(), VIRTIO_BLK_S_OK);
}

TEST_F(BlockDeviceTest, GetIdConfiguredSerial) {
  Start(false, "my-disk");
  WriteHeader(VIRTIO_BLK_T_GET_ID, 0);
  EXPECT_EQ(Submit({{kHeader, 16, false}, {kBuf, 20, true}, {kStatus, 1, true}}).len, 21u);
  EXPECT_EQ(StatusByte(), VIRTIO_BLK_S_OK);
  std::vector<uint8_t> expected(20, 0);
  std::memcpy(expected.data(), "my-disk", 7);
  EXPECT_EQ(GuestBytes(kBuf, 20), expected);
}

TEST_F(BlockDeviceTest, GetIdDefaultSerialAndShortBuffer) {
  Start();
  WriteHeader(VIRTIO_BLK_T_GET_ID, 0);
  EXPECT_EQ(Submit({{kHeader, 16, false}, {kBuf, 20, true}, {kStatus, 1, true}}).len, 21u);
  std::vector<uint8_t> id = GuestBytes(kBuf, 20);
  EXPECT_NE(id[0], 0);
  EXPECT_NE(id[0], kUntouched);
  // A 4-byte buffer gets the first 4 bytes.
  EXPECT_EQ(Submit({{kHeader, 16, false}, {kBuf + 0x100, 4, true}, {kStatus, 1, true}}).len, 5u);
  EXPECT_EQ(GuestBytes(kBuf + 0x100, 4), std::vector<uint8_t>(id.begin(), id.begin() + 4));
  EXPECT_EQ(StatusByte(kBuf + 0x104), kUntouched);
}

TEST_F(BlockDeviceTest, UnsupportedType) {
  Start();
  WriteHeader(VIRTIO_BLK_T_DISCARD, 0);
  EXPECT_EQ(Submit({{kHeader, 16, false}, {kBuf, 16, false}, {kStatus, 1, true}}).len, 1u);
  EXPECT_EQ(StatusByte(), VIRTIO_BLK_S_UNSUPP);
  WriteHeader(0xdeadbeef, 0);
  EXPECT_EQ(Submit({{kHeader, 16, false}, {kStatus, 1, true}}).len, 1u);
  EXPECT_EQ(StatusByte(), VIRTIO_BLK_S_UNSUPP);
}

TEST_F(BlockDeviceTest, SectorRangeChecks) {
  Start();
  struct Case {
    uint32_t type;
    uint64_t sector;
    uint32_t bytes;
    uint8_t status;
  };
  const Case cases[] = {
      {VIRTIO_BLK_T_IN, kSectors - 1, 512, VIRTIO_BLK_S_OK},
      {VIRTIO_BLK_T_IN, kSectors - 1, 1024, VIRTIO_BLK_S_IOERR},
      {VIRTIO_BLK_T_IN, kSectors, 512, VIRTIO_BLK_S_IOERR},
      {VIRTIO_BLK_T_IN, kSectors, 0, VIRTIO_BLK_S_OK},
      {VIRTIO_BLK_T_IN, kSectors + 1, 0, VIRTIO_BLK_S_IOERR},
      {VIRTIO_BLK_T_IN, UINT64_MAX, 512, VIRTIO_BLK_S_IOERR},
      {VIRTIO_BLK_T_IN, uint64_t{1} << 55, 512, VIRTIO_BLK_S_IOERR},  // sector * 512 overflows
      {VIRTIO_BLK_T_OUT, kSectors, 512, VIRTIO_BLK_S_IOERR},
      {VIRTIO_BLK_T_OUT, UINT64_MAX - 1, 1024, VIRTIO_BLK_S_IOERR},
  };
  for (const Case& c : cases) {
    WriteHeader(c.type, c.sector);
    std::vector<Buffer> chain = {{kHeader, 16, false}};
    if (c.bytes != 0) chain.push_back({kBuf, c.bytes, c.type == VIRTIO_BLK_T_IN});
    chain.push_back({kStatus, 1, true});
    Submit(chain);
    EXPECT_EQ(StatusByte(), c.status) << c.type << " " << c.sector << " " << c.bytes;
  }
  EXPECT_EQ(file_.Contents(), Pattern(0, kSectors * 512));
}

TEST_F(BlockDeviceTest, DataNotMultipleOfSectorSize) {
  Start();
  WriteHeader(VIRTIO_BLK_T_IN, 0);
  EXPECT_EQ(Submit({{kHeader, 16, false}, {kBuf, 100, true}, {kStatus, 1, true}}).len, 1u);
  EXPECT_EQ(StatusByte(), VIRTIO_BLK_S_IOERR);
  EXPECT_EQ(GuestBytes(kBuf, 100), std::vector<uint8_t>(100, kUntouched));
  WriteHeader(VIRTIO_BLK_T_OUT, 0);
  EXPECT_EQ(Submit({{kHeader, 16, false}, {kBuf, 513, false}, {kStatus, 1, true}}).len, 1u);
  EXPECT_EQ(StatusByte(), VIRTIO_BLK_S_IOERR);
  EXPECT_EQ(FileBytes(0, 1024), Pattern(0, 1024));
}

TEST_F(BlockDeviceTest, HeaderTooShort) {
  Start();
  WriteHeader(VIRTIO_BLK_T_IN, 0);
  EXPECT_EQ(Submit({{kHeader, 15, false}, {kBuf, 512, true}, {kStatus, 1, true}}).len, 1u);
  EXPECT_EQ(StatusByte(), VIRTIO_BLK_S_IOERR);
  EXPECT_EQ(GuestBytes(kBuf, 4), std::vector<uint8_t>(4, kUntouched));
  // No readable part at all.
  EXPECT_EQ(Submit({{kStatus, 1, true}}).len, 1u);
  EXPECT_EQ(StatusByte(), VIRTIO_BLK_S_IOERR);
}

TEST_F(BlockDeviceTest, NoStatusByte) {
  Start();
  WriteHeader(VIRTIO_BLK_T_FLUSH, 0);
  EXPECT_EQ(Submit({{kHeader, 16, false}}).len, 0u);
  WriteHeader(VIRTIO_BLK_T_OUT, 0);
  EXPECT_EQ(Submit({{kHeader, 16, false}, {kBuf, 512, false}}).len, 0u);
  EXPECT_EQ(FileBytes(0, 512), Pattern(0, 512));
}

TEST_F(BlockDeviceTest, MalformedChainReturnedUntouched) {
  Start();
  WriteHeader(VIRTIO_BLK_T_IN, 0);
  // Header -> data -> back to header: a loop.
  queue_.SetDescriptor(0, kHeader, 16, kVringDescFNext, 1);
  queue_.SetDescriptor(1, kBuf, 512, kVringDescFNext | kVringDescFWrite, 0);
  queue_.Publish(0);
  transport_->NotifyQueue(0);
  ASSERT_EQ(queue_.UsedIdx(), 1);
  EXPECT_EQ(queue_.Used(0).id, 0u);
  EXPECT_EQ(queue_.Used(0).len, 0u);
  EXPECT_EQ(GuestBytes(kBuf, 4), std::vector<uint8_t>(4, kUntouched));
  EXPECT_EQ(transport_->status() & VIRTIO_CONFIG_S_NEEDS_RESET, 0u);
}

TEST_F(BlockDeviceTest, IndirectRequest) {
  Start();
  WriteHeader(VIRTIO_BLK_T_IN, 1);
  queue_.Publish(queue_.AddIndirectChain(
      kData + 0x800, {{kHeader, 16, false}, {kBuf, 512, true}, {kStatus, 1, true}}));
  transport_->NotifyQueue(0);
  ASSERT_EQ(queue_.UsedIdx(), 1);
  EXPECT_EQ(queue_.Used(0).len, 513u);
  EXPECT_EQ(StatusByte(), VIRTIO_BLK_S_OK);
  EXPECT_EQ(GuestBytes(kBuf, 512), Pattern(512, 512));
}

TEST_F(BlockDeviceTest, ManyRequestsOneNotify) {
  Start();
  for (uint16_t i = 0; i < 8; ++i) {
    WriteHeader(VIRTIO_BLK_T_IN, i, kData + 0x400 + 16 * i);
    queue_.Publish(queue_.AddChain({{kData + 0x400 + 16 * i, 16, false},
                                    {kBuf + 512 * i, 512, true},
                                    {kData + 0x600 + i, 1, true}}));
  }
  transport_->NotifyQueue(0);
  ASSERT_EQ(queue_.UsedIdx(), 8);
  for (uint16_t i = 0; i < 8; ++i) {
    EXPECT_EQ(queue_.Used(i).len, 513u);
    EXPECT_EQ(StatusByte(kData + 0x600 + i), VIRTIO_BLK_S_OK);
  }
  EXPECT_EQ(GuestBytes(kBuf, 8 * 512), Pattern(0, 8 * 512));
  EXPECT_EQ(irq_.triggers, 1);
}

TEST_F(BlockDeviceTest, UsedEventChoosesWhichCompletionInterrupts) {
  Start();
  queue_.SetUsedEvent(2);  // interrupt once the third request is used
  for (int i = 0; i < 4; ++i) {
    WriteHeader(VIRTIO_BLK_T_IN, 0);
    Submit({{kHeader, 16, false}, {kBuf, 512, true}, {kStatus, 1, true}});
    EXPECT_EQ(irq_.triggers, i < 2 ? 0 : 1) << "after request " << i;
  }
}

TEST(BlockDeviceFdTest, CapacityRoundsDown) {
  TempFile file(1000);
  absl::StatusOr<std::unique_ptr<BlockDevice>> device = BlockDevice::Open({file.path(), true, ""});
  ASSERT_TRUE(device.ok()) << device.status();
  EXPECT_EQ((*device)->capacity(), 1u);
}

}  // namespace
}  // namespace kapsel::vmm::virtio
