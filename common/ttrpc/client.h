// A ttrpc client over one connected stream socket (Unix, vsock, a socketpair end). Thread-safe:
// many calls may be in flight at once; a reader thread hands each response to its caller.
//
//   ASSIGN_OR_RETURN(std::unique_ptr<Client> client, Client::Dial("unix:///run/x.sock"));
//   ConnectResponse resp;
//   RETURN_IF_ERROR(client->Call("containerd.task.v2.Task", "Connect", req, &resp,
//                                CallOptions::WithTimeout(absl::Seconds(5))));
#ifndef KAPSEL_COMMON_TTRPC_CLIENT_H_
#define KAPSEL_COMMON_TTRPC_CLIENT_H_

#include <cstdint>
#include <memory>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/ttrpc/call_context.h"
#include "common/unique_fd.h"
#include "google/protobuf/message_lite.h"

namespace kapsel::ttrpc {

struct CallOptions {
  // Sent to the server as timeout_nano; the call fails with DeadlineExceeded when no response came
  // in time (a later response is dropped).
  absl::Duration timeout = absl::InfiniteDuration();
  Metadata metadata;

  static CallOptions WithTimeout(absl::Duration timeout) {
    CallOptions options;
    options.timeout = timeout;
    return options;
  }
};

class Client {
 public:
  // Takes a connected stream socket and starts the reader thread.
  explicit Client(UniqueFd connection);
  // Connects to a Unix socket address (see address.h) and wraps it.
  static absl::StatusOr<std::unique_ptr<Client>> Dial(absl::string_view address);
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;
  // Close(). No call may be running on another thread when the client is destroyed.
  ~Client();

  // Calls service/method with `request`, parsing the answer into `response`. The server's error
  // status comes back with its code and message; Unavailable when the connection is closed or
  // closes before the answer; DeadlineExceeded after options.timeout; ResourceExhausted when the
  // request exceeds kMaxMessageSize (nothing is sent); Internal when the answer does not parse.
  absl::Status Call(absl::string_view service, absl::string_view method,
                    const google::protobuf::MessageLite& request,
                    google::protobuf::MessageLite* response, const CallOptions& options = {});
  // The same on payload bytes.
  absl::StatusOr<std::string> CallRaw(absl::string_view service, absl::string_view method,
                                      absl::string_view payload, const CallOptions& options = {});

  // Shuts the connection down, fails the pending calls with Unavailable and joins the reader.
  // Idempotent.
  void Close();
  // The connection is closed (by Close, by the peer or by an error); calls fail with Unavailable.
  bool closed();

 private:
  struct PendingCall {
    bool done = false;
    absl::StatusOr<std::string> result;
  };

  void ReadLoop();
  // Ends the connection: pending calls fail with `status`.
  void FailAll(const absl::Status& status) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  uint32_t NextStreamId() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const UniqueFd fd_;
  absl::Mutex write_mu_;  // one frame at a time on the socket
  absl::Mutex close_mu_;  // serializes Close
  absl::Mutex mu_;
  uint32_t next_stream_id_ ABSL_GUARDED_BY(mu_) = 1;
  absl::flat_hash_map<uint32_t, PendingCall*> pending_ ABSL_GUARDED_BY(mu_);
  absl::Status closed_status_ ABSL_GUARDED_BY(mu_);  // not OK once the connection is closed
  std::thread reader_;
};

}  // namespace kapsel::ttrpc

#endif  // KAPSEL_COMMON_TTRPC_CLIENT_H_
