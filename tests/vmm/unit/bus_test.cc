// Bus: range registration and dispatch of accesses to the device that covers them.
#include "vmm/devices/bus.h"

#include <cstdint>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace kapsel::vmm {
namespace {

constexpr uint64_t kMax = std::numeric_limits<uint64_t>::max();

struct Access {
  bool write;
  uint64_t offset;
  std::vector<uint8_t> data;
};

// Records accesses; reads return offset + i in byte i.
class RecordingDevice : public BusDevice {
 public:
  explicit RecordingDevice(std::string name) : name_(std::move(name)) {}
  std::string name() const override { return name_; }
  void Read(uint64_t offset, absl::Span<uint8_t> data) override {
    for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<uint8_t>(offset + i);
    accesses.push_back({false, offset, std::vector<uint8_t>(data.begin(), data.end())});
  }
  void Write(uint64_t offset, absl::Span<const uint8_t> data) override {
    accesses.push_back({true, offset, std::vector<uint8_t>(data.begin(), data.end())});
  }

  std::vector<Access> accesses;

 private:
  std::string name_;
};

class BusTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(bus_.Insert(device_, 0x100, 0x10).ok());
    ASSERT_TRUE(bus_.Insert(other_, 0x200, 0x8).ok());
  }
  absl::StatusCode InsertCode(uint64_t base, uint64_t length) {
    return bus_.Insert(std::make_shared<RecordingDevice>("new"), base, length).code();
  }

  Bus bus_{"test"};
  std::shared_ptr<RecordingDevice> device_ = std::make_shared<RecordingDevice>("a");
  std::shared_ptr<RecordingDevice> other_ = std::make_shared<RecordingDevice>("b");
};

