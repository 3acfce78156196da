// containerd.task.v2.Task, the API containerd drives a shim with, mapped onto one sandbox (a
// microVM) holding one container, or several for a pod. Each RPC turns into agent calls; process
// exits come from one waiter thread per process (agent WaitProcess) and are published as events
// only after the process's output reached containerd.
#ifndef KAPSEL_SHIM_TASK_SERVICE_H_
#define KAPSEL_SHIM_TASK_SERVICE_H_

#include <map>
#include <memory>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "common/oci/spec.pb.h"
#include "common/ttrpc/server.h"
#include "google/protobuf/map.h"
#include "shim/api/task.pb.h"
#include "shim/config.h"
#include "shim/event_publisher.h"
#include "shim/guest_spec.h"
#include "shim/process.h"
#include "shim/sandbox.h"

namespace kapsel::shim {

struct ShimIdentity {
  std::string ns;          // containerd namespace
  std::string sandbox_id;  // the sandbox (VM) this shim serves: the pod or the container id
};

class TaskService {
 public:
  TaskService(Config config, ShimIdentity identity, EventPublisher* events);
  ~TaskService();  // ShutdownNow()

  absl::Status Register(ttrpc::Server& server);

  // Notified when containerd's Shutdown asked the shim to exit (no containers left).
  absl::Notification& shutdown_requested() { return shutdown_requested_; }
  // Stops every process's I/O and the VM (for Shutdown, and SIGTERM to the shim).
  void ShutdownNow();

  absl::StatusOr<containerd::task::v2::StateResponse> State(
      const containerd::task::v2::StateRequest& r);
  absl::StatusOr<containerd::task::v2::CreateTaskResponse> Create(
      const containerd::task::v2::CreateTaskRequest& r);
  absl::StatusOr<containerd::task::v2::StartResponse> Start(
      const containerd::task::v2::StartRequest& r);
  absl::StatusOr<containerd::task::v2::DeleteResponse> Delete(
      const containerd::task::v2::DeleteRequest& r);
  absl::StatusOr<containerd::task::v2::PidsResponse> Pids(
      const containerd::task::v2::PidsRequest& r);
  absl::Status Pause(const std::string& id, bool pause);
  absl::Status Kill(const containerd::task::v2::KillRequest& r);
  absl::Status Exec(const containerd::task::v2::ExecProcessRequest& r);
  absl::Status ResizePty(const containerd::task::v2::ResizePtyRequest& r);
  absl::Status CloseIO(const containerd::task::v2::CloseIORequest& r);
  absl::Status Update(const containerd::task::v2::UpdateTaskRequest& r);
  absl::StatusOr<containerd::task::v2::WaitResponse> Wait(
      const containerd::task::v2::WaitRequest& r, const ttrpc::CallContext& context);
  absl::StatusOr<containerd::task::v2::StatsResponse> Stats(
      const containerd::task::v2::StatsRequest& r);
  absl::StatusOr<containerd::task::v2::ConnectResponse> Connect(
      const containerd::task::v2::ConnectRequest& r);
  absl::Status Shutdown(const containerd::task::v2::ShutdownRequest& r);

 private:
  struct Container {
    std::string id;
    std::string bundle;
    std::string host_dir;  // <shared>/<id>: rootfs/ and mounts/
    std::shared_ptr<Process> init;
    std::map<std::string, std::shared_ptr<Process>> execs;
  };

  // The running sandbox; FailedPrecondition before the first Create or after shutdown.
  absl::StatusOr<std::shared_ptr<Sandbox>> GetSandbox();
  absl::StatusOr<std::shared_ptr<Container>> FindContainer(const std::string& id);
  absl::StatusOr<std::shared_ptr<Process>> FindProcess(const std::string& id,
                                                       const std::string& exec_id);
  // Whether the sandbox's VM was started (by an earlier Create).
  bool HasSandbox();
  // Boots the sandbox on the first Create, sized by the config and the first container's `spec`
  // (its annotations and limits, vm_resources.h), with `disks` and, when the first container
  // names a network namespace of the host (`netns_path`, a pod's CNI netns), that namespace's
  // network.
  absl::Status EnsureSandbox(const oci::v1::Spec& spec, const std::vector<VmDisk>& disks,
                             const std::string& netns_path)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(create_mu_);
  absl::StatusOr<containerd::task::v2::CreateTaskResponse> CreateLocked(
      const containerd::task::v2::CreateTaskRequest& r, const std::string& host_dir)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(create_mu_);
  // The namespaces a new container may join: those of the containers running in the sandbox.
  SandboxNamespaces RunningNamespaces();
  // Waits in the guest for `process` to exit, then for its output, then publishes TaskExit.
  void WatchExit(Process* process);
  // Marks `process` stopped and publishes TaskExit.
  void ReportExit(Process& process, uint32_t exit_status, absl::Time exited_at);
  void WatchOom();

  const Config config_;
  const ShimIdentity identity_;
  EventPublisher* const events_;
  absl::Notification shutdown_requested_;

  absl::Mutex create_mu_;  // serializes Create (and the sandbox's boot)
  std::thread oom_watcher_;

  absl::Mutex mu_;
  std::shared_ptr<Sandbox> sandbox_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, std::shared_ptr<Container>> containers_ ABSL_GUARDED_BY(mu_);
  bool shut_down_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace kapsel::shim

#endif  // KAPSEL_SHIM_TASK_SERVICE_H_
