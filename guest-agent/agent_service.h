// kapsel.agent.v1.Agent (common/agent/agent.proto) over ttrpc: maps each RPC onto the agent's
// containers and process table, containerd-shim style: a thin layer, the work is elsewhere.
#ifndef KAPSEL_GUEST_AGENT_AGENT_SERVICE_H_
#define KAPSEL_GUEST_AGENT_AGENT_SERVICE_H_

#include <functional>
#include <map>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "common/agent/agent.pb.h"
#include "common/ttrpc/server.h"
#include "guest-agent/container/container.h"
#include "guest-agent/lite_protos.h"
#include "guest-agent/process_table.h"

namespace kapsel::agent {

static_assert(kIsLiteMessage<v1::CreateContainerRequest>,
              "the guest uses the lite copy of common/agent/agent.proto");

inline constexpr char kAgentService[] = "kapsel.agent.v1.Agent";
inline constexpr uint32_t kApiVersion = 2;

struct AgentOptions {
  // Running as the VM's init: sandbox-level RPCs change the guest (hostname, mounts, power).
  bool is_init = false;
  // Called once DestroySandbox has answered: the agent should stop (and, as init, power the VM
  // off).
  std::function<void()> on_destroy;
  // Where container cgroups are created (the guest's cgroup2 mount in a VM).
  std::string cgroup_root = "/sys/fs/cgroup";
  // Where the agent mounts containers' root filesystems and shared virtio-fs tags.
  std::string state_dir = "/run/kapsel";
};

class AgentService {
 public:
  AgentService(AgentOptions options, ProcessTable* processes)
      : options_(std::move(options)), processes_(processes) {}

  // Registers every RPC on `server`.
  absl::Status Register(ttrpc::Server& server);

  absl::StatusOr<v1::HealthResponse> Health(const v1::HealthRequest& request);
  absl::StatusOr<v1::Empty> CreateSandbox(const v1::CreateSandboxRequest& request);
  absl::StatusOr<v1::Empty> DestroySandbox(const v1::DestroySandboxRequest& request,
                                           const ttrpc::CallContext& context);
  absl::StatusOr<v1::WaitProcessResponse> WaitProcess(const v1::ProcessRequest& request,
                                                      const ttrpc::CallContext& context);
  absl::StatusOr<v1::Empty> SignalProcess(const v1::SignalProcessRequest& request);
  absl::StatusOr<v1::Empty> CloseStdin(const v1::ProcessRequest& request);
  absl::StatusOr<v1::Empty> RemoveProcess(const v1::ProcessRequest& request);
  absl::StatusOr<v1::Empty> TtyWinResize(const v1::TtyWinResizeRequest& request);

  absl::StatusOr<v1::CreateContainerResponse> CreateContainer(
      const v1::CreateContainerRequest& request);
  absl::StatusOr<v1::Empty> StartContainer(const v1::ContainerRequest& request);
  absl::StatusOr<v1::Empty> RemoveContainer(const v1::RemoveContainerRequest& request);
  absl::StatusOr<v1::Empty> PauseContainer(const v1::ContainerRequest& request);
  absl::StatusOr<v1::Empty> ResumeContainer(const v1::ContainerRequest& request);
  absl::StatusOr<v1::Empty> UpdateContainer(const v1::UpdateContainerRequest& request);
  absl::StatusOr<v1::StatsContainerResponse> StatsContainer(const v1::ContainerRequest& request);
  absl::StatusOr<v1::ListProcessesResponse> ListProcesses(const v1::ContainerRequest& request);
  absl::StatusOr<v1::ExecProcessResponse> ExecProcess(const v1::ExecProcessRequest& request);
  absl::StatusOr<v1::OomEvent> GetOomEvent(const ttrpc::CallContext& context);

  // The reaper saw a child exit: tell the container it belonged to and the process table.
  void OnChildExit(pid_t pid, int wait_status);
  // Destroys every container (DestroySandbox, agent shutdown).
  void DestroyAll();

 private:
  struct ContainerRecord {
    std::shared_ptr<Container> container;
    std::string mounted_rootfs;  // a mount the agent made for this container, removed with it
    uint64_t oom_kills_seen = 0;
  };
  absl::StatusOr<std::shared_ptr<Container>> Find(const std::string& id);
  // Resolves (mounting when needed) the rootfs of a new container.
  absl::StatusOr<std::string> PrepareRootfs(const std::string& id, const v1::Rootfs& rootfs,
                                            std::string* mounted);

  AgentOptions options_;
  ProcessTable* processes_;
  absl::Mutex mu_;
  std::map<std::string, ContainerRecord> containers_ ABSL_GUARDED_BY(mu_);
};

}  // namespace kapsel::agent

#endif  // KAPSEL_GUEST_AGENT_AGENT_SERVICE_H_
