#include "common/ttrpc/worker_pool.h"

#include <algorithm>
#include <utility>

namespace kapsel::ttrpc {

WorkerPool::WorkerPool(size_t max_threads, absl::Duration idle_timeout)
    : max_threads_(std::max<size_t>(max_threads, 1)), idle_timeout_(idle_timeout) {}

WorkerPool::~WorkerPool() {
  std::vector<std::thread> threads;
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
    threads.swap(threads_);
  }
  for (std::thread& thread : threads) thread.join();
  JoinRetired();
}

void WorkerPool::Submit(absl::AnyInvocable<void() &&> task) {
  {
    absl::MutexLock lock(&mu_);
    queue_.push_back(std::move(task));
    // Idle workers outnumbering queued tasks will pick this one up.
    if (idle_ < queue_.size() && threads_.size() < max_threads_) {
      threads_.emplace_back([this] { Work(); });
    }
  }
  JoinRetired();
}

size_t WorkerPool::threads() {
  absl::MutexLock lock(&mu_);
  return threads_.size();
}

void WorkerPool::JoinRetired() {
  std::vector<std::thread> retired;
  {
    absl::MutexLock lock(&mu_);
    retired.swap(retired_);
  }
  for (std::thread& thread : retired) thread.join();
}

void WorkerPool::Work() {
  absl::MutexLock lock(&mu_);
  auto has_work = +[](WorkerPool* pool) ABSL_EXCLUSIVE_LOCKS_REQUIRED(pool->mu_) {
    return pool->stopping_ || !pool->queue_.empty();
  };
  while (true) {
    ++idle_;
    const bool woken = mu_.AwaitWithTimeout(absl::Condition(has_work, this), idle_timeout_);
    --idle_;
    if (!woken) {
      if (threads_.size() <= 1) continue;  // the last worker stays
      // Idle too long: hand our own handle over to be joined, and end.
      const auto self = std::find_if(threads_.begin(), threads_.end(), [](const std::thread& t) {
        return t.get_id() == std::this_thread::get_id();
      });
      if (self == threads_.end()) continue;  // cannot happen: Submit adds it before we run
      retired_.push_back(std::move(*self));
      threads_.erase(self);
      return;
    }
    if (queue_.empty()) return;  // stopping, nothing left to run
    absl::AnyInvocable<void()&&> task = std::move(queue_.front());
    queue_.pop_front();
    mu_.Unlock();
    std::move(task)();
    mu_.Lock();
  }
}

}  // namespace kapsel::ttrpc
