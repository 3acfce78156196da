// A container built from an OCI runtime spec inside the guest: kapsel-agent's container core.
//
// Lifecycle: Create() builds everything and leaves the container's init blocked just before
// execve (like `runc create`); Start() lets it exec. Exec() runs more processes inside. Destroy()
// (or the destructor) kills every process of the container's cgroup and removes the cgroup.
//
// Process contract (the agent is the reaper):
//  * The caller must be PID 1 (the agent in the VM) or a child subreaper
//    (prctl(PR_SET_CHILD_SUBREAPER)): container processes are started by a short-lived helper and
//    reparented to it. Create() checks this.
//  * The caller reaps its children itself (a SIGCHLD loop with waitpid(-1, ...)) and reports the
//    exits of container processes with OnExit(). Create/Exec never wait for container processes.
//  * The helpers kapsel clones have no exit signal (they are "clone" children), so a
//    waitpid(-1, ...) or wait() without __WALL/__WCLONE never sees them; the container reaps them
//    through their pidfds. A reaper must therefore not pass __WALL or __WCLONE.
//  * An exec'd process may exit before Exec() returns, and a failed init (Create() error) or exec
//    (Exec() error) is killed and left for the reaper: the reaper must tolerate exits of pids it
//    does not know (yet).
//  * Reap promptly: the init of a pid namespace finishes exiting only once every process of the
//    namespace (exec'd ones included, which are the caller's children) has been reaped.
//
// Thread-safe: every method takes the container's lock.
#ifndef KAPSEL_GUEST_AGENT_CONTAINER_CONTAINER_H_
#define KAPSEL_GUEST_AGENT_CONTAINER_CONTAINER_H_

#include <sys/types.h>

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/oci/spec.pb.h"
#include "common/unique_fd.h"
#include "guest-agent/container/cgroup.h"
#include "guest-agent/container/plan.h"
#include "guest-agent/lite_protos.h"

namespace kapsel::agent {

static_assert(kIsLiteMessage<oci::v1::Spec>,
              "the guest uses the lite copy of common/oci/spec.proto");

// The stdio of a process: fds in the caller (not taken over; the caller may close them once
// Create/Exec returned). -1 gives /dev/null. Ignored in terminal mode.
struct ProcessStdio {
  int in = -1;
  int out = -1;
  int err = -1;
};

struct ContainerOptions {
  // Relative root.path and mount sources are resolved against it.
  std::string bundle_dir;
  // The rootfs (absolute); empty: root.path of the spec.
  std::string rootfs;
  // The cgroup v2 mount (or a directory in it) under which the container's cgroup is created:
  // <cgroup_root>/<linux.cgroupsPath>, or <cgroup_root>/kapsel/<id> without one.
  std::string cgroup_root = "/sys/fs/cgroup";
  ProcessStdio stdio;
  // How long setup steps may take before they are abandoned.
  absl::Duration timeout = absl::Seconds(30);
};

enum class ContainerState { kCreated, kRunning, kPaused, kStopped };

struct ExecResult {
  pid_t pid = -1;
  UniqueFd console;  // the pty master when process.terminal
};

class Container {
 public:
  static absl::StatusOr<std::unique_ptr<Container>> Create(const std::string& id,
                                                           const oci::v1::Spec& spec,
                                                           const ContainerOptions& options);
  // Destroys the container if Destroy() was not called.
  ~Container();
  Container(const Container&) = delete;
  Container& operator=(const Container&) = delete;

  const std::string& id() const { return id_; }
  // The init's pid (in the caller's pid namespace).
  pid_t init_pid() const { return init_pid_; }
  const std::string& cgroup_path() const { return cgroup_->path(); }
  ContainerState state() const;
  // The init's exit status (waitpid format), once OnExit reported it.
  std::optional<int> init_exit_status() const;
  // The pty master of the init in terminal mode (only the first call gets it).
  UniqueFd TakeConsole();

  // Lets the init exec process.args. Fails if not created, called twice, or the exec fails.
  absl::Status Start();
  // Starts a process inside the running container: its namespaces, cgroup, root, and the given
  // process's user, capabilities, rlimits, env, cwd and terminal; the container's seccomp profile.
  absl::StatusOr<ExecResult> Exec(const oci::v1::Process& process, const ProcessStdio& stdio);

  // Sends a signal to the init (through its pidfd: never to a recycled pid).
  absl::Status Signal(int signal);
  // Sends a signal to the init or to a process started by Exec that has not exited.
  absl::Status SignalProcess(pid_t pid, int signal);
  // The caller's reaper reports an exit; returns whether pid was a process of this container.
  bool OnExit(pid_t pid, int status);

  // Processes in the container's cgroup.
  absl::StatusOr<std::vector<pid_t>> Pids() const;
  absl::Status Pause();
  absl::Status Resume();
  absl::StatusOr<CgroupStats> Stats() const;
  absl::Status Update(const oci::v1::Resources& resources);
  // Kills every process of the container, waits until its cgroup is empty, removes it. Idempotent.
  absl::Status Destroy();

 private:
  Container(std::string id, std::unique_ptr<Cgroup> cgroup);
  absl::Status CreateInit(std::unique_ptr<InitPlan> plan, const ContainerOptions& options);
  absl::Status DestroyLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const std::string id_;
  mutable absl::Mutex mu_;
  std::unique_ptr<Cgroup> cgroup_;
  pid_t init_pid_ = -1;
  UniqueFd init_pidfd_;
  UniqueFd sync_;  // to the init until it execs
  UniqueFd console_ ABSL_GUARDED_BY(mu_);
  ContainerState state_ ABSL_GUARDED_BY(mu_) = ContainerState::kCreated;
  bool started_ ABSL_GUARDED_BY(mu_) = false;
  bool destroyed_ ABSL_GUARDED_BY(mu_) = false;
  std::optional<int> init_status_ ABSL_GUARDED_BY(mu_);
  std::map<pid_t, UniqueFd> exec_pidfds_ ABSL_GUARDED_BY(mu_);
  UniqueFd device_program_ ABSL_GUARDED_BY(mu_);  // the attached BPF device program, if any
  // What Exec needs from the spec.
  std::optional<SeccompProgram> seccomp_;
  int namespace_flags_ = 0;  // setns flags for Exec
  int last_cap_ = 40;
  absl::Duration timeout_ = absl::Seconds(30);
};

}  // namespace kapsel::agent

#endif  // KAPSEL_GUEST_AGENT_CONTAINER_CONTAINER_H_
