#include "vmm/devices/virtio/queue.h"

#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <memory>
#include <thread>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
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

// The driver's side of PublishedWhileAvailEventIsWrittenIsNotLost, run from the SIGSEGV the
// device's avail_event write takes on the write-protected used ring: the driver publishes an
// entry and decides whether to notify before that write lands.
struct AvailEventRace {
  uint16_t* avail_idx = nullptr;
  uint16_t* avail_event = nullptr;
  void* used_page = nullptr;
  size_t page_size = 0;
  bool fired = false;
  bool notify_needed = false;
};
AvailEventRace race;

void PublishDuringAvailEventWrite(int, siginfo_t* info, void*) {
  if (info->si_addr != race.avail_event) {
    signal(SIGSEGV, SIG_DFL);  // not ours: crash on the retry
    return;
  }
  const uint16_t old = __atomic_load_n(race.avail_idx, __ATOMIC_RELAXED);
  const uint16_t now = static_cast<uint16_t>(old + 1);
  __atomic_store_n(race.avail_idx, now, __ATOMIC_RELEASE);
  std::atomic_thread_fence(std::memory_order_seq_cst);
  const uint16_t event = __atomic_load_n(race.avail_event, __ATOMIC_RELAXED);
  race.notify_needed = static_cast<uint16_t>(now - event - 1) < static_cast<uint16_t>(now - old);
  race.fired = true;
  mprotect(race.used_page, race.page_size, PROT_READ | PROT_WRITE);
}

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

// VIRTIO_RING_F_EVENT_IDX.

constexpr uint64_t kEventIdxFeature = uint64_t{1} << kVirtioRingFEventIdx;

TEST_F(QueueTest, WithoutEventIdxUsedEventIsIgnoredAndAvailEventNotWritten) {
  driver_.SetAvailEvent(0xabcd);
  driver_.SetUsedEvent(100);  // would suppress the interrupts below under EVENT_IDX
  ASSERT_TRUE(queue_.Activate(memory_.get(), 0).ok());
  EXPECT_TRUE(Empty());
  for (int i = 0; i < 3; ++i) {
    driver_.Publish(driver_.AddChain({{kData, 1, true}}));
    ASSERT_TRUE(queue_.AddUsed(PopOne().head, 1).ok());
    EXPECT_TRUE(Empty());
    EXPECT_TRUE(queue_.TakeInterruptNeeded()) << i;
  }
  EXPECT_EQ(driver_.AvailEvent(), 0xabcd);
}

TEST_F(QueueTest, EventIdxIgnoresNoInterruptFlag) {
  ASSERT_TRUE(queue_.Activate(memory_.get(), kEventIdxFeature).ok());
  driver_.SetAvailFlags(kVringAvailFNoInterrupt);
  driver_.SetUsedEvent(0);
  driver_.Publish(driver_.AddChain({{kData, 1, true}}));
  ASSERT_TRUE(queue_.AddUsed(PopOne().head, 1).ok());
  EXPECT_TRUE(queue_.TakeInterruptNeeded());
}

TEST_F(QueueTest, UsedEventSuppressesInterruptsUntilReached) {
  ASSERT_TRUE(queue_.Activate(memory_.get(), kEventIdxFeature).ok());
  driver_.SetUsedEvent(2);  // interrupt when used idx goes past 2, i.e. at the third element
  for (int i = 0; i < 4; ++i) driver_.Publish(driver_.AddChain({{kData, 1, true}}));
  ASSERT_TRUE(queue_.AddUsed(PopOne().head, 1).ok());
  EXPECT_FALSE(queue_.TakeInterruptNeeded());  // used idx 1
  ASSERT_TRUE(queue_.AddUsed(PopOne().head, 1).ok());
  EXPECT_FALSE(queue_.TakeInterruptNeeded());  // 2
  ASSERT_TRUE(queue_.AddUsed(PopOne().head, 1).ok());
  EXPECT_TRUE(queue_.TakeInterruptNeeded());  // 3: element 2 was published
  ASSERT_TRUE(queue_.AddUsed(PopOne().head, 1).ok());
  EXPECT_FALSE(queue_.TakeInterruptNeeded());  // 4: used_event already passed
  EXPECT_FALSE(queue_.TakeInterruptNeeded());  // nothing new
}

