#include "vmm/devices/virtio/queue.h"

#include <memory>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/vmm/virtio/virtio_test_util.h"
#include "vmm/devices/virtio/ring_abi.h"

namespace kapsel::vmm::virtio {
namespace {

using ::kapsel::vmm::virtio::testing::FakeDriver;
using ::kapsel::vmm::virtio::testing::kAvailRing;
using ::kapsel::vmm::virtio::testing::kData;
using ::kapsel::vmm::virtio::testing::kDescTable;
using ::kapsel::vmm::virtio::testing::kRamEnd;
using ::kapsel::vmm::virtio::testing::kUsedRing;
using ::kapsel::vmm::virtio::testing::MakeGuestMemory;
using ::kapsel::vmm::virtio::testing::UsedElem;
using ::testing::HasSubstr;

constexpr uint16_t kMax = 256;
constexpr uint64_t kIndirectFeature = uint64_t{1} << kVirtioRingFIndirectDesc;

class QueueTest : public ::testing::Test {
 protected:
  QueueTest() : memory_(MakeGuestMemory()), queue_(kMax), driver_(*memory_, 16) {
    driver_.Configure(queue_);
  }

  // Pops one chain, failing the test if there is none.
  DescriptorChain PopOne() {
    absl::StatusOr<std::optional<DescriptorChain>> popped = queue_.Pop();
    EXPECT_TRUE(popped.ok()) << popped.status();
    if (!popped.ok() || !popped->has_value()) {
      ADD_FAILURE() << "no chain";
      return {};
    }
    return std::move(**popped);
  }

  bool Empty() {
    absl::StatusOr<std::optional<DescriptorChain>> popped = queue_.Pop();
    return popped.ok() && !popped->has_value();
  }

