#include "guest-agent/container/container.h"

#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "guest-agent/container/capabilities.h"
#include "guest-agent/container/cgroup_resources.h"
#include "guest-agent/container/device_filter.h"
#include "guest-agent/container/init_plan.h"
#include "guest-agent/container/launch.h"
#include "guest-agent/container/process_plan.h"
#include "guest-agent/container/sync_channel.h"

namespace kapsel::agent {
namespace {

absl::Status CheckId(const std::string& id) {
  if (id.empty() || id.size() > 128 || id == "." || id == "..") {
    return absl::InvalidArgumentError(absl::StrCat("invalid container id \"", id, "\""));
  }
  for (char c : id) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_' || c == '.';
    if (!ok) {
      return absl::InvalidArgumentError(absl::StrCat(
          "invalid container id \"", id, "\" (letters, digits, '-', '_' and '.' only)"));
    }
  }
  return absl::OkStatus();
}

absl::Status CheckReaper() {
  if (getpid() == 1) return absl::OkStatus();
  int subreaper = 0;
  if (prctl(PR_GET_CHILD_SUBREAPER, &subreaper, 0, 0, 0) == 0 && subreaper != 0) {
    return absl::OkStatus();
  }
  return absl::FailedPreconditionError(
      "the caller must be PID 1 or a child subreaper (prctl PR_SET_CHILD_SUBREAPER): container "
      "processes are reparented to it");
}

int PidfdSignal(int pidfd, int signal) {
  return syscall(SYS_pidfd_send_signal, pidfd, signal, nullptr, 0) == 0 ? 0 : errno;
}

absl::Status ApplyResources(Cgroup& cgroup, const oci::v1::Resources& resources,
                            UniqueFd* device_program) {
  ASSIGN_OR_RETURN(std::vector<CgroupWrite> writes, CgroupWrites(resources));
  RETURN_IF_ERROR(ApplyDeviceRules(resources.devices(), cgroup.dir_fd(), device_program));
  return cgroup.Apply(writes);
}

}  // namespace

Container::Container(std::string id, std::unique_ptr<Cgroup> cgroup)
    : id_(std::move(id)), cgroup_(std::move(cgroup)) {}

Container::~Container() {
  absl::MutexLock lock(&mu_);
  DestroyLocked().IgnoreError();
}

absl::StatusOr<std::unique_ptr<Container>> Container::Create(const std::string& id,
                                                             const oci::v1::Spec& spec,
                                                             const ContainerOptions& options) {
  RETURN_IF_ERROR(CheckId(id));
  RETURN_IF_ERROR(CheckReaper());
  ASSIGN_OR_RETURN(int last_cap, LastCapability());
  InitPlanInputs inputs{options.bundle_dir, options.rootfs, last_cap};
  ASSIGN_OR_RETURN(BuiltInitPlan built, BuildInitPlan(spec, inputs));
  // Check the resources before anything exists.
  RETURN_IF_ERROR(CgroupWrites(spec.linux().resources()).status());
  RETURN_IF_ERROR(CheckDeviceRules(spec.linux().resources().devices()));

  std::string cgroup_path = spec.linux().cgroups_path().empty() ? absl::StrCat("kapsel/", id)
                                                                : spec.linux().cgroups_path();
  ASSIGN_OR_RETURN(std::unique_ptr<Cgroup> cgroup,
                   Cgroup::Create(options.cgroup_root, cgroup_path));
  UniqueFd device_program;
  RETURN_IF_ERROR(ApplyResources(*cgroup, spec.linux().resources(), &device_program));

  std::unique_ptr<Container> container(new Container(id, std::move(cgroup)));
  container->device_program_ = std::move(device_program);
  container->seccomp_ = built.plan->process.seccomp;
  container->last_cap_ = last_cap;
  container->timeout_ = options.timeout;
  container->namespace_flags_ = static_cast<int>(built.namespaces.all_flags);
  absl::Status status = container->CreateInit(std::move(built.plan), options);
  if (!status.ok()) {
    absl::Status destroyed = container->Destroy();
    if (!destroyed.ok()) {
      status = Annotate(status, absl::StrCat("(and cleaning up: ", destroyed.message(), ")"));
    }
    return status;
  }
  return container;
}

