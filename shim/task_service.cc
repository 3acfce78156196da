#include "shim/task_service.h"

#include <limits.h>
#include <signal.h>
#include <unistd.h>

#include "absl/strings/str_cat.h"
#include "common/agent/agent.pb.h"
#include "common/oci/spec.h"
#include "common/status.h"
#include "google/protobuf/empty.pb.h"
#include "google/protobuf/util/time_util.h"
#include "shim/api/cgroups_metrics.pb.h"
#include "shim/api/events.pb.h"
#include "shim/block_rootfs.h"
#include "shim/log.h"
#include "shim/mounts.h"

namespace kapsel::shim {
namespace {

namespace task = containerd::task::v2;
namespace av1 = agent::v1;
using google::protobuf::Empty;
using google::protobuf::Timestamp;

constexpr char kTaskService[] = "containerd.task.v2.Task";
constexpr char kVersion[] = "0.1.0";
// A process whose VM is gone ended as if killed: 128 + SIGKILL.
constexpr uint32_t kVmGoneExitStatus = 128 + SIGKILL;
// How long an exit waits for the process's output to drain to containerd.
constexpr absl::Duration kOutputDrainTimeout = absl::Seconds(30);

Timestamp ToTimestamp(absl::Time t) {
  return google::protobuf::util::TimeUtil::NanosecondsToTimestamp(absl::ToUnixNanos(t));
}

template <typename Request, typename Response>
absl::Status Add(ttrpc::Server& server, const char* method,
                 std::function<absl::StatusOr<Response>(const Request&)> fn) {
  return server.RegisterMethod<Request, Response>(
      kTaskService, method,
      [fn = std::move(fn), method](const Request& r,
                                   const ttrpc::CallContext&) -> absl::StatusOr<Response> {
        if (LogEnabled(LogLevel::kDebug)) LogDebug(method, " ", MessageText(r));
        absl::StatusOr<Response> response = fn(r);
        if (!response.ok()) LogWarn(method, ": ", response.status().ToString());
        return response;
      });
}

template <typename Request>
absl::Status AddEmpty(ttrpc::Server& server, const char* method,
                      std::function<absl::Status(const Request&)> fn) {
  return Add<Request, Empty>(server, method,
                             [fn = std::move(fn)](const Request& r) -> absl::StatusOr<Empty> {
                               RETURN_IF_ERROR(fn(r));
                               return Empty();
                             });
}

}  // namespace

TaskService::TaskService(Config config, ShimIdentity identity, EventPublisher* events)
    : config_(std::move(config)), identity_(std::move(identity)), events_(events) {}

TaskService::~TaskService() { ShutdownNow(); }

absl::Status TaskService::Register(ttrpc::Server& server) {
  RETURN_IF_ERROR((Add<task::StateRequest, task::StateResponse>(
      server, "State", [this](const task::StateRequest& r) { return State(r); })));
  RETURN_IF_ERROR((Add<task::CreateTaskRequest, task::CreateTaskResponse>(
      server, "Create", [this](const task::CreateTaskRequest& r) { return Create(r); })));
  RETURN_IF_ERROR((Add<task::StartRequest, task::StartResponse>(
      server, "Start", [this](const task::StartRequest& r) { return Start(r); })));
  RETURN_IF_ERROR((Add<task::DeleteRequest, task::DeleteResponse>(
      server, "Delete", [this](const task::DeleteRequest& r) { return Delete(r); })));
  RETURN_IF_ERROR((Add<task::PidsRequest, task::PidsResponse>(
      server, "Pids", [this](const task::PidsRequest& r) { return Pids(r); })));
  RETURN_IF_ERROR(AddEmpty<task::PauseRequest>(
      server, "Pause", [this](const task::PauseRequest& r) { return Pause(r.id(), true); }));
  RETURN_IF_ERROR(AddEmpty<task::ResumeRequest>(
      server, "Resume", [this](const task::ResumeRequest& r) { return Pause(r.id(), false); }));
  RETURN_IF_ERROR(AddEmpty<task::CheckpointTaskRequest>(
      server, "Checkpoint", [](const task::CheckpointTaskRequest&) {
        return absl::UnimplementedError("kapsel cannot checkpoint containers yet");
      }));
  RETURN_IF_ERROR(AddEmpty<task::KillRequest>(
      server, "Kill", [this](const task::KillRequest& r) { return Kill(r); }));
  RETURN_IF_ERROR(AddEmpty<task::ExecProcessRequest>(
      server, "Exec", [this](const task::ExecProcessRequest& r) { return Exec(r); }));
  RETURN_IF_ERROR(AddEmpty<task::ResizePtyRequest>(
      server, "ResizePty", [this](const task::ResizePtyRequest& r) { return ResizePty(r); }));
  RETURN_IF_ERROR(AddEmpty<task::CloseIORequest>(
      server, "CloseIO", [this](const task::CloseIORequest& r) { return CloseIO(r); }));
  RETURN_IF_ERROR(AddEmpty<task::UpdateTaskRequest>(
      server, "Update", [this](const task::UpdateTaskRequest& r) { return Update(r); }));
  RETURN_IF_ERROR((server.RegisterMethod<task::WaitRequest, task::WaitResponse>(
      kTaskService, "Wait",
      [this](const task::WaitRequest& r, const ttrpc::CallContext& c) { return Wait(r, c); })));
  RETURN_IF_ERROR((Add<task::StatsRequest, task::StatsResponse>(
      server, "Stats", [this](const task::StatsRequest& r) { return Stats(r); })));
  RETURN_IF_ERROR((Add<task::ConnectRequest, task::ConnectResponse>(
      server, "Connect", [this](const task::ConnectRequest& r) { return Connect(r); })));
  RETURN_IF_ERROR(AddEmpty<task::ShutdownRequest>(
      server, "Shutdown", [this](const task::ShutdownRequest& r) { return Shutdown(r); }));
  return absl::OkStatus();
}

absl::StatusOr<std::shared_ptr<Sandbox>> TaskService::GetSandbox() {
  absl::MutexLock lock(&mu_);
  if (sandbox_ == nullptr) return absl::FailedPreconditionError("no sandbox is running");
  return sandbox_;
}

absl::StatusOr<std::shared_ptr<TaskService::Container>> TaskService::FindContainer(
    const std::string& id) {
  absl::MutexLock lock(&mu_);
  auto it = containers_.find(id);
  if (it == containers_.end()) {
    return absl::NotFoundError(absl::StrCat("container ", id, " not found"));
  }
  return it->second;
}

absl::StatusOr<std::shared_ptr<Process>> TaskService::FindProcess(const std::string& id,
                                                                  const std::string& exec_id) {
  ASSIGN_OR_RETURN(std::shared_ptr<Container> c, FindContainer(id));
  if (exec_id.empty()) return c->init;
  absl::MutexLock lock(&mu_);
  auto it = c->execs.find(exec_id);
  if (it == c->execs.end()) {
    return absl::NotFoundError(absl::StrCat("exec ", exec_id, " of container ", id, " not found"));
  }
  return it->second;
}

bool TaskService::HasSandbox() {
  absl::MutexLock lock(&mu_);
  return sandbox_ != nullptr;
}

absl::Status TaskService::EnsureSandbox(const oci::v1::Spec& spec, const std::vector<VmDisk>& disks,
                                        const std::string& netns_path) {
  {
    absl::MutexLock lock(&mu_);
    if (shut_down_) return absl::FailedPreconditionError("the shim is shutting down");
    if (sandbox_ != nullptr) {
      if (!sandbox_->vm_running()) return absl::UnavailableError("the sandbox's VM is gone");
      return absl::OkStatus();
    }
  }
  // Sized before anything is set up, so a bad annotation leaves nothing behind (Sandbox::Boot
  // logs the size and its source).
  absl::StatusOr<VmResources> size = SizeVm(config_, spec.annotations(), OwnLimits(spec));
  if (!size.ok()) return Annotate(size.status(), "sizing the sandbox's VM");
  const std::string dir = SandboxDir(config_, identity_.ns, identity_.sandbox_id);
  std::unique_ptr<PodNetwork> network;
  if (!netns_path.empty() && IsOwnNetworkNamespace(netns_path)) {
    // The shim's own network (the host's, typically): it is never moved into a VM.
    LogInfo("the sandbox gets a network namespace of the VM instead of ", netns_path,
            ", the shim's own");
  } else if (!netns_path.empty()) {
    ASSIGN_OR_RETURN(network, PodNetwork::Attach(netns_path));
    if (network->empty()) network.reset();
  }
  // Without a hostname in the spec the host's, as with runc (a new UTS namespace starts as a copy
  // of its creator's). Under CRI the pod's sandbox container always names one.
  std::string hostname = spec.hostname();
  if (char host[HOST_NAME_MAX + 1] = {};
      hostname.empty() && gethostname(host, HOST_NAME_MAX) == 0) {
    hostname = host;
  }
  ASSIGN_OR_RETURN(std::unique_ptr<Sandbox> sandbox,
                   Sandbox::Start(config_, *size, SandboxPaths(dir), identity_.sandbox_id, hostname,
                                  disks, std::move(network), spec.linux().cgroups_path(),
                                  [](int code) { LogInfo("sandbox VM stopped: status ", code); }));
  {
    absl::MutexLock lock(&mu_);
    sandbox_ = std::move(sandbox);
  }
  oom_watcher_ = std::thread([this] { WatchOom(); });
  return absl::OkStatus();
}

absl::StatusOr<task::CreateTaskResponse> TaskService::Create(const task::CreateTaskRequest& r) {
  if (r.id().empty() || r.id().find('/') != std::string::npos || r.id() == "." || r.id() == "..") {
    return absl::InvalidArgumentError(absl::StrCat("bad container id '", r.id(), "'"));
  }
  if (!r.checkpoint().empty()) {
    return absl::UnimplementedError("kapsel cannot restore checkpoints yet");
  }
  absl::MutexLock create_lock(&create_mu_);
  {
    absl::MutexLock lock(&mu_);
    if (containers_.count(r.id()) != 0) {
      return absl::AlreadyExistsError(absl::StrCat("container ", r.id(), " already exists"));
    }
  }
  const std::string host_dir = absl::StrCat(
      SandboxPaths(SandboxDir(config_, identity_.ns, identity_.sandbox_id)).shared, "/", r.id());
  absl::StatusOr<task::CreateTaskResponse> response = CreateLocked(r, host_dir);
  if (!response.ok()) {
    // Leave nothing of this container behind (the sandbox goes with Shutdown).
    UnmountAll(host_dir).IgnoreError();
    RemoveTree(host_dir).IgnoreError();
  }
  return response;
}

absl::StatusOr<task::CreateTaskResponse> TaskService::CreateLocked(const task::CreateTaskRequest& r,
                                                                   const std::string& host_dir) {
  ASSIGN_OR_RETURN(oci::v1::Spec spec, oci::ReadSpecFile(absl::StrCat(r.bundle(), "/config.json")));
  StdioPaths stdio{r.stdin(), r.stdout(), r.stderr(), r.terminal()};
  if (spec.process().terminal() != r.terminal()) {
    return absl::InvalidArgumentError(
        "config.json process.terminal disagrees with the task's terminal setting");
  }
  // A block rootfs becomes the VM's disk when this container boots the VM; a pod's later
  // container (the VM runs already) gets a block device mounted on the host like any other
  // rootfs (virtio-mmio has no hotplug).
  const std::vector<containerd::types::Mount> mounts(r.rootfs().begin(), r.rootfs().end());
  ASSIGN_OR_RETURN(std::optional<BlockRootfs> block, AsBlockRootfs(mounts));
  if (block.has_value() && HasSandbox()) {
    if (block->image_file) {
      return absl::UnimplementedError(absl::StrCat(
          "rootfs image ", block->source,
          ": only a sandbox's first container can have an image-file rootfs (it becomes the VM's "
          "disk; kapsel does not mount loop devices on the host)"));
    }
    block.reset();
  }
  std::vector<VmDisk> disks;
  if (block.has_value()) disks.push_back({block->source, block->read_only});
  std::string netns_path;
  for (const oci::v1::Namespace& ns : spec.linux().namespaces()) {
    if (ns.type() == "network") netns_path = ns.path();
  }
  RETURN_IF_ERROR(EnsureSandbox(spec, disks, netns_path));
  ASSIGN_OR_RETURN(std::shared_ptr<Sandbox> sandbox, GetSandbox());

  // Otherwise the root filesystem is containerd's mounts (or the bundle's rootfs) on
  // <host_dir>/rootfs, which the guest sees at <kGuestSharedDir>/<id>/rootfs.
  const std::string rootfs = host_dir + "/rootfs";
  if (block.has_value()) {
    // Nothing to mount on the host.
  } else if (!mounts.empty()) {
    RETURN_IF_ERROR(MountAll(mounts, rootfs));
  } else {
    std::string source = spec.root().path();
    if (source.empty()) return absl::InvalidArgumentError("config.json has no root.path");
    if (source[0] != '/') source = absl::StrCat(r.bundle(), "/", source);
    RETURN_IF_ERROR(BindMount(source, rootfs, /*read_only=*/false));
  }
  const std::string guest_dir = absl::StrCat(kGuestSharedDir, "/", r.id());
  RETURN_IF_ERROR(PrepareGuestSpec(host_dir, guest_dir, RunningNamespaces(), &spec));

  ASSIGN_OR_RETURN(std::unique_ptr<ProcessIo> io, ProcessIo::Open(stdio));
  av1::CreateContainerRequest create;
  create.set_container_id(r.id());
  *create.mutable_spec() = spec;
  if (block.has_value()) {
    av1::Rootfs::BlockDevice* device = create.mutable_rootfs()->mutable_block();
    device->set_device(GuestDiskDevice(0));
    device->set_fs_type(block->fs_type);
    for (const std::string& option : block->options) device->add_options(option);
  } else {
    create.mutable_rootfs()->mutable_guest_path()->set_path(guest_dir + "/rootfs");
  }
  create.set_stdin(io->has_stdin());
  av1::CreateContainerResponse created;
  RETURN_IF_ERROR(sandbox->Call("CreateContainer", create, &created, absl::Seconds(60)));
  if (absl::Status s = io->Attach(sandbox->paths().agent_endpoint(), r.id(), ""); !s.ok()) {
    av1::RemoveContainerRequest remove;
    remove.set_container_id(r.id());
    remove.set_force(true);
    av1::Empty empty;
    sandbox->Call("RemoveContainer", remove, &empty).IgnoreError();
    return s;
  }

  auto container = std::make_shared<Container>();
  container->id = r.id();
  container->bundle = r.bundle();
  container->host_dir = host_dir;
  container->init = std::make_shared<Process>(r.id(), "", stdio, std::move(io));
  container->init->SetCreated(created.pid());
  {
    absl::MutexLock lock(&mu_);
    containers_[r.id()] = container;
  }
  containerd::events::TaskCreate event;
  event.set_container_id(r.id());
  event.set_bundle(r.bundle());
  *event.mutable_rootfs() = r.rootfs();
  event.mutable_io()->set_stdin(r.stdin());
  event.mutable_io()->set_stdout(r.stdout());
  event.mutable_io()->set_stderr(r.stderr());
  event.mutable_io()->set_terminal(r.terminal());
  event.set_pid(created.pid());
  events_->Publish("/tasks/create", event);

  task::CreateTaskResponse response;
  response.set_pid(created.pid());
  return response;
}

absl::StatusOr<task::StartResponse> TaskService::Start(const task::StartRequest& r) {
  ASSIGN_OR_RETURN(std::shared_ptr<Process> process, FindProcess(r.id(), r.exec_id()));
  ASSIGN_OR_RETURN(std::shared_ptr<Sandbox> sandbox, GetSandbox());
  if (process->status() != containerd::v1::types::CREATED || !process->ClaimStart()) {
    return absl::FailedPreconditionError(absl::StrCat("process ", process->id(), " was started"));
  }
  task::StartResponse response;
  av1::Empty empty;
  if (r.exec_id().empty()) {
    av1::ContainerRequest start;
    start.set_container_id(r.id());
    if (absl::Status started = sandbox->Call("StartContainer", start, &empty); !started.ok()) {
      // The init may be gone already (its program could not be executed): then the task is
      // stopped, so containerd can delete it.
      av1::ProcessRequest wait;
      wait.set_container_id(r.id());
      av1::WaitProcessResponse waited;
      if (sandbox->Call("WaitProcess", wait, &waited, absl::Seconds(2)).ok()) {
        ReportExit(*process, static_cast<uint32_t>(waited.exit_status()),
                   absl::FromUnixNanos(waited.exited_at_ns()));
      }
      return started;
    }
    process->SetRunning(0);
    containerd::events::TaskStart event;
    event.set_container_id(r.id());
    event.set_pid(process->pid());
    events_->Publish("/tasks/start", event);
  } else {
    av1::ExecProcessRequest exec;
    exec.set_container_id(r.id());
    exec.set_exec_id(r.exec_id());
    *exec.mutable_process() = process->exec_spec;
    exec.set_stdin(process->io().has_stdin());
    av1::ExecProcessResponse started;
    if (absl::Status s = sandbox->Call("ExecProcess", exec, &started, absl::Seconds(60)); !s.ok()) {
      // It never ran: containerd's copies of its output must not wait for it.
      process->io().CloseUnattached();
      return s;
    }
    RETURN_IF_ERROR(process->io().Attach(sandbox->paths().agent_endpoint(), r.id(), r.exec_id()));
    process->SetRunning(started.pid());
    containerd::events::TaskExecStarted event;
    event.set_container_id(r.id());
    event.set_exec_id(r.exec_id());
    event.set_pid(started.pid());
    events_->Publish("/tasks/exec-started", event);
  }
  // After the start event, so TaskExit always follows it.
  // The waiter holds no reference: ~Process joins it.
  process->StartWaiter([this, p = process.get()] { WatchExit(p); });
  response.set_pid(process->pid());
  return response;
}

SandboxNamespaces TaskService::RunningNamespaces() {
  SandboxNamespaces namespaces;
  absl::MutexLock lock(&mu_);
  for (const auto& [id, container] : containers_) {
    if (container->init->exited() || container->init->pid() == 0) continue;
    namespaces.container_inits.insert(container->init->pid());
    if (id == identity_.sandbox_id) namespaces.sandbox_init = container->init->pid();
  }
  namespaces.network_in_vm = sandbox_ != nullptr && sandbox_->has_network();
  return namespaces;
}

void TaskService::WatchExit(Process* process) {
  uint32_t exit_status = kVmGoneExitStatus;
  absl::Time exited_at = absl::Now();
  absl::StatusOr<std::shared_ptr<Sandbox>> sandbox = GetSandbox();
  if (sandbox.ok()) {
    av1::ProcessRequest request;
    request.set_container_id(process->container_id());
    request.set_exec_id(process->exec_id());
    av1::WaitProcessResponse response;
    absl::Status status =
        (*sandbox)->Call("WaitProcess", request, &response, absl::InfiniteDuration());
    if (status.ok()) {
      exit_status = static_cast<uint32_t>(response.exit_status());
      exited_at = absl::FromUnixNanos(response.exited_at_ns());
    } else {
      LogWarn("process ", process->id(), " of ", process->container_id(),
              ": no exit status from the guest (", status.ToString(), "); reporting ",
              kVmGoneExitStatus);
    }
  }
  if (!process->io().WaitOutput(kOutputDrainTimeout)) {
    LogWarn("process ", process->id(), ": output still flowing ",
            absl::FormatDuration(kOutputDrainTimeout), " after its exit");
  }
  ReportExit(*process, exit_status, exited_at);
}

void TaskService::ReportExit(Process& process, uint32_t exit_status, absl::Time exited_at) {
  process.SetExited(exit_status, exited_at);
  containerd::events::TaskExit event;
  event.set_container_id(process.container_id());
  event.set_id(process.id());
  event.set_pid(process.pid());
  event.set_exit_status(exit_status);
  *event.mutable_exited_at() = ToTimestamp(exited_at);
  events_->Publish("/tasks/exit", event);
}

void TaskService::WatchOom() {
  while (true) {
    absl::StatusOr<std::shared_ptr<Sandbox>> sandbox = GetSandbox();
    if (!sandbox.ok() || !(*sandbox)->vm_running()) return;
    av1::OomEvent oom;
    absl::Status status =
        (*sandbox)->Call("GetOomEvent", av1::GetOomEventRequest(), &oom, absl::InfiniteDuration());
    if (!status.ok()) return;  // the VM is gone (or going)
    containerd::events::TaskOOM event;
    event.set_container_id(oom.container_id());
    events_->Publish("/tasks/oom", event);
  }
}

absl::StatusOr<task::DeleteResponse> TaskService::Delete(const task::DeleteRequest& r) {
  ASSIGN_OR_RETURN(std::shared_ptr<Container> container, FindContainer(r.id()));
  ASSIGN_OR_RETURN(std::shared_ptr<Process> process, FindProcess(r.id(), r.exec_id()));
  const containerd::v1::types::Status status = process->status();
  if (status == containerd::v1::types::RUNNING || status == containerd::v1::types::PAUSED) {
    return absl::FailedPreconditionError(
        absl::StrCat("process ", process->id(), " is running: kill it before deleting"));
  }
  task::DeleteResponse response;
  response.set_pid(process->pid());
  response.set_exit_status(process->exit_status());
  *response.mutable_exited_at() = ToTimestamp(process->exited_at());
  absl::StatusOr<std::shared_ptr<Sandbox>> sandbox = GetSandbox();
  if (!r.exec_id().empty()) {
    // One that ran is forgotten by the agent too, so the id can be used again.
    if (process->pid() != 0 && sandbox.ok() && (*sandbox)->vm_running()) {
      av1::ProcessRequest remove;
      remove.set_container_id(r.id());
      remove.set_exec_id(r.exec_id());
      av1::Empty empty;
      if (absl::Status s = (*sandbox)->Call("RemoveProcess", remove, &empty); !s.ok()) {
        LogWarn("delete exec ", r.exec_id(), " of ", r.id(), ": ", s.ToString());
      }
    }
    absl::MutexLock lock(&mu_);
    container->execs.erase(r.exec_id());
    return response;
  }
  if (sandbox.ok() && (*sandbox)->vm_running()) {
    av1::RemoveContainerRequest remove;
    remove.set_container_id(r.id());
    remove.set_force(true);
    av1::Empty empty;
    if (absl::Status s = (*sandbox)->Call("RemoveContainer", remove, &empty); !s.ok()) {
      LogWarn("delete ", r.id(), ": ", s.ToString());
    }
  }
  {
    absl::MutexLock lock(&mu_);
    containers_.erase(r.id());
  }
  // The processes' threads end with their exit; dropping the last reference joins them.
  container->execs.clear();
  container->init.reset();
  process.reset();
  RETURN_IF_ERROR(UnmountAll(container->host_dir));
  RETURN_IF_ERROR(RemoveTree(container->host_dir));
  containerd::events::TaskDelete event;
  event.set_container_id(r.id());
  event.set_pid(response.pid());
  event.set_exit_status(response.exit_status());
  *event.mutable_exited_at() = response.exited_at();
  events_->Publish("/tasks/delete", event);
  return response;
}

absl::StatusOr<task::PidsResponse> TaskService::Pids(const task::PidsRequest& r) {
  ASSIGN_OR_RETURN(std::shared_ptr<Container> container, FindContainer(r.id()));
  ASSIGN_OR_RETURN(std::shared_ptr<Sandbox> sandbox, GetSandbox());
  av1::ContainerRequest request;
  request.set_container_id(r.id());
  av1::ListProcessesResponse list;
  RETURN_IF_ERROR(sandbox->Call("ListProcesses", request, &list));
  task::PidsResponse response;
  for (uint32_t pid : list.pids()) response.add_processes()->set_pid(pid);
  return response;
}

absl::Status TaskService::Pause(const std::string& id, bool pause) {
  ASSIGN_OR_RETURN(std::shared_ptr<Container> container, FindContainer(id));
  ASSIGN_OR_RETURN(std::shared_ptr<Sandbox> sandbox, GetSandbox());
  av1::ContainerRequest request;
  request.set_container_id(id);
  av1::Empty empty;
  RETURN_IF_ERROR(sandbox->Call(pause ? "PauseContainer" : "ResumeContainer", request, &empty));
  container->init->SetPaused(pause);
  if (pause) {
    containerd::events::TaskPaused event;
    event.set_container_id(id);
    events_->Publish("/tasks/paused", event);
  } else {
    containerd::events::TaskResumed event;
    event.set_container_id(id);
    events_->Publish("/tasks/resumed", event);
  }
  return absl::OkStatus();
}

absl::Status TaskService::Kill(const task::KillRequest& r) {
  ASSIGN_OR_RETURN(std::shared_ptr<Process> process, FindProcess(r.id(), r.exec_id()));
  if (process->exited() && !r.all()) {
    return absl::NotFoundError(absl::StrCat("process ", process->id(), " already finished"));
  }
  absl::StatusOr<std::shared_ptr<Sandbox>> sandbox = GetSandbox();
  if (!sandbox.ok() || !(*sandbox)->vm_running()) {
    return absl::NotFoundError(absl::StrCat("process ", process->id(), ": its VM is gone"));
  }
  av1::SignalProcessRequest request;
  request.set_container_id(r.id());
  request.set_exec_id(r.exec_id());
  request.set_signal(r.signal());
  request.set_all(r.all());
  av1::Empty empty;
  return (*sandbox)->Call("SignalProcess", request, &empty);
}

absl::Status TaskService::Exec(const task::ExecProcessRequest& r) {
  ASSIGN_OR_RETURN(std::shared_ptr<Container> container, FindContainer(r.id()));
  if (r.exec_id().empty()) return absl::InvalidArgumentError("exec id is empty");
  if (container->init->exited()) {
    return absl::FailedPreconditionError(absl::StrCat("container ", r.id(), " is not running"));
  }
  ASSIGN_OR_RETURN(oci::v1::Process spec, oci::ParseProcess(r.spec().value()));
  if (spec.terminal() != r.terminal()) {
    return absl::InvalidArgumentError("exec process.terminal disagrees with the exec's terminal");
  }
  StdioPaths stdio{r.stdin(), r.stdout(), r.stderr(), r.terminal()};
  ASSIGN_OR_RETURN(std::unique_ptr<ProcessIo> io, ProcessIo::Open(stdio));
  auto process = std::make_shared<Process>(r.id(), r.exec_id(), stdio, std::move(io));
  process->exec_spec = std::move(spec);
  process->SetCreated(0);
  {
    absl::MutexLock lock(&mu_);
    if (!container->execs.emplace(r.exec_id(), process).second) {
      return absl::AlreadyExistsError(absl::StrCat("exec ", r.exec_id(), " already exists"));
    }
  }
  containerd::events::TaskExecAdded event;
  event.set_container_id(r.id());
  event.set_exec_id(r.exec_id());
  events_->Publish("/tasks/exec-added", event);
  return absl::OkStatus();
}

absl::Status TaskService::ResizePty(const task::ResizePtyRequest& r) {
  ASSIGN_OR_RETURN(std::shared_ptr<Process> process, FindProcess(r.id(), r.exec_id()));
  ASSIGN_OR_RETURN(std::shared_ptr<Sandbox> sandbox, GetSandbox());
  av1::TtyWinResizeRequest request;
  request.set_container_id(r.id());
  request.set_exec_id(r.exec_id());
  request.set_rows(r.height());
  request.set_columns(r.width());
  av1::Empty empty;
  return sandbox->Call("TtyWinResize", request, &empty);
}

absl::Status TaskService::CloseIO(const task::CloseIORequest& r) {
  ASSIGN_OR_RETURN(std::shared_ptr<Process> process, FindProcess(r.id(), r.exec_id()));
  if (r.stdin()) process->io().CloseStdin();
  return absl::OkStatus();
}

absl::Status TaskService::Update(const task::UpdateTaskRequest& r) {
  ASSIGN_OR_RETURN(std::shared_ptr<Container> container, FindContainer(r.id()));
  ASSIGN_OR_RETURN(std::shared_ptr<Sandbox> sandbox, GetSandbox());
  av1::UpdateContainerRequest request;
  request.set_container_id(r.id());
  ASSIGN_OR_RETURN(*request.mutable_resources(), oci::ParseResources(r.resources().value()));
  av1::Empty empty;
  return sandbox->Call("UpdateContainer", request, &empty);
}

absl::StatusOr<task::WaitResponse> TaskService::Wait(const task::WaitRequest& r,
                                                     const ttrpc::CallContext& context) {
  ASSIGN_OR_RETURN(std::shared_ptr<Process> process, FindProcess(r.id(), r.exec_id()));
  if (!process->Wait(context)) return absl::CancelledError("Wait cancelled");
  task::WaitResponse response;
  response.set_exit_status(process->exit_status());
  *response.mutable_exited_at() = ToTimestamp(process->exited_at());
  return response;
}

absl::StatusOr<task::StatsResponse> TaskService::Stats(const task::StatsRequest& r) {
  ASSIGN_OR_RETURN(std::shared_ptr<Container> container, FindContainer(r.id()));
  ASSIGN_OR_RETURN(std::shared_ptr<Sandbox> sandbox, GetSandbox());
  av1::ContainerRequest request;
  request.set_container_id(r.id());
  av1::StatsContainerResponse stats;
  RETURN_IF_ERROR(sandbox->Call("StatsContainer", request, &stats));
  io::containerd::cgroups::v2::Metrics metrics;
  metrics.mutable_pids()->set_current(stats.pids_current());
  metrics.mutable_pids()->set_limit(stats.pids_max());
  auto* cpu = metrics.mutable_cpu();
  cpu->set_usage_usec(stats.cpu_usage_usec());
  cpu->set_user_usec(stats.cpu_user_usec());
  cpu->set_system_usec(stats.cpu_system_usec());
  cpu->set_nr_periods(stats.cpu_nr_periods());
  cpu->set_nr_throttled(stats.cpu_nr_throttled());
  cpu->set_throttled_usec(stats.cpu_throttled_usec());
  auto* memory = metrics.mutable_memory();
  memory->set_usage(stats.memory_current());
  memory->set_usage_limit(stats.memory_max());
  auto stat = [&stats](const char* key) -> uint64_t {
    auto it = stats.memory_stat().find(key);
    return it == stats.memory_stat().end() ? 0 : it->second;
  };
  memory->set_anon(stat("anon"));
  memory->set_file(stat("file"));
  memory->set_kernel_stack(stat("kernel_stack"));
  memory->set_slab(stat("slab"));
  memory->set_sock(stat("sock"));
  memory->set_shmem(stat("shmem"));
  memory->set_file_mapped(stat("file_mapped"));
  memory->set_file_dirty(stat("file_dirty"));
  memory->set_inactive_anon(stat("inactive_anon"));
  memory->set_active_anon(stat("active_anon"));
  memory->set_inactive_file(stat("inactive_file"));
  memory->set_active_file(stat("active_file"));
  memory->set_unevictable(stat("unevictable"));
  memory->set_pgfault(stat("pgfault"));
  memory->set_pgmajfault(stat("pgmajfault"));
  metrics.mutable_memory_events()->set_oom_kill(stats.memory_events_oom_kill());
  task::StatsResponse response;
  response.mutable_stats()->set_type_url(metrics.GetTypeName());
  response.mutable_stats()->set_value(metrics.SerializeAsString());
  return response;
}

absl::StatusOr<task::ConnectResponse> TaskService::Connect(const task::ConnectRequest& r) {
  task::ConnectResponse response;
  response.set_shim_pid(static_cast<uint32_t>(getpid()));
  response.set_version(kVersion);
  absl::StatusOr<std::shared_ptr<Container>> container = FindContainer(r.id());
  if (container.ok()) response.set_task_pid((*container)->init->pid());
  return response;
}

absl::StatusOr<task::StateResponse> TaskService::State(const task::StateRequest& r) {
  ASSIGN_OR_RETURN(std::shared_ptr<Container> container, FindContainer(r.id()));
  ASSIGN_OR_RETURN(std::shared_ptr<Process> process, FindProcess(r.id(), r.exec_id()));
  task::StateResponse response;
  response.set_id(process->id());
  response.set_exec_id(r.exec_id());
  response.set_bundle(container->bundle);
  response.set_pid(process->pid());
  response.set_status(process->status());
  response.set_stdin(process->stdio().stdin_path);
  response.set_stdout(process->stdio().stdout_path);
  response.set_stderr(process->stdio().stderr_path);
  response.set_terminal(process->stdio().terminal);
  response.set_exit_status(process->exit_status());
  *response.mutable_exited_at() = ToTimestamp(process->exited_at());
  return response;
}

absl::Status TaskService::Shutdown(const task::ShutdownRequest&) {
  {
    absl::MutexLock lock(&mu_);
    if (!containers_.empty()) return absl::OkStatus();  // still serving containers
  }
  // Stop the VM before answering: right after the answer containerd runs `delete`, which would
  // kill a VMM still powering off.
  ShutdownNow();
  if (!shutdown_requested_.HasBeenNotified()) shutdown_requested_.Notify();
  return absl::OkStatus();
}

void TaskService::ShutdownNow() {
  std::shared_ptr<Sandbox> sandbox;
  std::map<std::string, std::shared_ptr<Container>> containers;
  {
    absl::MutexLock lock(&mu_);
    if (shut_down_) return;
    shut_down_ = true;
    sandbox = sandbox_;
    containers = containers_;
  }
  // Stopping the VM ends every WaitProcess (exits are published as 137) and stdio stream.
  if (sandbox != nullptr) sandbox->Stop();
  if (oom_watcher_.joinable()) oom_watcher_.join();
  {
    absl::MutexLock lock(&mu_);
    containers_.clear();
    sandbox_.reset();
  }
  for (auto& [id, container] : containers) {
    container->execs.clear();
    container->init.reset();
  }
  containers.clear();
  sandbox.reset();
}

}  // namespace kapsel::shim
