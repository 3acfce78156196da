// A ttrpc server: handlers registered per (service, method), served on a listening socket (accept
// loop) or on already-connected stream sockets.
//
//   Server server;
//   RETURN_IF_ERROR(server.RegisterMethod<EchoRequest, EchoResponse>(
//       "kapsel.Echo", "Echo", [](const EchoRequest& req, const CallContext& ctx)
//           -> absl::StatusOr<EchoResponse> { ... }));
//   ASSIGN_OR_RETURN(UniqueFd listener, ListenUnix("unix:///run/kapsel/agent.sock"));
//   RETURN_IF_ERROR(server.Start(std::move(listener)));
//   ...
//   server.Shutdown();  // also done by the destructor
#ifndef KAPSEL_COMMON_TTRPC_SERVER_H_
#define KAPSEL_COMMON_TTRPC_SERVER_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/ttrpc/call_context.h"
#include "common/ttrpc/handler_registry.h"
#include "common/unique_fd.h"

namespace kapsel::ttrpc {

class ServerConnection;
class WorkerPool;

struct ServerOptions {
  // Handler threads of the whole server; requests beyond wait in a queue. One idle for
  // idle_thread_timeout ends (down to one), so a burst leaves no threads behind.
  size_t max_threads = 256;
  absl::Duration idle_thread_timeout = absl::Seconds(10);
  // Requests of one connection being handled at once; beyond it the connection is not read
  // (back-pressure) until one finishes.
  size_t max_requests_per_connection = 128;
  // Connections at once; more are closed as soon as they are accepted.
  size_t max_connections = 1024;
  // How long writing one response may take; a peer that stops reading for longer loses its
  // connection (so it cannot hold handler threads forever).
  absl::Duration write_timeout = absl::Seconds(30);
};

class Server {
 public:
  explicit Server(ServerOptions options = {});
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;
  ~Server();  // Shutdown()

  // AlreadyExists if (service, method) already has a handler. Handlers may be registered at any
  // time; a call arriving before its handler is Unimplemented.
  absl::Status Register(absl::string_view service, absl::string_view method, RawHandler handler);
  // Typed form: Request and Response are protobuf messages; a payload that does not parse is
  // answered InvalidArgument.
  template <typename Request, typename Response>
  absl::Status RegisterMethod(absl::string_view service, absl::string_view method,
                              TypedHandler<Request, Response> handler) {
    return Register(service, method, MakeRawHandler<Request, Response>(std::move(handler)));
  }

  // Accepts connections on a listening stream socket until Shutdown, then closes it and returns
  // OK; an error if accept fails for good. FailedPrecondition after Shutdown.
  absl::Status Serve(UniqueFd listener);
  // Serve on a thread the server owns; returns at once.
  absl::Status Start(UniqueFd listener);
  // Serves one connected stream socket (Unix, vsock, a socketpair end) on its own reader thread;
  // returns at once. FailedPrecondition after Shutdown.
  absl::Status ServeConnection(UniqueFd connection);

  // Stops accepting, shuts every connection down (clients see the connection close), cancels the
  // calls in flight (CallContext::IsCancelled), waits for running handlers and joins every thread.
  // Afterwards no thread or fd of the server remains. Idempotent; thread-safe.
  void Shutdown();

  // Connections being served (for tests and monitoring).
  size_t connection_count();

 private:
  absl::Status AcceptLoop(int listener);
  // Joins and forgets connections whose peer went away.
  void ReapFinished() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const ServerOptions options_;
  HandlerRegistry registry_;
  UniqueFd wake_fd_;  // eventfd, readable once Shutdown begins: ends the accept loops

  absl::Mutex shutdown_mu_;  // serializes Shutdown calls
  absl::Mutex mu_;
  bool shutting_down_ ABSL_GUARDED_BY(mu_) = false;
  int accept_loops_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t next_connection_id_ ABSL_GUARDED_BY(mu_) = 1;
  std::vector<std::shared_ptr<ServerConnection>> connections_ ABSL_GUARDED_BY(mu_);
  std::vector<std::thread> accept_threads_ ABSL_GUARDED_BY(mu_);
  std::unique_ptr<WorkerPool> pool_;  // set in the constructor, reset by Shutdown
};

}  // namespace kapsel::ttrpc

#endif  // KAPSEL_COMMON_TTRPC_SERVER_H_