absl::Status Container::CreateInit(std::unique_ptr<InitPlan> plan,
                                   const ContainerOptions& options) {
  plan->process.Finalize();
  child::LaunchSpec launch;
  launch.join_paths = &plan->join_namespaces;
  launch.clone_flags = plan->clone_flags;
  launch.init = plan.get();
  const int stdio[3] = {options.stdio.in, options.stdio.out, options.stdio.err};
  ASSIGN_OR_RETURN(LaunchedProcess process,
                   LaunchProcess(launch, stdio, cgroup_->dir_fd(), options.timeout));
  init_pid_ = process.pid;
  init_pidfd_ = std::move(process.pidfd);
  if (plan->id_map) {
    std::string proc = absl::StrCat("/proc/", init_pid_);
    RETURN_IF_ERROR(WriteSmallFile(proc + "/uid_map", plan->id_map->uid_map));
    RETURN_IF_ERROR(WriteSmallFile(proc + "/gid_map", plan->id_map->gid_map));
  }
  RETURN_IF_ERROR(SendProceed(process));
  sync_ = std::move(process.sync);
  for (;;) {
    absl::StatusOr<std::optional<ReceivedMessage>> waited =
        ReceiveSyncMessageWithTimeout(sync_.get(), options.timeout);
    if (absl::IsDeadlineExceeded(waited.status())) {
      return absl::DeadlineExceededError(
          absl::StrCat(waited.status().message(), " (", DescribeStuck(process.pid), ")"));
    }
    ASSIGN_OR_RETURN(std::optional<ReceivedMessage> received, std::move(waited));
    if (!received) return absl::InternalError("the container init exited during setup");
    switch (received->message.type) {
      case SyncType::kReady:
        return absl::OkStatus();
      case SyncType::kPtyMaster: {
        absl::MutexLock lock(&mu_);
        console_ = std::move(received->fd);
        break;
      }
      case SyncType::kError:
        return SyncMessageStatus(received->message, "setting up the container");
      default:
        return absl::InternalError("unexpected message from the container init");
    }
  }
}

ContainerState Container::state() const {
  absl::MutexLock lock(&mu_);
  return state_;
}

std::optional<int> Container::init_exit_status() const {
  absl::MutexLock lock(&mu_);
  return init_status_;
}

UniqueFd Container::TakeConsole() {
  absl::MutexLock lock(&mu_);
  return std::move(console_);
}

absl::Status Container::Start() {
  absl::MutexLock lock(&mu_);
  if (destroyed_) return absl::FailedPreconditionError("the container was destroyed");
  if (started_) return absl::FailedPreconditionError("the container was already started");
  if (state_ != ContainerState::kCreated) {
    return absl::FailedPreconditionError("the container's init is not waiting to start");
  }
  started_ = true;
  SyncMessage message;
  message.type = SyncType::kStart;
  if (int err = SendSyncMessage(sync_.get(), message); err != 0) {
    state_ = ContainerState::kStopped;
    return ErrnoError(err, "starting the container (its init is gone)");
  }
  absl::StatusOr<std::optional<ReceivedMessage>> received =
      ReceiveSyncMessageWithTimeout(sync_.get(), timeout_);
  sync_.reset();
  if (!received.ok()) return received.status();
  if (received->has_value()) {
    state_ = ContainerState::kStopped;
    if ((*received)->message.type == SyncType::kError) {
      return SyncMessageStatus((*received)->message, "starting the container");
    }
    return absl::InternalError("unexpected message from the container init");
  }
  // End of stream: the socket closed on execve.
  if (!init_status_) state_ = ContainerState::kRunning;
  return absl::OkStatus();
}

absl::StatusOr<ExecResult> Container::Exec(const oci::v1::Process& process,
                                           const ProcessStdio& stdio) {
  absl::MutexLock lock(&mu_);
  if (state_ != ContainerState::kRunning) {
    return absl::FailedPreconditionError(state_ == ContainerState::kPaused
                                             ? "the container is paused"
                                             : "the container is not running");
  }
  ASSIGN_OR_RETURN(std::unique_ptr<ProcessPlan> plan,
                   BuildProcessPlan(process, seccomp_, last_cap_));
  plan->Finalize();
  child::LaunchSpec launch;
  launch.join_pidfd = init_pidfd_.get();
  launch.join_flags = namespace_flags_;
  launch.exec = plan.get();
  const int fds[3] = {stdio.in, stdio.out, stdio.err};
  ASSIGN_OR_RETURN(LaunchedProcess launched,
                   LaunchProcess(launch, fds, cgroup_->dir_fd(), timeout_));
  ExecResult result;
  result.pid = launched.pid;
  if (absl::Status status = SendProceed(launched); !status.ok()) {
    PidfdSignal(launched.pidfd.get(), SIGKILL);
    return status;
  }
  for (;;) {
    absl::StatusOr<std::optional<ReceivedMessage>> received =
        ReceiveSyncMessageWithTimeout(launched.sync.get(), timeout_);
    if (!received.ok()) {
      PidfdSignal(launched.pidfd.get(), SIGKILL);
      return received.status();
    }
    if (!received->has_value()) break;  // execve closed the socket
    ReceivedMessage& message = **received;
    if (message.message.type == SyncType::kPtyMaster) {
      result.console = std::move(message.fd);
      continue;
    }
    PidfdSignal(launched.pidfd.get(), SIGKILL);
    if (message.message.type == SyncType::kError) {
      return SyncMessageStatus(message.message, "exec in the container");
    }
    return absl::InternalError("unexpected message from the exec'd process");
  }
  exec_pidfds_[launched.pid] = std::move(launched.pidfd);
  return result;
}

