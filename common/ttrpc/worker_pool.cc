#include "common/ttrpc/worker_pool.h"

#include <algorithm>
#include <utility>

namespace kapsel::ttrpc {

WorkerPool::WorkerPool(size_t max_threads) : max_threads_(std::max<size_t>(max_threads, 1)) {}

WorkerPool::~WorkerPool() {
  std::vector<std::thread> threads;
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
    threads.swap(threads_);
  }
  for (std::thread& thread : threads) thread.join();
}

void WorkerPool::Submit(absl::AnyInvocable<void() &&> task) {
  absl::MutexLock lock(&mu_);
  queue_.push_back(std::move(task));
  // Idle workers outnumbering queued tasks will pick this one up.
  if (idle_ >= queue_.size() || threads_.size() >= max_threads_) return;
  threads_.emplace_back([this] { Work(); });
}

void WorkerPool::Work() {
  absl::MutexLock lock(&mu_);
  while (true) {
    ++idle_;
    mu_.Await(absl::Condition(
        +[](WorkerPool* pool) ABSL_EXCLUSIVE_LOCKS_REQUIRED(pool->mu_) {
          return pool->stopping_ || !pool->queue_.empty();
        },
        this));
    --idle_;
    if (queue_.empty()) return;  // stopping, nothing left to run
    absl::AnyInvocable<void()&&> task = std::move(queue_.front());
    queue_.pop_front();
    mu_.Unlock();
    std::move(task)();
    mu_.Lock();
  }
}

}  // namespace kapsel::ttrpc