TEST_F(QueueTest, UsedEventPassedWithinABatchRaisesOneInterrupt) {
  ASSERT_TRUE(queue_.Activate(memory_.get(), kEventIdxFeature).ok());
  driver_.SetUsedEvent(1);
  for (int i = 0; i < 3; ++i) driver_.Publish(driver_.AddChain({{kData, 1, true}}));
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(queue_.AddUsed(PopOne().head, 1).ok());
  EXPECT_TRUE(queue_.TakeInterruptNeeded());  // 0..2 published, used_event 1 among them
  driver_.SetUsedEvent(0);                    // behind: the driver does not want one
  driver_.Publish(driver_.AddChain({{kData, 1, true}}));
  ASSERT_TRUE(queue_.AddUsed(PopOne().head, 1).ok());
  EXPECT_FALSE(queue_.TakeInterruptNeeded());
}

TEST_F(QueueTest, UsedEventAcrossIndexWraparound) {
  ASSERT_TRUE(queue_.Activate(memory_.get(), kEventIdxFeature).ok());
  const uint16_t head = driver_.AddChain({{kData, 1, true}});
  // Runs the used index up to 65534, the driver asking for an interrupt at every element.
  auto run_to_65534 = [&] {
    while (queue_.used_idx() != 65534) {
      driver_.SetUsedEvent(queue_.used_idx());
      driver_.Publish(head);
      ASSERT_TRUE(queue_.AddUsed(PopOne().head, 1).ok());
      ASSERT_TRUE(queue_.TakeInterruptNeeded()) << queue_.used_idx();
    }
  };
  run_to_65534();
  // One at a time: element 1 (after the wrap) is the one the driver waits for.
  driver_.SetUsedEvent(1);
  for (int i = 0; i < 3; ++i) {
    driver_.Publish(head);
    ASSERT_TRUE(queue_.AddUsed(PopOne().head, 1).ok());
    EXPECT_FALSE(queue_.TakeInterruptNeeded()) << "used idx " << queue_.used_idx();
  }
  EXPECT_EQ(queue_.used_idx(), 1);
  driver_.Publish(head);
  ASSERT_TRUE(queue_.AddUsed(PopOne().head, 1).ok());
  EXPECT_TRUE(queue_.TakeInterruptNeeded());  // used idx 2: element 1 published

  // One batch across the wrap (elements 65534, 65535, 0) passes used_event 65535.
  run_to_65534();
  driver_.SetUsedEvent(65535);
  for (int i = 0; i < 3; ++i) driver_.Publish(head);
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(queue_.AddUsed(PopOne().head, 1).ok());
  EXPECT_EQ(queue_.used_idx(), 1);
  EXPECT_TRUE(queue_.TakeInterruptNeeded());
}

TEST_F(QueueTest, AvailEventWrittenWhenEmptySoKicksWaitUntilPassed) {
  driver_.SetAvailEvent(0xabcd);  // left over in the ring's memory: activation resets it
  ASSERT_TRUE(queue_.Activate(memory_.get(), kEventIdxFeature).ok());
  EXPECT_EQ(driver_.AvailEvent(), 0);
  EXPECT_TRUE(Empty());
  EXPECT_EQ(driver_.AvailEvent(), 0);

  uint16_t old = driver_.avail_idx();
  driver_.Publish(driver_.AddChain({{kData, 1, true}}));
  EXPECT_TRUE(driver_.NotifyNeeded(old));  // the first entry after an empty ring
  old = driver_.avail_idx();
  driver_.Publish(driver_.AddChain({{kData, 1, true}}));
  EXPECT_FALSE(driver_.NotifyNeeded(old));  // the device has not caught up yet

  // The device takes what it finds without asking for kicks, and asks once it finds nothing.
  PopOne();
  EXPECT_EQ(driver_.AvailEvent(), 0);
  PopOne();
  EXPECT_EQ(driver_.AvailEvent(), 0);
  EXPECT_TRUE(Empty());
  EXPECT_EQ(driver_.AvailEvent(), 2);
  old = driver_.avail_idx();
  driver_.Publish(driver_.AddChain({{kData, 1, true}}));
  driver_.Publish(driver_.AddChain({{kData, 1, true}}));
  EXPECT_TRUE(driver_.NotifyNeeded(old));  // entry 2 is among the two published
}

