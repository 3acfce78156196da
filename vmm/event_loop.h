// One epoll loop on one thread serves every device's file descriptors: queue-notify ioeventfds,
// backend sockets, the console input. Handlers run on the loop's thread.
#ifndef KAPSEL_VMM_EVENT_LOOP_H_
#define KAPSEL_VMM_EVENT_LOOP_H_

#include <cstdint>
#include <functional>
#include <memory>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "common/unique_fd.h"

namespace kapsel::vmm {

class EventLoop {
 public:
  // Called with the epoll events that fired (EPOLLIN, EPOLLHUP, ...).
  using Handler = std::function<void(uint32_t events)>;

  static absl::StatusOr<std::unique_ptr<EventLoop>> Create();

  // Watches fd for `events`. The fd stays owned by the caller and must outlive its registration.
  absl::Status Add(int fd, uint32_t events, Handler handler);
  // Changes the events a registered fd is watched for (e.g. re-arms an EPOLLONESHOT fd).
  absl::Status Modify(int fd, uint32_t events);
  absl::Status Remove(int fd);

  // Waits up to timeout_ms (-1: forever) and runs the handlers of the fds that are ready.
  absl::Status RunOnce(int timeout_ms);
  // Runs until Stop() is called (from any thread, including a handler).
  absl::Status Run();
  void Stop();

 private:
  EventLoop(UniqueFd epoll, UniqueFd stop) : epoll_(std::move(epoll)), stop_(std::move(stop)) {}

  UniqueFd epoll_;
  UniqueFd stop_;  // eventfd written by Stop()
  absl::Mutex mu_;
  absl::flat_hash_map<int, std::shared_ptr<Handler>> handlers_ ABSL_GUARDED_BY(mu_);
  bool stopped_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace kapsel::vmm

#endif  // KAPSEL_VMM_EVENT_LOOP_H_