TEST_F(BusTest, InsertRejectsOverlaps) {
  EXPECT_EQ(InsertCode(0xf8, 0x10), absl::StatusCode::kAlreadyExists);   // overlaps the start
  EXPECT_EQ(InsertCode(0x10f, 0x10), absl::StatusCode::kAlreadyExists);  // overlaps the end
  EXPECT_EQ(InsertCode(0x104, 0x4), absl::StatusCode::kAlreadyExists);   // inside
  EXPECT_EQ(InsertCode(0x0, 0x1000), absl::StatusCode::kAlreadyExists);  // encloses both
  EXPECT_EQ(InsertCode(0x100, 0x10), absl::StatusCode::kAlreadyExists);  // identical
  EXPECT_EQ(InsertCode(0x100, 0x1), absl::StatusCode::kAlreadyExists);   // same base
  EXPECT_EQ(InsertCode(0x1ff, 0x2), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(InsertCode(0x207, 0x1), absl::StatusCode::kAlreadyExists);
  // Touching but not overlapping is fine.
  EXPECT_TRUE(bus_.Insert(std::make_shared<RecordingDevice>("c"), 0xf0, 0x10).ok());
  EXPECT_TRUE(bus_.Insert(std::make_shared<RecordingDevice>("d"), 0x110, 0xf0).ok());
  EXPECT_TRUE(bus_.Insert(std::make_shared<RecordingDevice>("e"), 0x208, 0x1).ok());
}

TEST_F(BusTest, InsertRejectsEmptyAndWrappingRanges) {
  EXPECT_EQ(InsertCode(0x300, 0), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(InsertCode(kMax - 3, 8), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(InsertCode(kMax, kMax), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(InsertCode(0x1000, kMax), absl::StatusCode::kInvalidArgument);
  // A rejected range registers nothing: the space is still free.
  EXPECT_TRUE(bus_.Insert(std::make_shared<RecordingDevice>("c"), 0x300, 1).ok());
}

TEST_F(BusTest, DispatchUsesOffsetsRelativeToTheBase) {
  uint8_t data[4] = {};
  EXPECT_TRUE(bus_.Read(0x104, absl::MakeSpan(data)));
  EXPECT_EQ(data[0], 4);
  EXPECT_EQ(data[3], 7);
  const uint8_t value[2] = {0xaa, 0xbb};
  EXPECT_TRUE(bus_.Write(0x206, absl::MakeConstSpan(value)));  // the last 2 bytes of b
  uint8_t first[1] = {};
  EXPECT_TRUE(bus_.Read(0x100, absl::MakeSpan(first)));
  uint8_t last[1] = {};
  EXPECT_TRUE(bus_.Read(0x10f, absl::MakeSpan(last)));
  EXPECT_EQ(last[0], 0xf);

  ASSERT_EQ(device_->accesses.size(), 3u);
  EXPECT_FALSE(device_->accesses[0].write);
  EXPECT_EQ(device_->accesses[0].offset, 4u);
  EXPECT_EQ(device_->accesses[0].data.size(), 4u);
  EXPECT_EQ(device_->accesses[1].offset, 0u);
  EXPECT_EQ(device_->accesses[2].offset, 0xfu);
  ASSERT_EQ(other_->accesses.size(), 1u);
  EXPECT_TRUE(other_->accesses[0].write);
  EXPECT_EQ(other_->accesses[0].offset, 6u);
  EXPECT_EQ(other_->accesses[0].data, (std::vector<uint8_t>{0xaa, 0xbb}));
}

TEST_F(BusTest, UnclaimedReadsSeeAllOnes) {
  for (uint64_t addr : {uint64_t{0}, uint64_t{0xff}, uint64_t{0x110}, uint64_t{0x1ff},
                        uint64_t{0x208}, uint64_t{0x10000}, kMax - 3}) {
    uint8_t data[4] = {1, 2, 3, 4};
    EXPECT_FALSE(bus_.Read(addr, absl::MakeSpan(data))) << addr;
    for (uint8_t b : data) EXPECT_EQ(b, 0xff) << addr;
  }
  const uint8_t value[4] = {};
  EXPECT_FALSE(bus_.Write(0x110, absl::MakeConstSpan(value)));
  EXPECT_FALSE(bus_.Write(kMax, absl::MakeConstSpan(value)));
  EXPECT_TRUE(device_->accesses.empty());
  EXPECT_TRUE(other_->accesses.empty());
}

TEST_F(BusTest, AccessStraddlingTheEndOfADeviceIsUnclaimed) {
  uint8_t data[4] = {};
  EXPECT_FALSE(bus_.Read(0x10e, absl::MakeSpan(data)));
  EXPECT_EQ(data[0], 0xff);
  EXPECT_EQ(data[3], 0xff);
  uint8_t wide[8] = {};
  EXPECT_FALSE(bus_.Read(0x201, absl::MakeSpan(wide)));  // [0x201, 0x209): one byte too many
  EXPECT_FALSE(bus_.Write(0x10f, absl::MakeConstSpan(data, 2)));
  // Starting before a device and running into it.
  EXPECT_FALSE(bus_.Write(0xfe, absl::MakeConstSpan(data, 4)));
  EXPECT_TRUE(device_->accesses.empty());
  EXPECT_TRUE(other_->accesses.empty());
}

TEST(BusEdgeTest, AccessesStraddlingTwoAdjacentDevicesAreUnclaimed) {
  Bus bus("io");
  auto a = std::make_shared<RecordingDevice>("a");
  auto b = std::make_shared<RecordingDevice>("b");
  ASSERT_TRUE(bus.Insert(a, 0x60, 4).ok());
  ASSERT_TRUE(bus.Insert(b, 0x64, 4).ok());
  uint8_t data[2] = {};
  EXPECT_FALSE(bus.Read(0x63, absl::MakeSpan(data)));
  EXPECT_TRUE(bus.Read(0x64, absl::MakeSpan(data)));
  EXPECT_TRUE(a->accesses.empty());
  ASSERT_EQ(b->accesses.size(), 1u);
  EXPECT_EQ(b->accesses[0].offset, 0u);
}

TEST(BusEdgeTest, DeviceNearTheTopOfTheAddressSpace) {
  Bus bus("mmio");
  auto a = std::make_shared<RecordingDevice>("top");
  const uint64_t base = kMax - 0xff;
  ASSERT_TRUE(bus.Insert(a, base, 0x10).ok());
  uint8_t data[4] = {};
  EXPECT_TRUE(bus.Read(base + 0xc, absl::MakeSpan(data)));
  EXPECT_FALSE(bus.Read(base + 0xe, absl::MakeSpan(data)));
  EXPECT_FALSE(bus.Read(kMax - 1, absl::MakeSpan(data)));
  ASSERT_EQ(a->accesses.size(), 1u);
  EXPECT_EQ(a->accesses[0].offset, 0xcu);
}

}  // namespace
}  // namespace kapsel::vmm
