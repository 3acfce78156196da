// An elastic pool of worker threads: a task runs on an idle worker, or on a new one while fewer
// than the cap exist, or waits in the queue. Workers stay until the pool is destroyed.
#ifndef KAPSEL_COMMON_TTRPC_WORKER_POOL_H_
#define KAPSEL_COMMON_TTRPC_WORKER_POOL_H_

#include <cstddef>
#include <deque>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/functional/any_invocable.h"
#include "absl/synchronization/mutex.h"

namespace kapsel::ttrpc {

class WorkerPool {
 public:
  explicit WorkerPool(size_t max_threads);
  WorkerPool(const WorkerPool&) = delete;
  WorkerPool& operator=(const WorkerPool&) = delete;
  // Runs every queued task, then joins the workers.
  ~WorkerPool();

  void Submit(absl::AnyInvocable<void() &&> task);

 private:
  void Work();

  const size_t max_threads_;
  absl::Mutex mu_;
  std::deque<absl::AnyInvocable<void() &&>> queue_ ABSL_GUARDED_BY(mu_);
  std::vector<std::thread> threads_ ABSL_GUARDED_BY(mu_);
  size_t idle_ ABSL_GUARDED_BY(mu_) = 0;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace kapsel::ttrpc

#endif  // KAPSEL_COMMON_TTRPC_WORKER_POOL_H_
