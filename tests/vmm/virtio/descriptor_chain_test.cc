#include "vmm/devices/virtio/descriptor_chain.h"

#include <memory>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/vmm/virtio/virtio_test_util.h"
#include "vmm/devices/virtio/ring_abi.h"

namespace kapsel::vmm::virtio {
namespace {

using ::kapsel::vmm::virtio::testing::FakeDriver;
using ::kapsel::vmm::virtio::testing::kData;
using ::kapsel::vmm::virtio::testing::kDescTable;
using ::kapsel::vmm::virtio::testing::kHighRam;
using ::kapsel::vmm::virtio::testing::kHighRamSize;
using ::kapsel::vmm::virtio::testing::kRamEnd;
using ::kapsel::vmm::virtio::testing::MakeGuestMemory;
using ::testing::HasSubstr;

constexpr uint16_t kSize = 8;
constexpr uint16_t N = kVringDescFNext;
constexpr uint16_t W = kVringDescFWrite;
constexpr uint16_t I = kVringDescFIndirect;
constexpr GuestAddress kIndirect = 0x8000;

class DescriptorChainTest : public ::testing::Test {
 protected:
  DescriptorChainTest() : memory_(MakeGuestMemory()), driver_(*memory_, kSize) {}

  absl::Status Parse(uint16_t head, bool indirect = false) {
    return ParseDescriptorChain(*memory_, {kDescTable, kSize, indirect}, head, &chain_);
  }