TEST_F(QueueTest, AvailEventAcrossIndexWraparound) {
  ASSERT_TRUE(queue_.Activate(memory_.get(), kEventIdxFeature).ok());
  const uint16_t head = driver_.AddChain({{kData, 1, true}});
  for (int i = 0; i < 65535; ++i) {
    const uint16_t old = driver_.avail_idx();
    driver_.Publish(head);
    ASSERT_TRUE(driver_.NotifyNeeded(old)) << i;
    ASSERT_TRUE(queue_.AddUsed(PopOne().head, 1).ok());
    ASSERT_TRUE(Empty());
  }
  EXPECT_EQ(driver_.AvailEvent(), 65535);
  const uint16_t old = driver_.avail_idx();
  driver_.Publish(head);  // 65535 -> 0
  EXPECT_TRUE(driver_.NotifyNeeded(old));
  EXPECT_EQ(PopOne().head, head);
  EXPECT_TRUE(Empty());
  EXPECT_EQ(driver_.AvailEvent(), 0);
}

TEST_F(QueueTest, NotifyOnNextAvailAsksForTheNextEntryWhilePending) {
  ASSERT_TRUE(queue_.Activate(memory_.get(), kEventIdxFeature).ok());
  driver_.Publish(driver_.AddChain({{kData, 1, true}}));
  driver_.Publish(driver_.AddChain({{kData, 1, true}}));
  PopOne();
  queue_.UndoPop();  // the device stops with both pending
  queue_.NotifyOnNextAvail();
  EXPECT_EQ(driver_.AvailEvent(), 2);
  const uint16_t old = driver_.avail_idx();
  driver_.Publish(driver_.AddChain({{kData, 1, true}}));
  EXPECT_TRUE(driver_.NotifyNeeded(old));
  EXPECT_EQ(PopOne().head, 0);  // and nothing was lost
}

