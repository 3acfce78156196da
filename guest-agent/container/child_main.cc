#include "guest-agent/container/child_main.h"

#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>

#include "guest-agent/container/child_network.h"
#include "guest-agent/container/child_process.h"
#include "guest-agent/container/child_rootfs.h"
#include "guest-agent/container/child_util.h"
#include "guest-agent/container/clone.h"
#include "guest-agent/container/sync_channel.h"

namespace kapsel::agent::child {
namespace {

void WaitFor(SyncType type, const char* what) {
  SyncMessage message;
  int fd = -1;
  int rc = ReceiveSyncMessage(SyncFd(), &message, &fd);
  if (fd >= 0) close(fd);
  if (rc == 0) _exit(1);  // the agent gave up on this container
  if (rc < 0) Fail(-rc, what);
  if (message.type != type) Fail(EPROTO, what);
}

void Send(SyncType type) {
  SyncMessage message;
  message.type = type;
  int err = SendSyncMessage(SyncFd(), message);
  if (err != 0) _exit(1);
}

[[noreturn]] void RunInit(const LaunchSpec& spec) {
  const InitPlan& plan = *spec.init;
  ResetSignals();
  umask(0);
  WaitFor(SyncType::kProceed, "waiting for the agent");
  if (plan.new_user_namespace) {
    // Become root of the new namespace where it is mapped; drop the agent's groups.
    if (SetResGid(0) != 0 && errno != EINVAL) Fail(errno, "setresgid(0) in the user ns");
    if (SetResUid(0) != 0 && errno != EINVAL) Fail(errno, "setresuid(0) in the user ns");
    SetGroups(0, nullptr);
  }
  if (plan.loopback_up) BringLoopbackUp();
  SetupRootfs(plan);
  WriteSysctls(plan);
  int tty = -1;
  if (plan.process.terminal) {
    int pts = 0;
    tty = OpenTerminal(plan.process, &pts);
    BindConsole(pts);
  }
  FinishRootfs(plan);
  if (plan.set_hostname && sethostname(plan.hostname.data(), plan.hostname.size()) != 0) {
    Fail(errno, "setting the hostname", plan.hostname.c_str());
  }
  if (plan.set_domainname && setdomainname(plan.domainname.data(), plan.domainname.size()) != 0) {
    Fail(errno, "setting the domainname", plan.domainname.c_str());
  }
  PrepareProcess(plan.process, spec.stdio, tty);
  Send(SyncType::kReady);
  WaitFor(SyncType::kStart, "waiting for start");
  Exec(plan.process);
}

[[noreturn]] void RunExec(const LaunchSpec& spec) {
  const ProcessPlan& plan = *spec.exec;
  ResetSignals();
  umask(0);
  WaitFor(SyncType::kProceed, "waiting for the agent");
  int tty = -1;
  if (plan.terminal) {
    int pts = 0;
    tty = OpenTerminal(plan, &pts);
  }
  PrepareProcess(plan, spec.stdio, tty);
  Exec(plan);
}

}  // namespace

void RunLauncher(const LaunchSpec& spec) {
  SetSyncFd(spec.sync_fd);
  // Nothing of the agent's (other containers' pipes, sockets) may reach the container.
  const int keep[] = {spec.sync_fd, spec.stdio[0], spec.stdio[1], spec.stdio[2], spec.join_pidfd};
  CloseFdsExcept(keep, 5);
  if (spec.join_paths != nullptr) {
    for (const JoinNamespace& ns : *spec.join_paths) {
      int fd = open(ns.path.c_str(), O_RDONLY | O_CLOEXEC);
      if (fd < 0) Fail(errno, "opening the namespace", ns.path.c_str());
      if (setns(fd, ns.clone_flag) != 0) Fail(errno, "joining the namespace", ns.path.c_str());
      close(fd);
    }
  }
  if (spec.join_pidfd >= 0 && spec.join_flags != 0 &&
      setns(spec.join_pidfd, spec.join_flags) != 0) {
    Fail(errno, "joining the container's namespaces");
  }
  int pidfd = -1;
  pid_t pid = Clone3(spec.clone_flags, SIGCHLD, -1, &pidfd);
  if (pid < 0) Fail(errno, "clone3 of the container process");
  if (pid == 0) {
    if (spec.init != nullptr) RunInit(spec);
    RunExec(spec);
  }
  SyncMessage message;
  message.type = SyncType::kLaunched;
  message.value = pid;
  if (SendSyncMessage(spec.sync_fd, message, pidfd) != 0) {
    syscall(SYS_pidfd_send_signal, pidfd, SIGKILL, nullptr, 0);
    _exit(1);
  }
  _exit(0);
}

}  // namespace kapsel::agent::child
