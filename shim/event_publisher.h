// Publishes task events to containerd: ttrpc containerd.services.events.ttrpc.v1.Events/Forward
// at $TTRPC_ADDRESS, with the namespace in the call metadata. Events go out in the order they were
// published, from one thread, each retried (with a fresh connection) for a while before it is
// dropped with a log line.
#ifndef KAPSEL_SHIM_EVENT_PUBLISHER_H_
#define KAPSEL_SHIM_EVENT_PUBLISHER_H_

#include <deque>
#include <memory>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/ttrpc/client.h"
#include "google/protobuf/message.h"
#include "shim/api/types.pb.h"

namespace kapsel::shim {

class EventPublisher {
 public:
  // An empty `ttrpc_address` publishes nowhere (events are only logged).
  EventPublisher(std::string ttrpc_address, std::string ns);
  ~EventPublisher();  // Close(seconds(5))

  // Queues `event` under `topic` (e.g. "/tasks/exit"); its Any type URL is its full message name.
  void Publish(const std::string& topic, const google::protobuf::Message& event);
  // Sends what is queued (up to `timeout`), then stops the thread.
  void Close(absl::Duration timeout);

 private:
  void Run();
  absl::Status Send(const containerd::types::Envelope& envelope);

  const std::string address_;
  const std::string namespace_;
  absl::Mutex mu_;
  std::deque<containerd::types::Envelope> queue_ ABSL_GUARDED_BY(mu_);
  bool closing_ ABSL_GUARDED_BY(mu_) = false;
  absl::Time close_deadline_ ABSL_GUARDED_BY(mu_) = absl::InfiniteFuture();
  std::unique_ptr<ttrpc::Client> client_;  // the publisher thread's
  std::thread thread_;
};

}  // namespace kapsel::shim

#endif  // KAPSEL_SHIM_EVENT_PUBLISHER_H_
