// One process of a container as containerd sees it: the init process (exec id "") or an exec.
// Holds its stdio, its state (created → running → stopped), and its exit; Wait blocks without
// holding any lock of the task service.
#ifndef KAPSEL_SHIM_PROCESS_H_
#define KAPSEL_SHIM_PROCESS_H_

#include <cstdint>
#include <memory>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/oci/spec.pb.h"
#include "common/ttrpc/call_context.h"
#include "shim/api/task_types.pb.h"
#include "shim/process_io.h"

namespace kapsel::shim {

class Process {
 public:
  Process(std::string container_id, std::string exec_id, StdioPaths stdio,
          std::unique_ptr<ProcessIo> io)
      : container_id_(std::move(container_id)),
        exec_id_(std::move(exec_id)),
        stdio_(std::move(stdio)),
        io_(std::move(io)) {}
  ~Process();  // joins the exit waiter

  const std::string& container_id() const { return container_id_; }
  const std::string& exec_id() const { return exec_id_; }
  // containerd's name for it in events: the container id for init, else the exec id.
  const std::string& id() const { return exec_id_.empty() ? container_id_ : exec_id_; }
  const StdioPaths& stdio() const { return stdio_; }
  ProcessIo& io() { return *io_; }

  // An exec's process spec (kept between Exec and Start).
  oci::v1::Process exec_spec;

  void SetCreated(uint32_t pid);
  // True for the first caller only: Start runs once per process, even when it fails.
  bool ClaimStart();
  void SetRunning(uint32_t pid);
  void SetPaused(bool paused);
  // The first call wins; wakes every Wait.
  void SetExited(uint32_t exit_status, absl::Time exited_at);

  uint32_t pid();
  containerd::v1::types::Status status();
  bool exited();
  uint32_t exit_status();
  absl::Time exited_at();

  // Blocks until the process exited; false when the call was cancelled first.
  bool Wait(const ttrpc::CallContext& context);

  // The thread waiting for the exit in the guest (started by the task service).
  void StartWaiter(std::function<void()> body);

 private:
  const std::string container_id_;
  const std::string exec_id_;
  const StdioPaths stdio_;
  std::unique_ptr<ProcessIo> io_;
  std::thread waiter_;
  absl::Mutex mu_;
  containerd::v1::types::Status status_ ABSL_GUARDED_BY(mu_) = containerd::v1::types::UNKNOWN;
  uint32_t pid_ ABSL_GUARDED_BY(mu_) = 0;
  bool start_claimed_ ABSL_GUARDED_BY(mu_) = false;
  bool exited_ ABSL_GUARDED_BY(mu_) = false;
  uint32_t exit_status_ ABSL_GUARDED_BY(mu_) = 0;
  absl::Time exited_at_ ABSL_GUARDED_BY(mu_) = absl::UnixEpoch();
};

}  // namespace kapsel::shim

#endif  // KAPSEL_SHIM_PROCESS_H_
