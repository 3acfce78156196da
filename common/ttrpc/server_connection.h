// One connection of a Server: a reader thread decodes frames and hands each request to the worker
// pool; handlers' responses are written under a per-connection lock. Internal to Server.
#ifndef KAPSEL_COMMON_TTRPC_SERVER_CONNECTION_H_
#define KAPSEL_COMMON_TTRPC_SERVER_CONNECTION_H_

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "common/ttrpc/handler_registry.h"
#include "common/ttrpc/request_codec.h"
#include "common/ttrpc/worker_pool.h"
#include "common/unique_fd.h"

namespace kapsel::ttrpc {

class ServerConnection : public std::enable_shared_from_this<ServerConnection> {
 public:
  // `registry` and `pool` must outlive the reader thread (until Join returns) and every task it
  // submitted (the pool's destruction).
  ServerConnection(UniqueFd fd, uint64_t id, const HandlerRegistry* registry, WorkerPool* pool,
                   size_t max_in_flight, absl::Duration write_timeout);
  ServerConnection(const ServerConnection&) = delete;
  ServerConnection& operator=(const ServerConnection&) = delete;
  // The fd closes here: after the reader is joined and the last in-flight call has answered.
  ~ServerConnection();

  void Start();
  // Shuts the socket down (waking the reader) and cancels the calls in flight; does not wait.
  void Close();
  // Waits for the reader thread to end (after Close, or when the peer closes).
  void Join();
  // The reader thread has ended; Join will not block.
  bool finished() const { return finished_.load(std::memory_order_acquire); }
  uint64_t id() const { return id_; }

 private:
  void ReadLoop();
  void Run(InboundRequest request);
  void Send(uint32_t stream_id, absl::string_view response_data);
  void Cancel() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const UniqueFd fd_;
  const uint64_t id_;
  const HandlerRegistry* const registry_;
  WorkerPool* const pool_;
  const size_t max_in_flight_;
  const absl::Duration write_timeout_;
  const std::shared_ptr<absl::Notification> cancelled_;

  absl::Mutex write_mu_;
  absl::Mutex mu_;
  size_t in_flight_ ABSL_GUARDED_BY(mu_) = 0;
  bool closing_ ABSL_GUARDED_BY(mu_) = false;      // no more requests are taken
  bool reader_done_ ABSL_GUARDED_BY(mu_) = false;  // the reader loop has ended

  std::thread reader_;
  std::atomic<bool> finished_{false};
};

}  // namespace kapsel::ttrpc

#endif  // KAPSEL_COMMON_TTRPC_SERVER_CONNECTION_H_