// A driver thread publishes entries one at a time and notifies only when avail_event asks for it
// (with the fences of 2.7.10); the device thread, on each notification, pops until Pop finds
// nothing. Were the driver's entry published between the device's last look at the ring and its
// avail_event write lost, the device would wait for a notification that never comes while the
// driver waits for used entries: the wait times out.
TEST_F(QueueTest, EventIdxLosesNoNotificationToAConcurrentDriver) {
  ASSERT_TRUE(queue_.Activate(memory_.get(), kEventIdxFeature).ok());
  const uint16_t head = driver_.AddChain({{kData, 1, true}});
  for (uint16_t slot = 0; slot < driver_.size(); ++slot) driver_.SetAvailEntry(slot, head);
  auto host16 = [&](GuestAddress addr) {
    absl::StatusOr<uint8_t*> host = memory_->Translate(addr, 2);
    EXPECT_TRUE(host.ok());
    return reinterpret_cast<uint16_t*>(*host);
  };
  uint16_t* const avail_idx = host16(kAvailRing + 2);
  uint16_t* const used_idx = host16(kUsedRing + 2);
  uint16_t* const avail_event = host16(kUsedRing + 4 + 8 * uint64_t{driver_.size()});

  constexpr int kEntries = 50000;
  absl::Mutex mu;
  int notifications = 0;  // guarded by mu
  std::atomic<bool> stop{false};
  std::thread driver([&] {
    uint16_t idx = 0;
    for (int i = 0; i < kEntries; ++i) {
      // One entry in flight: the driver publishes the next as soon as it sees the last used,
      // which is when the device looks at the ring again and finds it empty.
      while (__atomic_load_n(used_idx, __ATOMIC_ACQUIRE) != idx) {
        if (stop.load()) return;
        std::this_thread::yield();
      }
      const uint16_t old = idx++;
      __atomic_store_n(avail_idx, idx, __ATOMIC_RELEASE);
      std::atomic_thread_fence(std::memory_order_seq_cst);
      const uint16_t event = __atomic_load_n(avail_event, __ATOMIC_RELAXED);
      if (static_cast<uint16_t>(idx - event - 1) < static_cast<uint16_t>(idx - old)) {
        absl::MutexLock lock(&mu);
        ++notifications;
      }
    }
  });
  int processed = 0;
  int waits = 0;
  bool lost = false;
  while (processed < kEntries && !lost) {
    {
      absl::MutexLock lock(&mu);
      lost = !mu.AwaitWithTimeout(absl::Condition(
                                      +[](int* n) { return *n > 0; }, &notifications),
                                  absl::Seconds(10));
      notifications = 0;
    }
    ++waits;
    while (!lost) {
      absl::StatusOr<std::optional<DescriptorChain>> popped = queue_.Pop();
      ASSERT_TRUE(popped.ok()) << popped.status();
      if (!popped->has_value()) break;
      ASSERT_TRUE(queue_.AddUsed((*popped)->head, 1).ok());
      ++processed;
    }
  }
  stop.store(true);
  driver.join();
  EXPECT_FALSE(lost) << "no notification after " << processed << " entries, " << waits
                     << " waits; avail_event " << driver_.AvailEvent() << ", avail idx "
                     << __atomic_load_n(avail_idx, __ATOMIC_RELAXED);
  EXPECT_EQ(processed, kEntries);
}

// The interleaving the re-check is for, made deterministic: the device finds the ring empty, the
// driver publishes and reads the old avail_event (so does not notify), then the device's
// avail_event write lands. Pop must still return the entry rather than report an empty ring.
TEST_F(QueueTest, PublishedWhileAvailEventIsWrittenIsNotLost) {
  ASSERT_TRUE(queue_.Activate(memory_.get(), kEventIdxFeature).ok());
  driver_.Publish(driver_.AddChain({{kData, 1, true}}));
  ASSERT_TRUE(queue_.AddUsed(PopOne().head, 1).ok());  // avail_event still 0 from activation
  const uint16_t next = driver_.AddChain({{kData + 16, 1, true}});
  driver_.SetAvailEntry(driver_.avail_idx() % driver_.size(), next);  // written, not published

  race = {};
  race.page_size = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  race.avail_idx = reinterpret_cast<uint16_t*>(*memory_->Translate(kAvailRing + 2, 2));
  race.avail_event = reinterpret_cast<uint16_t*>(
      *memory_->Translate(kUsedRing + 4 + 8 * uint64_t{driver_.size()}, 2));
  race.used_page = *memory_->Translate(kUsedRing & ~(race.page_size - 1), race.page_size);
  struct sigaction action = {}, previous = {};
  action.sa_sigaction = PublishDuringAvailEventWrite;
  action.sa_flags = SA_SIGINFO;
  ASSERT_EQ(sigaction(SIGSEGV, &action, &previous), 0);
  ASSERT_EQ(mprotect(race.used_page, race.page_size, PROT_READ), 0);
  absl::StatusOr<std::optional<DescriptorChain>> popped = queue_.Pop();
  mprotect(race.used_page, race.page_size, PROT_READ | PROT_WRITE);
  sigaction(SIGSEGV, &previous, nullptr);

  ASSERT_TRUE(race.fired);
  EXPECT_FALSE(race.notify_needed);  // the driver saw the old avail_event
  ASSERT_TRUE(popped.ok()) << popped.status();
  ASSERT_TRUE(popped->has_value()) << "the entry published during the avail_event write was lost";
  EXPECT_EQ((*popped)->head, next);
  EXPECT_TRUE(Empty());
  EXPECT_EQ(driver_.AvailEvent(), 2);
}

}  // namespace
}  // namespace kapsel::vmm::virtio
