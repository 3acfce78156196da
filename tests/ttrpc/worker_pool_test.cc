#include "common/ttrpc/worker_pool.h"

#include <atomic>
#include <memory>

#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"

namespace kapsel::ttrpc {
namespace {

// Polls `pool` until it has `want` workers, for at most 10 s; the count it ended with.
size_t WaitForThreads(WorkerPool& pool, size_t want) {
  const absl::Time until = absl::Now() + absl::Seconds(10);
  while (pool.threads() != want && absl::Now() < until) absl::SleepFor(absl::Milliseconds(5));
  return pool.threads();
}

// A burst grows the pool to one worker per concurrent task; once idle, the workers end down to
// one, which still runs what comes next.
TEST(WorkerPoolTest, IdleWorkersEndAfterABurst) {
  WorkerPool pool(/*max_threads=*/8, /*idle_timeout=*/absl::Milliseconds(50));
  absl::Notification release;
  std::atomic<int> running{0};
  for (int i = 0; i < 6; ++i) {
    pool.Submit([&] {
      ++running;
      release.WaitForNotification();
    });
  }
  const absl::Time until = absl::Now() + absl::Seconds(10);
  while (running < 6 && absl::Now() < until) absl::SleepFor(absl::Milliseconds(1));
  ASSERT_EQ(running, 6);
  EXPECT_EQ(pool.threads(), 6u);
  release.Notify();
  EXPECT_EQ(WaitForThreads(pool, 1), 1u);

  absl::Notification ran;
  pool.Submit([&] { ran.Notify(); });
  EXPECT_TRUE(ran.WaitForNotificationWithTimeout(absl::Seconds(10)));
  EXPECT_EQ(pool.threads(), 1u);
}

// The cap still holds: tasks beyond it wait for a worker instead of getting a thread.
TEST(WorkerPoolTest, NeverMoreWorkersThanTheCap) {
  WorkerPool pool(/*max_threads=*/3, absl::Milliseconds(50));
  absl::Notification release;
  std::atomic<int> done{0};
  for (int i = 0; i < 10; ++i) {
    pool.Submit([&] {
      release.WaitForNotification();
      ++done;
    });
  }
  absl::SleepFor(absl::Milliseconds(20));
  EXPECT_EQ(pool.threads(), 3u);
  release.Notify();
  const absl::Time until = absl::Now() + absl::Seconds(10);
  while (done < 10 && absl::Now() < until) absl::SleepFor(absl::Milliseconds(1));
  EXPECT_EQ(done, 10);
}

// Destroying the pool while workers are ending: every thread is joined exactly once (the
// sanitizer build and a crash would say otherwise), queued tasks still run.
TEST(WorkerPoolTest, DestructionRacesWithWorkersEnding) {
  for (int round = 0; round < 200; ++round) {
    std::atomic<int> done{0};
    {
      WorkerPool pool(/*max_threads=*/4, absl::Microseconds(100 + round % 7 * 150));
      for (int i = 0; i < 4; ++i) pool.Submit([&] { ++done; });
      absl::SleepFor(absl::Microseconds(round % 11 * 100));
    }
    ASSERT_EQ(done, 4) << "round " << round;
  }
}

}  // namespace
}  // namespace kapsel::ttrpc
