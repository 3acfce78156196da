// EventLoop: registration, dispatch, removal during a batch, and stopping from another thread.
#include "vmm/event_loop.h"

#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <future>
#include <memory>
#include <thread>
#include <vector>

#include "common/unique_fd.h"
#include "gtest/gtest.h"

namespace kapsel::vmm {
namespace {

UniqueFd MakeEventFd() { return UniqueFd(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)); }

void Signal(const UniqueFd& fd) {
  const uint64_t one = 1;
  ASSERT_EQ(write(fd.get(), &one, sizeof(one)), static_cast<ssize_t>(sizeof(one)));
}

// Reads the counter; 0 when it was not signalled.
uint64_t Drain(int fd) {
  uint64_t value = 0;
  if (read(fd, &value, sizeof(value)) != sizeof(value)) return 0;
  return value;
}

class EventLoopTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto loop = EventLoop::Create();
    ASSERT_TRUE(loop.ok()) << loop.status();
    loop_ = *std::move(loop);
  }
  // Watches fd for EPOLLIN (the test fails if that is refused).
  void Watch(int fd, EventLoop::Handler handler) {
    ASSERT_TRUE(loop_->Add(fd, EPOLLIN, std::move(handler)).ok());
  }
  std::unique_ptr<EventLoop> loop_;
};

TEST_F(EventLoopTest, RunsTheHandlerOfAReadyFd) {
  UniqueFd a = MakeEventFd();
  UniqueFd b = MakeEventFd();
  std::vector<uint32_t> a_events;
  int b_calls = 0;
  Watch(a.get(), [&](uint32_t events) {
    a_events.push_back(events);
    Drain(a.get());
  });
  Watch(b.get(), [&](uint32_t) { ++b_calls; });

  ASSERT_TRUE(loop_->RunOnce(0).ok());
  EXPECT_TRUE(a_events.empty());
  EXPECT_EQ(b_calls, 0);

  Signal(a);
  ASSERT_TRUE(loop_->RunOnce(0).ok());
  ASSERT_EQ(a_events.size(), 1u);
  EXPECT_TRUE(a_events[0] & EPOLLIN);
  EXPECT_EQ(b_calls, 0);

  // Drained by the handler: nothing more to do.
  ASSERT_TRUE(loop_->RunOnce(0).ok());
  EXPECT_EQ(a_events.size(), 1u);
}

TEST_F(EventLoopTest, ReportsHangup) {
  int fds[2];
  ASSERT_EQ(pipe2(fds, O_CLOEXEC | O_NONBLOCK), 0);
  UniqueFd read_end(fds[0]);
  UniqueFd write_end(fds[1]);
  uint32_t seen = 0;
  Watch(read_end.get(), [&](uint32_t events) { seen = events; });
  write_end.reset();
  ASSERT_TRUE(loop_->RunOnce(0).ok());
  EXPECT_TRUE(seen & EPOLLHUP) << seen;
}

