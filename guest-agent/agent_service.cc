#include "guest-agent/agent_service.h"

#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <fstream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "common/status.h"
#include "guest-agent/network.h"

namespace kapsel::agent {
namespace {

constexpr char kVersion[] = "0.1.0";

// Registers a handler that ignores the call context.
template <typename Request, typename Response>
absl::Status Add(ttrpc::Server& server, const char* method,
                 std::function<absl::StatusOr<Response>(const Request&)> handler) {
  return server.RegisterMethod<Request, Response>(
      kAgentService, method,
      [handler = std::move(handler)](const Request& request, const ttrpc::CallContext&) {
        return handler(request);
      });
}

absl::Status MkdirAll(const std::string& path) {
  for (size_t slash = 1; slash != std::string::npos; slash = path.find('/', slash + 1)) {
    const std::string prefix = path.substr(0, slash);
    if (!prefix.empty() && mkdir(prefix.c_str(), 0755) != 0 && errno != EEXIST) {
      return ErrnoError(absl::StrCat("mkdir ", prefix));
    }
  }
  if (mkdir(path.c_str(), 0755) != 0 && errno != EEXIST) {
    return ErrnoError(absl::StrCat("mkdir ", path));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status AgentService::Register(ttrpc::Server& server) {
  using namespace v1;
  RETURN_IF_ERROR((Add<CreateContainerRequest, CreateContainerResponse>(
      server, "CreateContainer",
      [this](const CreateContainerRequest& r) { return CreateContainer(r); })));
  RETURN_IF_ERROR((Add<ContainerRequest, Empty>(
      server, "StartContainer", [this](const ContainerRequest& r) { return StartContainer(r); })));
  RETURN_IF_ERROR((Add<RemoveContainerRequest, Empty>(
      server, "RemoveContainer",
      [this](const RemoveContainerRequest& r) { return RemoveContainer(r); })));
  RETURN_IF_ERROR((Add<ContainerRequest, Empty>(
      server, "PauseContainer", [this](const ContainerRequest& r) { return PauseContainer(r); })));
  RETURN_IF_ERROR(
      (Add<ContainerRequest, Empty>(server, "ResumeContainer", [this](const ContainerRequest& r) {
        return ResumeContainer(r);
      })));
  RETURN_IF_ERROR((Add<UpdateContainerRequest, Empty>(
      server, "UpdateContainer",
      [this](const UpdateContainerRequest& r) { return UpdateContainer(r); })));
  RETURN_IF_ERROR((Add<ContainerRequest, StatsContainerResponse>(
      server, "StatsContainer", [this](const ContainerRequest& r) { return StatsContainer(r); })));
  RETURN_IF_ERROR((Add<ContainerRequest, ListProcessesResponse>(
      server, "ListProcesses", [this](const ContainerRequest& r) { return ListProcesses(r); })));
  RETURN_IF_ERROR((Add<ExecProcessRequest, ExecProcessResponse>(
      server, "ExecProcess", [this](const ExecProcessRequest& r) { return ExecProcess(r); })));
  RETURN_IF_ERROR((server.RegisterMethod<GetOomEventRequest, OomEvent>(
      kAgentService, "GetOomEvent",
      [this](const GetOomEventRequest&, const ttrpc::CallContext& c) { return GetOomEvent(c); })));
  RETURN_IF_ERROR((Add<HealthRequest, HealthResponse>(
      server, "Health", [this](const HealthRequest& r) { return Health(r); })));
  RETURN_IF_ERROR((Add<CreateSandboxRequest, Empty>(
      server, "CreateSandbox",
      [this](const CreateSandboxRequest& r) { return CreateSandbox(r); })));
  RETURN_IF_ERROR((server.RegisterMethod<DestroySandboxRequest, Empty>(
      kAgentService, "DestroySandbox",
      [this](const DestroySandboxRequest& r, const ttrpc::CallContext& c) {
        return DestroySandbox(r, c);
      })));
  RETURN_IF_ERROR((server.RegisterMethod<ProcessRequest, WaitProcessResponse>(
      kAgentService, "WaitProcess",
      [this](const ProcessRequest& r, const ttrpc::CallContext& c) { return WaitProcess(r, c); })));
  RETURN_IF_ERROR((Add<SignalProcessRequest, Empty>(
      server, "SignalProcess",
      [this](const SignalProcessRequest& r) { return SignalProcess(r); })));
  RETURN_IF_ERROR((Add<ProcessRequest, Empty>(
      server, "CloseStdin", [this](const ProcessRequest& r) { return CloseStdin(r); })));
  RETURN_IF_ERROR((Add<ProcessRequest, Empty>(
      server, "RemoveProcess", [this](const ProcessRequest& r) { return RemoveProcess(r); })));
  RETURN_IF_ERROR((Add<TtyWinResizeRequest, Empty>(
      server, "TtyWinResize", [this](const TtyWinResizeRequest& r) { return TtyWinResize(r); })));
  return absl::OkStatus();
}

absl::StatusOr<v1::HealthResponse> AgentService::Health(const v1::HealthRequest&) {
  v1::HealthResponse response;
  response.set_version(kVersion);
  response.set_api_version(kApiVersion);
  return response;
}

absl::StatusOr<v1::Empty> AgentService::CreateSandbox(const v1::CreateSandboxRequest& request) {
  const bool has_network = request.interfaces_size() > 0 || request.routes_size() > 0;
  if (!options_.is_init) {
    // Outside a VM (tests) the sandbox is the host: leave its hostname, mounts and network alone.
    if (!request.hostname().empty() || request.shared_mounts_size() > 0 || has_network) {
      return absl::FailedPreconditionError(
          "CreateSandbox: hostname, shared mounts and network need the agent to be the VM's init");
    }
    return v1::Empty();
  }
  // A bad network request changes nothing, not even the hostname.
  if (has_network) {
    RETURN_IF_ERROR(
        Annotate(ValidateNetwork(request.interfaces(), request.routes()), "CreateSandbox"));
  }
  if (!request.hostname().empty() &&
      sethostname(request.hostname().data(), request.hostname().size()) != 0) {
    return ErrnoError(absl::StrCat("CreateSandbox: sethostname ", request.hostname()));
  }
  // The pod's containers share the VM's network namespace: the agent's own.
  if (has_network) {
    RETURN_IF_ERROR(
        Annotate(ConfigureNetwork(request.interfaces(), request.routes()), "CreateSandbox"));
  }
  for (const v1::SharedMount& m : request.shared_mounts()) {
    if (m.tag().empty() || m.guest_path().empty() || m.guest_path()[0] != '/') {
      return absl::InvalidArgumentError(absl::StrCat("CreateSandbox: shared mount '", m.tag(),
                                                     "' needs a tag and an absolute "
                                                     "guest path"));
    }
    RETURN_IF_ERROR(MkdirAll(m.guest_path()));
    if (mount(m.tag().c_str(), m.guest_path().c_str(), "virtiofs", 0, nullptr) != 0) {
      return ErrnoError(
          absl::StrCat("CreateSandbox: mount virtiofs ", m.tag(), " on ", m.guest_path()));
    }
  }
  return v1::Empty();
}

absl::StatusOr<v1::Empty> AgentService::DestroySandbox(const v1::DestroySandboxRequest&,
                                                       const ttrpc::CallContext& context) {
  // Once the answer is out: stopping closes the connections.
  if (options_.on_destroy) context.RunAfterResponse(options_.on_destroy);
  return v1::Empty();
}

absl::StatusOr<v1::WaitProcessResponse> AgentService::WaitProcess(
    const v1::ProcessRequest& request, const ttrpc::CallContext& context) {
  ASSIGN_OR_RETURN(ExitInfo exit,
                   processes_->Wait(request.container_id(), request.exec_id(), context.deadline,
                                    [&context] { return context.IsCancelled(); }));
  v1::WaitProcessResponse response;
  response.set_exit_status(exit.exit_status);
  response.set_exited_at_ns(absl::ToUnixNanos(exit.exited_at));
  return response;
}

absl::StatusOr<v1::Empty> AgentService::SignalProcess(const v1::SignalProcessRequest& request) {
  if (request.signal() == 0 || request.signal() >= static_cast<uint32_t>(NSIG)) {
    return absl::InvalidArgumentError(absl::StrCat("SignalProcess: bad signal ", request.signal()));
  }
  const int sig = static_cast<int>(request.signal());
  ASSIGN_OR_RETURN(bool exited, processes_->Exited(request.container_id(), request.exec_id()));
  ASSIGN_OR_RETURN(std::shared_ptr<Container> container, Find(request.container_id()));
  if (request.all()) {
    ASSIGN_OR_RETURN(std::vector<pid_t> pids, container->Pids());
    for (pid_t pid : pids) kill(pid, sig);  // a process may be gone already: not an error
    return v1::Empty();
  }
  if (exited) return absl::NotFoundError("SignalProcess: the process has exited");
  if (request.exec_id().empty()) {
    RETURN_IF_ERROR(container->Signal(sig));
  } else {
    ASSIGN_OR_RETURN(pid_t pid, processes_->Pid(request.container_id(), request.exec_id()));
    RETURN_IF_ERROR(container->SignalProcess(pid, sig));
  }
  return v1::Empty();
}

absl::StatusOr<v1::Empty> AgentService::CloseStdin(const v1::ProcessRequest& request) {
  ASSIGN_OR_RETURN(std::shared_ptr<ProcessIo> io,
                   processes_->Io(request.container_id(), request.exec_id()));
  absl::MutexLock lock(&io->mu);
  io->stdin_closed = true;
  io->stdin_writer.reset();  // not attached yet: the process sees EOF now
  // Attached: end the connection's input; its copier then closes the process's stdin.
  if (io->input_connection >= 0) shutdown(io->input_connection, SHUT_RD);
  return v1::Empty();
}

absl::StatusOr<v1::Empty> AgentService::RemoveProcess(const v1::ProcessRequest& request) {
  if (request.exec_id().empty()) {
    return absl::InvalidArgumentError(absl::StrCat("RemoveProcess: no exec id (container ",
                                                   request.container_id(),
                                                   "'s init goes with RemoveContainer)"));
  }
  RETURN_IF_ERROR(
      Annotate(processes_->Remove(request.container_id(), request.exec_id()), "RemoveProcess"));
  return v1::Empty();
}

absl::StatusOr<v1::Empty> AgentService::TtyWinResize(const v1::TtyWinResizeRequest& request) {
  ASSIGN_OR_RETURN(std::shared_ptr<ProcessIo> io,
                   processes_->Io(request.container_id(), request.exec_id()));
  absl::MutexLock lock(&io->mu);
  if (!io->terminal) {
    return absl::FailedPreconditionError("TtyWinResize: the process has no terminal");
  }
  winsize size{};
  size.ws_row = static_cast<unsigned short>(request.rows());
  size.ws_col = static_cast<unsigned short>(request.columns());
  if (ioctl(io->terminal.get(), TIOCSWINSZ, &size) != 0) return ErrnoError("TIOCSWINSZ");
  return v1::Empty();
}

absl::StatusOr<std::shared_ptr<Container>> AgentService::Find(const std::string& id) {
  absl::MutexLock lock(&mu_);
  auto it = containers_.find(id);
  if (it == containers_.end()) {
    return absl::NotFoundError(absl::StrCat("container ", id, " does not exist"));
  }
  return it->second.container;
}

absl::StatusOr<std::string> AgentService::PrepareRootfs(const std::string& id,
                                                        const v1::Rootfs& rootfs,
                                                        std::string* mounted) {
  switch (rootfs.source_case()) {
    case v1::Rootfs::kGuestPath: {
      const std::string& path = rootfs.guest_path().path();
      struct stat st;
      if (path.empty() || path[0] != '/' || stat(path.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
        return absl::InvalidArgumentError(
            absl::StrCat("rootfs: '", path, "' is not an absolute path to a directory"));
      }
      return path;
    }
    case v1::Rootfs::kVirtioFs: {
      const v1::Rootfs::VirtioFs& fs = rootfs.virtio_fs();
      if (fs.tag().empty() || fs.tag().find('/') != std::string::npos ||
          absl::StrContains(fs.subdir(), "..")) {
        return absl::InvalidArgumentError(absl::StrCat("rootfs: bad virtio-fs tag '", fs.tag(),
                                                       "' or subdir '", fs.subdir(), "'"));
      }
      const std::string mountpoint = absl::StrCat(options_.state_dir, "/shared/", fs.tag());
      RETURN_IF_ERROR(MkdirAll(mountpoint));
      if (mount(fs.tag().c_str(), mountpoint.c_str(), "virtiofs", 0, nullptr) != 0 &&
          errno != EBUSY) {
        return ErrnoError(absl::StrCat("rootfs: mount virtiofs ", fs.tag()));
      }
      return absl::StrCat(mountpoint, "/", fs.subdir());
    }
    case v1::Rootfs::kBlock: {
      const v1::Rootfs::BlockDevice& block = rootfs.block();
      const std::string target = absl::StrCat(options_.state_dir, "/containers/", id, "/rootfs");
      RETURN_IF_ERROR(MkdirAll(target));
      // "ro"/"rw" are mount flags; every other option goes to the filesystem.
      unsigned long flags = 0;
      std::vector<std::string> data_options;
      for (const std::string& option : block.options()) {
        if (option == "ro") {
          flags |= MS_RDONLY;
        } else if (option != "rw") {
          data_options.push_back(option);
        }
      }
      const std::string data = absl::StrJoin(data_options, ",");
      if (mount(block.device().c_str(), target.c_str(), block.fs_type().c_str(), flags,
                data.empty() ? nullptr : data.c_str()) != 0) {
        return ErrnoError(
            absl::StrCat("rootfs: mount ", block.device(), " (", block.fs_type(), ") on ", target));
      }
      *mounted = target;
      return target;
    }
    default:
      return absl::InvalidArgumentError("rootfs: no source given");
  }
}

namespace {

bool ValidId(const std::string& id) {
  if (id.empty() || id.size() > 128) return false;
  for (char c : id) {
    if (!isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_' && c != '.') return false;
  }
  return id != "." && id != "..";
}

void Unmount(const std::string& path) {
  if (path.empty()) return;
  umount2(path.c_str(), MNT_DETACH);
  rmdir(path.c_str());
}

// Fills the agent's and the process's stdio ends for a process without a terminal.
absl::Status MakeIo(bool terminal, bool with_stdin, ProcessIo* io, ChildStdio* child,
                    ProcessStdio* stdio) {
  if (terminal) return absl::OkStatus();
  RETURN_IF_ERROR(MakeStdioPipes(with_stdin, io, child));
  stdio->in = child->stdin_fd ? child->stdin_fd.get() : -1;
  stdio->out = child->stdout_fd.get();
  stdio->err = child->stderr_fd.get();
  return absl::OkStatus();
}

uint64_t ReadOomKills(const std::string& cgroup_path) {
  std::ifstream in(cgroup_path + "/memory.events");
  std::string key;
  uint64_t value;
  while (in >> key >> value) {
    if (key == "oom_kill") return value;
  }
  return 0;
}

}  // namespace

absl::StatusOr<v1::CreateContainerResponse> AgentService::CreateContainer(
    const v1::CreateContainerRequest& request) {
  const std::string& id = request.container_id();
  if (!ValidId(id)) {
    return absl::InvalidArgumentError(absl::StrCat("CreateContainer: bad container id '", id, "'"));
  }
  {
    absl::MutexLock lock(&mu_);
    if (containers_.count(id) != 0) {
      return absl::AlreadyExistsError(absl::StrCat("container ", id, " already exists"));
    }
  }
  std::string mounted;
  absl::StatusOr<std::string> rootfs = PrepareRootfs(id, request.rootfs(), &mounted);
  if (!rootfs.ok()) return Annotate(rootfs.status(), absl::StrCat("CreateContainer ", id));

  auto io = std::make_shared<ProcessIo>();
  ChildStdio child;
  ContainerOptions options;
  options.rootfs = *rootfs;
  options.cgroup_root = options_.cgroup_root;
  options.timeout = absl::Seconds(30);
  const bool terminal = request.spec().process().terminal();
  absl::Status made = MakeIo(terminal, request.stdin(), io.get(), &child, &options.stdio);
  absl::StatusOr<std::unique_ptr<Container>> container =
      made.ok() ? Container::Create(id, request.spec(), options) : made;
  if (!container.ok()) {
    Unmount(mounted);
    return Annotate(container.status(), absl::StrCat("CreateContainer ", id));
  }
  std::shared_ptr<Container> created = *std::move(container);
  if (terminal) {
    absl::MutexLock lock(&io->mu);
    io->terminal = created->TakeConsole();
  }
  absl::Status added = processes_->Add(id, "", created->init_pid(), io);
  if (!added.ok()) {
    (void)created->Destroy();
    Unmount(mounted);
    return added;
  }
  v1::CreateContainerResponse response;
  response.set_pid(static_cast<uint32_t>(created->init_pid()));
  absl::MutexLock lock(&mu_);
  containers_[id] = ContainerRecord{std::move(created), mounted, 0};
  return response;
}

absl::StatusOr<v1::Empty> AgentService::StartContainer(const v1::ContainerRequest& request) {
  ASSIGN_OR_RETURN(std::shared_ptr<Container> container, Find(request.container_id()));
  RETURN_IF_ERROR(container->Start());
  return v1::Empty();
}

absl::StatusOr<v1::Empty> AgentService::RemoveContainer(const v1::RemoveContainerRequest& request) {
  ContainerRecord record;
  {
    absl::MutexLock lock(&mu_);
    auto it = containers_.find(request.container_id());
    if (it == containers_.end()) {
      return absl::NotFoundError(
          absl::StrCat("container ", request.container_id(), " does not exist"));
    }
    const ContainerState state = it->second.container->state();
    if (!request.force() &&
        (state == ContainerState::kRunning || state == ContainerState::kPaused)) {
      return absl::FailedPreconditionError(absl::StrCat("container ", request.container_id(),
                                                        " is running: stop it first, or force"));
    }
    record = std::move(it->second);
    containers_.erase(it);
  }
  absl::Status destroyed = record.container->Destroy();
  Unmount(record.mounted_rootfs);
  processes_->RemoveContainer(request.container_id());
  RETURN_IF_ERROR(destroyed);
  return v1::Empty();
}

absl::StatusOr<v1::Empty> AgentService::PauseContainer(const v1::ContainerRequest& request) {
  ASSIGN_OR_RETURN(std::shared_ptr<Container> container, Find(request.container_id()));
  RETURN_IF_ERROR(container->Pause());
  return v1::Empty();
}

absl::StatusOr<v1::Empty> AgentService::ResumeContainer(const v1::ContainerRequest& request) {
  ASSIGN_OR_RETURN(std::shared_ptr<Container> container, Find(request.container_id()));
  RETURN_IF_ERROR(container->Resume());
  return v1::Empty();
}

absl::StatusOr<v1::Empty> AgentService::UpdateContainer(const v1::UpdateContainerRequest& request) {
  ASSIGN_OR_RETURN(std::shared_ptr<Container> container, Find(request.container_id()));
  RETURN_IF_ERROR(container->Update(request.resources()));
  return v1::Empty();
}

absl::StatusOr<v1::StatsContainerResponse> AgentService::StatsContainer(
    const v1::ContainerRequest& request) {
  ASSIGN_OR_RETURN(std::shared_ptr<Container> container, Find(request.container_id()));
  ASSIGN_OR_RETURN(CgroupStats stats, container->Stats());
  v1::StatsContainerResponse response;
  auto limit = [](const std::optional<uint64_t>& v) {
    return !v.has_value() || *v == CgroupStats::kUnlimited ? 0 : *v;
  };
  response.set_memory_current(stats.memory_current.value_or(0));
  response.set_memory_max(limit(stats.memory_max));
  for (const auto& [key, value] : stats.memory_stat) (*response.mutable_memory_stat())[key] = value;
  response.set_cpu_usage_usec(stats.cpu_usage_usec.value_or(0));
  response.set_cpu_user_usec(stats.cpu_user_usec.value_or(0));
  response.set_cpu_system_usec(stats.cpu_system_usec.value_or(0));
  response.set_pids_current(stats.pids_current.value_or(0));
  response.set_pids_max(limit(stats.pids_max));
  response.set_memory_events_oom_kill(ReadOomKills(container->cgroup_path()));
  return response;
}

absl::StatusOr<v1::ListProcessesResponse> AgentService::ListProcesses(
    const v1::ContainerRequest& request) {
  ASSIGN_OR_RETURN(std::shared_ptr<Container> container, Find(request.container_id()));
  ASSIGN_OR_RETURN(std::vector<pid_t> pids, container->Pids());
  v1::ListProcessesResponse response;
  for (pid_t pid : pids) response.add_pids(static_cast<uint32_t>(pid));
  return response;
}

absl::StatusOr<v1::ExecProcessResponse> AgentService::ExecProcess(
    const v1::ExecProcessRequest& request) {
  if (!ValidId(request.exec_id())) {
    return absl::InvalidArgumentError(
        absl::StrCat("ExecProcess: bad exec id '", request.exec_id(), "'"));
  }
  ASSIGN_OR_RETURN(std::shared_ptr<Container> container, Find(request.container_id()));
  auto io = std::make_shared<ProcessIo>();
  ChildStdio child;
  ProcessStdio stdio;
  const bool terminal = request.process().terminal();
  RETURN_IF_ERROR(MakeIo(terminal, request.stdin(), io.get(), &child, &stdio));
  absl::StatusOr<ExecResult> exec = container->Exec(request.process(), stdio);
  if (!exec.ok()) return Annotate(exec.status(), absl::StrCat("ExecProcess ", request.exec_id()));
  if (terminal) {
    absl::MutexLock lock(&io->mu);
    io->terminal = std::move(exec->console);
  }
  absl::Status added = processes_->Add(request.container_id(), request.exec_id(), exec->pid, io);
  if (!added.ok()) {
    (void)container->SignalProcess(exec->pid, SIGKILL);
    return added;
  }
  v1::ExecProcessResponse response;
  response.set_pid(static_cast<uint32_t>(exec->pid));
  return response;
}

absl::StatusOr<v1::OomEvent> AgentService::GetOomEvent(const ttrpc::CallContext& context) {
  while (true) {
    {
      absl::MutexLock lock(&mu_);
      for (auto& [id, record] : containers_) {
        const uint64_t kills = ReadOomKills(record.container->cgroup_path());
        if (kills > record.oom_kills_seen) {
          record.oom_kills_seen = kills;
          v1::OomEvent event;
          event.set_container_id(id);
          return event;
        }
      }
    }
    const absl::Time next = std::min(context.deadline, absl::Now() + absl::Milliseconds(200));
    if (context.WaitForCancellation(next)) return absl::CancelledError("GetOomEvent cancelled");
    if (absl::Now() >= context.deadline) {
      return absl::DeadlineExceededError("GetOomEvent: no OOM event");
    }
  }
}

void AgentService::OnChildExit(pid_t pid, int wait_status) {
  // The container first, then the process table: a client that saw the exit through WaitProcess
  // must find the container stopped (RemoveContainer right after WaitProcess).
  std::vector<std::shared_ptr<Container>> containers;
  {
    absl::MutexLock lock(&mu_);
    for (auto& [id, record] : containers_) containers.push_back(record.container);
  }
  for (auto& container : containers) {
    if (container->OnExit(pid, wait_status)) break;
  }
  processes_->OnExit(pid, wait_status);
}

void AgentService::DestroyAll() {
  std::map<std::string, ContainerRecord> containers;
  {
    absl::MutexLock lock(&mu_);
    containers.swap(containers_);
  }
  for (auto& [id, record] : containers) {
    (void)record.container->Destroy();
    Unmount(record.mounted_rootfs);
    processes_->RemoveContainer(id);
  }
}

}  // namespace kapsel::agent
