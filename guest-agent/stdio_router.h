// Serves the agent's stdio listener: each connection starts with a length-delimited StdioHello
// (agent.proto) naming a process and a stream, then carries that stream's raw bytes. Output is
// spliced from the process's pipe to the connection (no copy through user memory, memory bounded
// by the pipe), input the other way; a terminal is copied both ways. An output connection is
// closed after the process's last byte, so EOF means everything was delivered.
#ifndef KAPSEL_GUEST_AGENT_STDIO_ROUTER_H_
#define KAPSEL_GUEST_AGENT_STDIO_ROUTER_H_

#include <atomic>
#include <memory>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "common/unique_fd.h"
#include "guest-agent/process_table.h"

namespace kapsel::agent {

class StdioRouter {
 public:
  explicit StdioRouter(ProcessTable* processes) : processes_(processes) {}
  ~StdioRouter();  // Shutdown()

  // Accepts connections on `listener` on a thread of its own.
  absl::Status Start(UniqueFd listener);
  // Attaches one connection (already accepted); returns once it is being served or refused.
  void HandleConnection(UniqueFd connection);
  // Stops accepting, cuts every stream and joins every thread.
  void Shutdown();

 private:
  void AcceptLoop();
  void Spawn(std::function<void()> work, std::vector<int> fds_to_cut);

  ProcessTable* processes_;
  UniqueFd listener_;
  UniqueFd wake_fd_;  // an eventfd: written by Shutdown to wake the accept loop
  std::thread accept_thread_;
  absl::Mutex mu_;
  bool shutting_down_ ABSL_GUARDED_BY(mu_) = false;
  struct Worker {
    std::thread thread;
    std::shared_ptr<std::atomic<bool>> done;
  };
  // Copier threads; finished ones are joined when the next starts, the rest on Shutdown.
  std::vector<Worker> workers_ ABSL_GUARDED_BY(mu_);
  std::vector<int> live_fds_ ABSL_GUARDED_BY(mu_);  // connections to shut down on Shutdown
};

}  // namespace kapsel::agent

#endif  // KAPSEL_GUEST_AGENT_STDIO_ROUTER_H_