TEST_F(EventLoopTest, AddTwiceAndRemoveUnknownFail) {
  UniqueFd a = MakeEventFd();
  ASSERT_TRUE(loop_->Add(a.get(), EPOLLIN, [](uint32_t) {}).ok());
  EXPECT_FALSE(loop_->Add(a.get(), EPOLLIN, [](uint32_t) {}).ok());
  EXPECT_EQ(loop_->Remove(a.get() + 100).code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(loop_->Remove(a.get()).ok());
  EXPECT_EQ(loop_->Remove(a.get()).code(), absl::StatusCode::kNotFound);
  EXPECT_FALSE(loop_->Add(-1, EPOLLIN, [](uint32_t) {}).ok());
}

TEST_F(EventLoopTest, RemovedFdIsNoLongerServed) {
  UniqueFd a = MakeEventFd();
  int calls = 0;
  Watch(a.get(), [&](uint32_t) { ++calls; });
  ASSERT_TRUE(loop_->Remove(a.get()).ok());
  Signal(a);
  ASSERT_TRUE(loop_->RunOnce(0).ok());
  EXPECT_EQ(calls, 0);
  // It can be added again.
  Watch(a.get(), [&](uint32_t) { ++calls; });
  ASSERT_TRUE(loop_->RunOnce(0).ok());
  EXPECT_EQ(calls, 1);
}

TEST_F(EventLoopTest, ModifyRearmsAOneShotFd) {
  UniqueFd a = MakeEventFd();
  int calls = 0;
  ASSERT_TRUE(loop_->Add(a.get(), EPOLLIN | EPOLLONESHOT, [&](uint32_t) { ++calls; }).ok());
  Signal(a);  // stays readable: the handler does not drain it
  ASSERT_TRUE(loop_->RunOnce(0).ok());
  ASSERT_TRUE(loop_->RunOnce(0).ok());
  EXPECT_EQ(calls, 1);  // disarmed after the first event
  ASSERT_TRUE(loop_->Modify(a.get(), EPOLLIN | EPOLLONESHOT).ok());
  ASSERT_TRUE(loop_->RunOnce(0).ok());
  EXPECT_EQ(calls, 2);
  EXPECT_EQ(loop_->Modify(a.get() + 100, EPOLLIN).code(), absl::StatusCode::kNotFound);
}

TEST_F(EventLoopTest, HandlerRemovingAnotherFdOfTheSameBatch) {
  // Both fds are ready in the same epoll_wait; whichever handler runs first removes the other,
  // whose handler must then not run.
  UniqueFd a = MakeEventFd();
  UniqueFd b = MakeEventFd();
  int a_calls = 0;
  int b_calls = 0;
  Watch(a.get(), [&](uint32_t) {
    ++a_calls;
    Drain(a.get());
    EXPECT_TRUE(loop_->Remove(b.get()).ok());
  });
  Watch(b.get(), [&](uint32_t) {
    ++b_calls;
    Drain(b.get());
    EXPECT_TRUE(loop_->Remove(a.get()).ok());
  });
  Signal(a);
  Signal(b);
  ASSERT_TRUE(loop_->RunOnce(0).ok());
  EXPECT_EQ(a_calls + b_calls, 1);
  ASSERT_TRUE(loop_->RunOnce(0).ok());
  EXPECT_EQ(a_calls + b_calls, 1);
}

TEST_F(EventLoopTest, HandlerRemovingItself) {
  // The handler's captures must stay alive while it runs, even though Remove drops it.
  UniqueFd a = MakeEventFd();
  auto counter = std::make_shared<int>(0);
  Watch(a.get(), [this, &a, counter](uint32_t) {
    EXPECT_TRUE(loop_->Remove(a.get()).ok());
    ++*counter;  // still valid after Remove
  });
  Signal(a);
  ASSERT_TRUE(loop_->RunOnce(0).ok());
  EXPECT_EQ(*counter, 1);
  EXPECT_EQ(counter.use_count(), 1);  // the loop dropped its copy
  ASSERT_TRUE(loop_->RunOnce(0).ok());
  EXPECT_EQ(*counter, 1);
}

TEST_F(EventLoopTest, StopBeforeRunReturnsAtOnce) {
  loop_->Stop();
  EXPECT_TRUE(loop_->Run().ok());
}

TEST_F(EventLoopTest, StopFromAHandlerEndsRun) {
  UniqueFd a = MakeEventFd();
  int calls = 0;
  Watch(a.get(), [&](uint32_t) {
    ++calls;
    Drain(a.get());
    loop_->Stop();
  });
  Signal(a);
  EXPECT_TRUE(loop_->Run().ok());
  EXPECT_EQ(calls, 1);
}

TEST_F(EventLoopTest, StopFromAnotherThreadEndsRun) {
  // A handler tells the test that Run() is serving events (so it is or will be blocked in
  // epoll_wait with nothing else to do); then Stop() from this thread must wake it up.
  UniqueFd a = MakeEventFd();
  std::promise<void> serving;
  Watch(a.get(), [&](uint32_t) {
    if (Drain(a.get()) != 0) serving.set_value();
  });
  auto done = std::make_shared<std::promise<absl::Status>>();
  std::future<absl::Status> result = done->get_future();
  EventLoop* loop = loop_.get();
  std::thread runner([loop, done] { done->set_value(loop->Run()); });
  Signal(a);
  serving.get_future().wait();
  loop_->Stop();
  if (result.wait_for(std::chrono::seconds(30)) != std::future_status::ready) {
    // Run() did not return: leak the loop (the thread still uses it) and fail.
    ADD_FAILURE() << "Run() did not return after Stop()";
    runner.detach();
    (void)loop_.release();
    return;
  }
  runner.join();
  EXPECT_TRUE(result.get().ok());
}

}  // namespace
}  // namespace kapsel::vmm