  std::unique_ptr<GuestMemory> memory_;
  Queue queue_;
  FakeDriver driver_;
};

TEST_F(QueueTest, ResetState) {
  Queue queue(64);
  EXPECT_EQ(queue.max_size(), 64);
  EXPECT_EQ(queue.size(), 64);
  EXPECT_FALSE(queue.ready());
  EXPECT_FALSE(queue.active());
  EXPECT_FALSE(queue.broken());
}

TEST_F(QueueTest, ActivateValidatesSize) {
  for (uint16_t bad : {0, 3, 100, 512}) {
    queue_.set_size(bad);
    EXPECT_FALSE(queue_.Activate(memory_.get(), 0).ok()) << bad;
    EXPECT_FALSE(queue_.active());
  }
  for (uint16_t good : {1, 2, 128, 256}) {
    queue_.set_size(good);
    EXPECT_TRUE(queue_.Activate(memory_.get(), 0).ok()) << good;
  }
}

TEST_F(QueueTest, ActivateValidatesAlignment) {
  queue_.set_desc_table(kDescTable + 8);
  EXPECT_THAT(queue_.Activate(memory_.get(), 0).message(), HasSubstr("aligned"));
  queue_.set_desc_table(kDescTable);
  queue_.set_avail_ring(kAvailRing + 1);
  EXPECT_FALSE(queue_.Activate(memory_.get(), 0).ok());
  queue_.set_avail_ring(kAvailRing);
  queue_.set_used_ring(kUsedRing + 2);
  EXPECT_FALSE(queue_.Activate(memory_.get(), 0).ok());
  queue_.set_used_ring(kUsedRing);
  EXPECT_TRUE(queue_.Activate(memory_.get(), 0).ok());
}

TEST_F(QueueTest, ActivateValidatesRingsInsideMemory) {
  // 16 entries: desc 256 bytes, avail 38, used 134.
  queue_.set_desc_table(kRamEnd - 128);
  EXPECT_FALSE(queue_.Activate(memory_.get(), 0).ok());
  queue_.set_desc_table(kDescTable);
  queue_.set_avail_ring(kRamEnd - 36);
  EXPECT_FALSE(queue_.Activate(memory_.get(), 0).ok());
  queue_.set_avail_ring(kRamEnd - 38);
  EXPECT_TRUE(queue_.Activate(memory_.get(), 0).ok());
  queue_.set_used_ring(kRamEnd - 132);
  EXPECT_FALSE(queue_.Activate(memory_.get(), 0).ok());
  queue_.set_used_ring(UINT64_MAX - 3);
  EXPECT_FALSE(queue_.Activate(memory_.get(), 0).ok());
}

TEST_F(QueueTest, PopRequiresActivation) {
  EXPECT_EQ(queue_.Pop().status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_FALSE(queue_.AddUsed(0, 0).ok());
}

TEST_F(QueueTest, PopAndAddUsed) {
  ASSERT_TRUE(queue_.Activate(memory_.get(), 0).ok());
  EXPECT_TRUE(Empty());
  const uint16_t a = driver_.AddChain({{kData, 16, false}, {kData + 16, 4, true}});
  const uint16_t b = driver_.AddChain({{kData + 32, 8, true}});
  driver_.Publish(a);
  driver_.Publish(b);

  DescriptorChain first = PopOne();
  EXPECT_TRUE(first.status.ok());
  EXPECT_EQ(first.head, a);
  EXPECT_EQ(first.descriptors.size(), 2u);
  DescriptorChain second = PopOne();
  EXPECT_EQ(second.head, b);
  EXPECT_TRUE(Empty());

  // Completed out of order.
  ASSERT_TRUE(queue_.AddUsed(b, 8).ok());
  ASSERT_TRUE(queue_.AddUsed(a, 4).ok());
  EXPECT_EQ(driver_.UsedIdx(), 2);
  EXPECT_EQ(queue_.used_idx(), 2);
  UsedElem e0 = driver_.Used(0);
  UsedElem e1 = driver_.Used(1);
  EXPECT_EQ(e0.id, b);
  EXPECT_EQ(e0.len, 8u);
  EXPECT_EQ(e1.id, a);
  EXPECT_EQ(e1.len, 4u);
}

TEST_F(QueueTest, AddUsedRejectsBadHead) {
  ASSERT_TRUE(queue_.Activate(memory_.get(), 0).ok());
  EXPECT_FALSE(queue_.AddUsed(16, 0).ok());
  EXPECT_EQ(driver_.UsedIdx(), 0);
  EXPECT_FALSE(queue_.broken());
}

TEST_F(QueueTest, IndexesWrapAround) {
  ASSERT_TRUE(queue_.Activate(memory_.get(), 0).ok());
  const uint16_t head = driver_.AddChain({{kData, 1, true}});
  for (int i = 0; i < 70000; ++i) {
    driver_.Publish(head);
    DescriptorChain chain = PopOne();
    ASSERT_EQ(chain.head, head);
    ASSERT_TRUE(queue_.AddUsed(chain.head, 1).ok());
    ASSERT_TRUE(Empty());
  }
  EXPECT_EQ(driver_.UsedIdx(), static_cast<uint16_t>(70000));
  EXPECT_FALSE(queue_.broken());
}

TEST_F(QueueTest, FullQueueOfChains) {
  ASSERT_TRUE(queue_.Activate(memory_.get(), 0).ok());
  for (int i = 0; i < 16; ++i) driver_.Publish(driver_.AddChain({{kData, 1, true}}));
  for (int i = 0; i < 16; ++i) EXPECT_EQ(PopOne().head, i);
  EXPECT_TRUE(Empty());
}

TEST_F(QueueTest, AvailIndexJumpingAheadBreaksQueue) {
  ASSERT_TRUE(queue_.Activate(memory_.get(), 0).ok());
  driver_.SetAvailIdx(17);  // 17 > 16 entries pending
  absl::StatusOr<std::optional<DescriptorChain>> popped = queue_.Pop();
  EXPECT_FALSE(popped.ok());
  EXPECT_TRUE(queue_.broken());
  EXPECT_THAT(queue_.error().message(), HasSubstr("ahead"));
  // Stays broken even if the driver fixes the index.
  driver_.SetAvailIdx(1);
  EXPECT_FALSE(queue_.Pop().ok());
  EXPECT_FALSE(queue_.AddUsed(0, 0).ok());
  // Until reset and reactivated.
  queue_.Reset();
  EXPECT_FALSE(queue_.broken());
  EXPECT_TRUE(queue_.error().ok());
}

TEST_F(QueueTest, AvailIndexGoingBackwardsBreaksQueue) {
  ASSERT_TRUE(queue_.Activate(memory_.get(), 0).ok());
  driver_.Publish(driver_.AddChain({{kData, 1, true}}));
  DescriptorChain chain = PopOne();
  driver_.SetAvailIdx(0);  // looks like 65535 new entries
  EXPECT_FALSE(queue_.Pop().ok());
  EXPECT_TRUE(queue_.broken());
}

TEST_F(QueueTest, HeadOutOfRangeBreaksQueue) {
  ASSERT_TRUE(queue_.Activate(memory_.get(), 0).ok());
  driver_.SetAvailEntry(0, 16);
  driver_.SetAvailIdx(1);
  EXPECT_FALSE(queue_.Pop().ok());
  EXPECT_TRUE(queue_.broken());
  EXPECT_THAT(queue_.error().message(), HasSubstr("names descriptor 16"));
}

TEST_F(QueueTest, MalformedChainIsReturnedNotFatal) {
  ASSERT_TRUE(queue_.Activate(memory_.get(), 0).ok());
  driver_.SetDescriptor(0, kData, 16, kVringDescFNext, 0);  // loop
  driver_.Publish(0);
  const uint16_t good = 1;
  driver_.SetDescriptor(good, kData, 16, 0, 0);
  driver_.Publish(good);

  DescriptorChain bad = PopOne();
  EXPECT_EQ(bad.head, 0);
  EXPECT_FALSE(bad.status.ok());
  EXPECT_TRUE(bad.descriptors.empty());
  EXPECT_FALSE(queue_.broken());
  ASSERT_TRUE(queue_.AddUsed(bad.head, 0).ok());
  DescriptorChain next = PopOne();
  EXPECT_TRUE(next.status.ok());
  EXPECT_EQ(next.head, good);
}

TEST_F(QueueTest, IndirectOnlyWhenNegotiated) {
  driver_.SetTableDescriptor(0x8000, 0, kData, 16, 0, 0);
  driver_.SetDescriptor(0, 0x8000, 16, kVringDescFIndirect, 0);
  driver_.Publish(0);
  driver_.Publish(0);
  ASSERT_TRUE(queue_.Activate(memory_.get(), 0).ok());
  EXPECT_FALSE(PopOne().status.ok());
  ASSERT_TRUE(queue_.Activate(memory_.get(), kIndirectFeature).ok());
  EXPECT_TRUE(PopOne().status.ok());
}

TEST_F(QueueTest, UndoPop) {
  ASSERT_TRUE(queue_.Activate(memory_.get(), 0).ok());
  driver_.Publish(driver_.AddChain({{kData, 1, true}}));
  EXPECT_EQ(PopOne().head, 0);
  queue_.UndoPop();
  EXPECT_EQ(PopOne().head, 0);
  EXPECT_TRUE(Empty());
}

TEST_F(QueueTest, InterruptNeededOnlyAfterUsedAndNotSuppressed) {
  ASSERT_TRUE(queue_.Activate(memory_.get(), 0).ok());
  EXPECT_FALSE(queue_.TakeInterruptNeeded());
  driver_.Publish(driver_.AddChain({{kData, 1, true}}));
  driver_.Publish(driver_.AddChain({{kData, 1, true}}));
  ASSERT_TRUE(queue_.AddUsed(PopOne().head, 1).ok());
  EXPECT_TRUE(queue_.TakeInterruptNeeded());
  EXPECT_FALSE(queue_.TakeInterruptNeeded());  // nothing new

  driver_.SetAvailFlags(kVringAvailFNoInterrupt);
  ASSERT_TRUE(queue_.AddUsed(PopOne().head, 1).ok());
  EXPECT_FALSE(queue_.TakeInterruptNeeded());
}

TEST_F(QueueTest, ResetClearsEverything) {
  ASSERT_TRUE(queue_.Activate(memory_.get(), 0).ok());
  driver_.Publish(driver_.AddChain({{kData, 1, true}}));
  ASSERT_TRUE(queue_.AddUsed(PopOne().head, 1).ok());
  queue_.Reset();
  EXPECT_FALSE(queue_.ready());
  EXPECT_FALSE(queue_.active());
  EXPECT_EQ(queue_.size(), kMax);
  EXPECT_EQ(queue_.desc_table(), 0u);
  EXPECT_EQ(queue_.avail_ring(), 0u);
  EXPECT_EQ(queue_.used_ring(), 0u);
  EXPECT_EQ(queue_.last_avail_idx(), 0);
  EXPECT_EQ(queue_.used_idx(), 0);
}

}  // namespace
}  // namespace kapsel::vmm::virtio