  std::unique_ptr<GuestMemory> memory_;
  FakeDriver driver_;
  DescriptorChain chain_;
};

TEST_F(DescriptorChainTest, SingleReadable) {
  driver_.SetDescriptor(3, kData, 100, 0, 0);
  ASSERT_TRUE(Parse(3).ok());
  ASSERT_EQ(chain_.descriptors.size(), 1u);
  EXPECT_EQ(chain_.descriptors[0].addr, kData);
  EXPECT_EQ(chain_.descriptors[0].len, 100u);
  EXPECT_FALSE(chain_.descriptors[0].writable);
  EXPECT_EQ(chain_.num_readable, 1u);
  EXPECT_EQ(chain_.readable_bytes, 100u);
  EXPECT_EQ(chain_.writable_bytes, 0u);
}

TEST_F(DescriptorChainTest, ReadableThenWritableFollowsNext) {
  driver_.SetDescriptor(0, kData, 16, N, 5);
  driver_.SetDescriptor(5, kData + 16, 512, N | W, 2);
  driver_.SetDescriptor(2, kData + 1024, 1, W, 7);  // next ignored without NEXT
  ASSERT_TRUE(Parse(0).ok());
  ASSERT_EQ(chain_.descriptors.size(), 3u);
  EXPECT_EQ(chain_.num_readable, 1u);
  EXPECT_EQ(chain_.readable().size(), 1u);
  EXPECT_EQ(chain_.writable().size(), 2u);
  EXPECT_EQ(chain_.readable_bytes, 16u);
  EXPECT_EQ(chain_.writable_bytes, 513u);
  EXPECT_TRUE(chain_.descriptors[2].writable);
  EXPECT_EQ(chain_.descriptors[2].addr, kData + 1024);
}

TEST_F(DescriptorChainTest, ZeroLengthDescriptorsAreDropped) {
  driver_.SetDescriptor(0, 0xdead0000, 0, N, 1);  // address not even checked
  driver_.SetDescriptor(1, kData, 8, 0, 0);
  ASSERT_TRUE(Parse(0).ok());
  ASSERT_EQ(chain_.descriptors.size(), 1u);
  EXPECT_EQ(chain_.descriptors[0].addr, kData);
}

TEST_F(DescriptorChainTest, HeadOutOfRange) {
  absl::Status status = Parse(kSize);
  EXPECT_THAT(status.message(), HasSubstr("out of range"));
  EXPECT_TRUE(chain_.descriptors.empty());
}

TEST_F(DescriptorChainTest, NextOutOfRange) {
  driver_.SetDescriptor(0, kData, 16, N, kSize);
  absl::Status status = Parse(0);
  EXPECT_FALSE(status.ok());
  EXPECT_THAT(status.message(), HasSubstr("out of range"));
  EXPECT_TRUE(chain_.descriptors.empty());
  EXPECT_EQ(chain_.readable_bytes, 0u);
}

TEST_F(DescriptorChainTest, SelfLoop) {
  driver_.SetDescriptor(4, kData, 16, N, 4);
  EXPECT_THAT(Parse(4).message(), HasSubstr("loop"));
}

TEST_F(DescriptorChainTest, LongLoop) {
  for (uint16_t i = 0; i < kSize; ++i) driver_.SetDescriptor(i, kData, 16, N, (i + 1) % kSize);
  EXPECT_THAT(Parse(0).message(), HasSubstr("loop"));
}

TEST_F(DescriptorChainTest, ChainOfExactlyQueueSizeIsFine) {
  for (uint16_t i = 0; i < kSize; ++i) {
    driver_.SetDescriptor(i, kData, 16, i + 1 < kSize ? N : 0, i + 1);
  }
  ASSERT_TRUE(Parse(0).ok());
  EXPECT_EQ(chain_.descriptors.size(), kSize);
}

TEST_F(DescriptorChainTest, BufferInTheHole) {
  driver_.SetDescriptor(0, kRamEnd + 0x1000, 16, 0, 0);
  EXPECT_EQ(Parse(0).code(), absl::StatusCode::kOutOfRange);
}

TEST_F(DescriptorChainTest, BufferStraddlingEndOfRegion) {
  driver_.SetDescriptor(0, kRamEnd - 8, 16, 0, 0);
  EXPECT_FALSE(Parse(0).ok());
  driver_.SetDescriptor(0, kHighRam + kHighRamSize - 8, 16, 0, 0);
  EXPECT_FALSE(Parse(0).ok());
  driver_.SetDescriptor(0, kHighRam + kHighRamSize - 16, 16, 0, 0);
  EXPECT_TRUE(Parse(0).ok());
}

TEST_F(DescriptorChainTest, BufferAddressPlusLengthOverflows) {
  driver_.SetDescriptor(0, UINT64_MAX - 0xf, 0x100, 0, 0);
  EXPECT_FALSE(Parse(0).ok());
  driver_.SetDescriptor(0, UINT64_MAX, UINT32_MAX, W, 0);
  EXPECT_FALSE(Parse(0).ok());
}

TEST_F(DescriptorChainTest, HugeLengthOutsideMemory) {
  driver_.SetDescriptor(0, 0, UINT32_MAX, 0, 0);
  EXPECT_FALSE(Parse(0).ok());
}

TEST_F(DescriptorChainTest, DescriptorTableWrappingAddressSpace) {
  EXPECT_FALSE(ParseDescriptorChain(*memory_, {UINT64_MAX - 0x20, kSize, false}, 0, &chain_).ok());
}

TEST_F(DescriptorChainTest, DescriptorTableOutsideMemory) {
  EXPECT_FALSE(ParseDescriptorChain(*memory_, {kRamEnd, kSize, false}, 0, &chain_).ok());
}

TEST_F(DescriptorChainTest, WritableBeforeReadable) {
  driver_.SetDescriptor(0, kData, 16, N | W, 1);
  driver_.SetDescriptor(1, kData, 16, 0, 0);
  EXPECT_THAT(Parse(0).message(), HasSubstr("follows a writable"));
}

TEST_F(DescriptorChainTest, UnknownFlags) {
  driver_.SetDescriptor(0, kData, 16, 0x8, 0);
  EXPECT_FALSE(Parse(0).ok());
}

TEST(DescriptorChainTotalTest, TotalLengthCapDoesNotOverflow) {
  // 2 GiB of (sparse) guest RAM: two descriptors over all of it sum to 4 GiB > kMaxChainBytes.
  absl::StatusOr<std::unique_ptr<GuestMemory>> memory = GuestMemory::Create({{0, 1ull << 31}});
  ASSERT_TRUE(memory.ok()) << memory.status();
  FakeDriver driver(**memory, 4);
  driver.SetDescriptor(0, 0, 0x80000000u, N, 1);
  driver.SetDescriptor(1, 0, 0x80000000u, 0, 0);
  DescriptorChain chain;
  absl::Status status = ParseDescriptorChain(**memory, {kDescTable, 4, false}, 0, &chain);
  EXPECT_THAT(status.message(), HasSubstr("longer than"));
  // Just under the cap is fine.
  driver.SetDescriptor(1, 0, 0x7fffffffu, 0, 0);
  EXPECT_TRUE(ParseDescriptorChain(**memory, {kDescTable, 4, false}, 0, &chain).ok());
  EXPECT_EQ(chain.readable_bytes, kMaxChainBytes);
}

// --- Indirect descriptors ---

TEST_F(DescriptorChainTest, IndirectTable) {
  driver_.SetTableDescriptor(kIndirect, 0, kData, 16, N, 1);
  driver_.SetTableDescriptor(kIndirect, 1, kData + 0x100, 512, N | W, 2);
  driver_.SetTableDescriptor(kIndirect, 2, kData + 0x400, 1, W, 0);
  driver_.SetDescriptor(6, kIndirect, 48, I, 0);
  ASSERT_TRUE(Parse(6, /*indirect=*/true).ok());
  ASSERT_EQ(chain_.descriptors.size(), 3u);
  EXPECT_EQ(chain_.num_readable, 1u);
  EXPECT_EQ(chain_.writable_bytes, 513u);
}

TEST_F(DescriptorChainTest, IndirectAfterDirectDescriptors) {
  driver_.SetTableDescriptor(kIndirect, 0, kData + 0x100, 8, W, 0);
  driver_.SetDescriptor(0, kData, 16, N, 1);
  driver_.SetDescriptor(1, kIndirect, 16, I, 0);
  ASSERT_TRUE(Parse(0, true).ok());
  ASSERT_EQ(chain_.descriptors.size(), 2u);
  EXPECT_EQ(chain_.num_readable, 1u);
}

TEST_F(DescriptorChainTest, IndirectNotNegotiated) {
  driver_.SetTableDescriptor(kIndirect, 0, kData, 16, 0, 0);
  driver_.SetDescriptor(0, kIndirect, 16, I, 0);
  EXPECT_THAT(Parse(0, /*indirect=*/false).message(), HasSubstr("VIRTIO_RING_F_INDIRECT_DESC"));
}

TEST_F(DescriptorChainTest, NestedIndirect) {
  driver_.SetTableDescriptor(kIndirect, 0, kIndirect + 0x100, 16, I, 0);
  driver_.SetTableDescriptor(kIndirect + 0x100, 0, kData, 16, 0, 0);
  driver_.SetDescriptor(0, kIndirect, 16, I, 0);
  EXPECT_THAT(Parse(0, true).message(), HasSubstr("nested"));
}

TEST_F(DescriptorChainTest, IndirectWithNext) {
  driver_.SetTableDescriptor(kIndirect, 0, kData, 16, 0, 0);
  driver_.SetDescriptor(0, kIndirect, 16, I | N, 1);
  driver_.SetDescriptor(1, kData, 16, 0, 0);
  EXPECT_THAT(Parse(0, true).message(), HasSubstr("NEXT"));
}

TEST_F(DescriptorChainTest, EmptyIndirectTable) {
  driver_.SetDescriptor(0, kIndirect, 0, I, 0);
  EXPECT_FALSE(Parse(0, true).ok());
}

TEST_F(DescriptorChainTest, IndirectTableLengthNotMultipleOf16) {
  driver_.SetTableDescriptor(kIndirect, 0, kData, 16, 0, 0);
  driver_.SetDescriptor(0, kIndirect, 24, I, 0);
  EXPECT_FALSE(Parse(0, true).ok());
  driver_.SetDescriptor(0, kIndirect, 15, I, 0);
  EXPECT_FALSE(Parse(0, true).ok());
}

TEST_F(DescriptorChainTest, IndirectTableTooLarge) {
  driver_.SetTableDescriptor(kIndirect, 0, kData, 16, 0, 0);
  driver_.SetDescriptor(0, kIndirect, 16 * (kMaxIndirectDescriptors + 1), I, 0);
  EXPECT_FALSE(Parse(0, true).ok());
  driver_.SetDescriptor(0, kIndirect, 16 * kMaxIndirectDescriptors, I, 0);
  EXPECT_TRUE(Parse(0, true).ok());
}

TEST_F(DescriptorChainTest, IndirectTableOutsideMemory) {
  driver_.SetDescriptor(0, kRamEnd - 16, 32, I, 0);
  EXPECT_FALSE(Parse(0, true).ok());
  driver_.SetDescriptor(0, UINT64_MAX - 15, 32, I, 0);
  EXPECT_FALSE(Parse(0, true).ok());
}

TEST_F(DescriptorChainTest, IndirectLoop) {
  driver_.SetTableDescriptor(kIndirect, 0, kData, 16, N, 1);
  driver_.SetTableDescriptor(kIndirect, 1, kData, 16, N, 0);
  driver_.SetDescriptor(0, kIndirect, 32, I, 0);
  EXPECT_THAT(Parse(0, true).message(), HasSubstr("loop"));
}

TEST_F(DescriptorChainTest, IndirectNextBeyondTable) {
  // Index 2 exists in memory but not in the 2-entry table.
  driver_.SetTableDescriptor(kIndirect, 0, kData, 16, N, 2);
  driver_.SetTableDescriptor(kIndirect, 2, kData, 16, 0, 0);
  driver_.SetDescriptor(0, kIndirect, 32, I, 0);
  EXPECT_THAT(Parse(0, true).message(), HasSubstr("out of range"));
}

TEST_F(DescriptorChainTest, IndirectWritableBeforeReadable) {
  driver_.SetTableDescriptor(kIndirect, 0, kData, 16, N | W, 1);
  driver_.SetTableDescriptor(kIndirect, 1, kData, 16, 0, 0);
  driver_.SetDescriptor(0, kIndirect, 32, I, 0);
  EXPECT_FALSE(Parse(0, true).ok());
  // And across the direct/indirect boundary.
  driver_.SetTableDescriptor(kIndirect, 0, kData, 16, 0, 0);
  driver_.SetDescriptor(0, kData, 16, N | W, 1);
  driver_.SetDescriptor(1, kIndirect, 16, I, 0);
  EXPECT_FALSE(Parse(0, true).ok());
}

TEST_F(DescriptorChainTest, IndirectTableMayBeLongerThanQueue) {
  for (uint16_t i = 0; i < 64; ++i) {
    driver_.SetTableDescriptor(kIndirect, i, kData, 16, i + 1 < 64 ? N : 0, i + 1);
  }
  driver_.SetDescriptor(0, kIndirect, 64 * 16, I, 0);
  ASSERT_TRUE(Parse(0, true).ok());
  EXPECT_EQ(chain_.descriptors.size(), 64u);
}

}  // namespace
}  // namespace kapsel::vmm::virtio