absl::Status Container::Signal(int signal) { return SignalProcess(init_pid_, signal); }

absl::Status Container::SignalProcess(pid_t pid, int signal) {
  absl::MutexLock lock(&mu_);
  int pidfd = -1;
  if (pid == init_pid_) {
    if (init_status_ || destroyed_) {
      return absl::FailedPreconditionError("the container's init has exited");
    }
    pidfd = init_pidfd_.get();
  } else {
    auto it = exec_pidfds_.find(pid);
    if (it == exec_pidfds_.end()) {
      return absl::NotFoundError(
          absl::StrCat("pid ", pid, " is not a running process of container ", id_));
    }
    pidfd = it->second.get();
  }
  if (int err = PidfdSignal(pidfd, signal); err != 0) {
    return ErrnoError(err, absl::StrCat("sending signal ", signal, " to pid ", pid));
  }
  return absl::OkStatus();
}

bool Container::OnExit(pid_t pid, int status) {
  absl::MutexLock lock(&mu_);
  if (pid == init_pid_ && !init_status_) {
    init_status_ = status;
    state_ = ContainerState::kStopped;
    return true;
  }
  return exec_pidfds_.erase(pid) > 0;
}

absl::StatusOr<std::vector<pid_t>> Container::Pids() const {
  absl::MutexLock lock(&mu_);
  if (destroyed_) return absl::FailedPreconditionError("the container was destroyed");
  return cgroup_->Procs();
}

absl::Status Container::Pause() {
  absl::MutexLock lock(&mu_);
  if (state_ != ContainerState::kRunning) {
    return absl::FailedPreconditionError("only a running container can be paused");
  }
  RETURN_IF_ERROR(cgroup_->SetFrozen(true, timeout_));
  state_ = ContainerState::kPaused;
  return absl::OkStatus();
}

absl::Status Container::Resume() {
  absl::MutexLock lock(&mu_);
  if (state_ != ContainerState::kPaused) {
    return absl::FailedPreconditionError("the container is not paused");
  }
  RETURN_IF_ERROR(cgroup_->SetFrozen(false, timeout_));
  state_ = init_status_ ? ContainerState::kStopped : ContainerState::kRunning;
  return absl::OkStatus();
}

absl::StatusOr<CgroupStats> Container::Stats() const {
  absl::MutexLock lock(&mu_);
  if (destroyed_) return absl::FailedPreconditionError("the container was destroyed");
  return cgroup_->Stats();
}

absl::Status Container::Update(const oci::v1::Resources& resources) {
  absl::MutexLock lock(&mu_);
  if (destroyed_) return absl::FailedPreconditionError("the container was destroyed");
  RETURN_IF_ERROR(CheckDeviceRules(resources.devices()));
  return ApplyResources(*cgroup_, resources, &device_program_);
}

absl::Status Container::Destroy() {
  absl::MutexLock lock(&mu_);
  return DestroyLocked();
}

absl::Status Container::DestroyLocked() {
  if (destroyed_) return absl::OkStatus();
  if (init_pidfd_ && !init_status_) PidfdSignal(init_pidfd_.get(), SIGKILL);
  absl::Status status = cgroup_->KillAll(timeout_);
  if (status.ok()) status = cgroup_->Remove();
  if (!status.ok()) return Annotate(status, absl::StrCat("destroying container ", id_));
  destroyed_ = true;
  state_ = ContainerState::kStopped;
  sync_.reset();
  console_.reset();
  exec_pidfds_.clear();
  return absl::OkStatus();
}

}  // namespace kapsel::agent
