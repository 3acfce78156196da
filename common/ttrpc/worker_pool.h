// An elastic pool of worker threads: a task runs on an idle worker, or on a new one while fewer
// than the cap exist, or waits in the queue. A worker idle for `idle_timeout` ends, down to one,
// so a burst of requests does not leave its threads (their stacks, kernel and user) behind.
#ifndef KAPSEL_COMMON_TTRPC_WORKER_POOL_H_
#define KAPSEL_COMMON_TTRPC_WORKER_POOL_H_

#include <cstddef>
#include <deque>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/functional/any_invocable.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace kapsel::ttrpc {

class WorkerPool {
 public:
  explicit WorkerPool(size_t max_threads, absl::Duration idle_timeout = absl::Seconds(10));
  WorkerPool(const WorkerPool&) = delete;
  WorkerPool& operator=(const WorkerPool&) = delete;
  // Runs every queued task, then joins the workers.
  ~WorkerPool();

  void Submit(absl::AnyInvocable<void() &&> task);

  // Workers now, running or idle (not those that ended, whose handles wait to be joined).
  size_t threads();

 private:
  void Work();
  // Joins the workers that ended (outside mu_: they may still be returning).
  void JoinRetired();

  const size_t max_threads_;
  const absl::Duration idle_timeout_;
  absl::Mutex mu_;
  std::deque<absl::AnyInvocable<void() &&>> queue_ ABSL_GUARDED_BY(mu_);
  std::vector<std::thread> threads_ ABSL_GUARDED_BY(mu_);
  // Workers that ended after being idle, each having moved its own handle here, to be joined.
  std::vector<std::thread> retired_ ABSL_GUARDED_BY(mu_);
  size_t idle_ ABSL_GUARDED_BY(mu_) = 0;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace kapsel::ttrpc

#endif  // KAPSEL_COMMON_TTRPC_WORKER_POOL_H_
