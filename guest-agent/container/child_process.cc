#include "guest-agent/container/child_process.h"

#include <fcntl.h>
#include <linux/capability.h>
#include <linux/seccomp.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <termios.h>
#include <unistd.h>

#include <cerrno>

#include "guest-agent/container/child_util.h"
#include "guest-agent/container/sync_channel.h"

namespace kapsel::agent::child {
namespace {

// Whether seccomp must be loaded while CAP_SYS_ADMIN is still effective (no no_new_privs and
// the final sets lack it); the final capset then follows the filter.
bool DeferCapabilityDrop(const ProcessPlan& plan) {
  return plan.seccomp.has_value() && !plan.no_new_privileges && plan.capabilities.has_value() &&
         (plan.capabilities->effective & (uint64_t{1} << CAP_SYS_ADMIN)) == 0;
}

int SetCapabilities(uint64_t effective, uint64_t permitted, uint64_t inheritable) {
  __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
  __user_cap_data_struct data[2] = {};
  data[0].effective = static_cast<uint32_t>(effective);
  data[1].effective = static_cast<uint32_t>(effective >> 32);
  data[0].permitted = static_cast<uint32_t>(permitted);
  data[1].permitted = static_cast<uint32_t>(permitted >> 32);
  data[0].inheritable = static_cast<uint32_t>(inheritable);
  data[1].inheritable = static_cast<uint32_t>(inheritable >> 32);
  return syscall(SYS_capset, &header, data) == 0 ? 0 : errno;
}

}  // namespace

int OpenTerminal(const ProcessPlan& plan, int* pts_number) {
  int master = open("/dev/ptmx", O_RDWR | O_NOCTTY | O_CLOEXEC);
  if (master < 0)
    Fail(errno, "opening /dev/ptmx in the container (is devpts mounted on /dev/pts?)");
  int unlock = 0;
  if (ioctl(master, TIOCSPTLCK, &unlock) != 0) Fail(errno, "unlocking the pty");
  if (ioctl(master, TIOCGPTN, pts_number) != 0) Fail(errno, "reading the pty number");
  int slave = ioctl(master, TIOCGPTPEER, O_RDWR | O_NOCTTY | O_CLOEXEC);
  if (slave < 0) Fail(errno, "opening the pty slave");
  if (plan.console_rows != 0 || plan.console_cols != 0) {
    winsize size{};
    size.ws_row = plan.console_rows;
    size.ws_col = plan.console_cols;
    if (ioctl(slave, TIOCSWINSZ, &size) != 0) Fail(errno, "setting the console size");
  }
  if (fchown(slave, plan.uid, static_cast<gid_t>(-1)) != 0 && errno != EINVAL) {
    Fail(errno, "giving the pty to the process user");
  }
  SyncMessage message;
  message.type = SyncType::kPtyMaster;
  int err = SendSyncMessage(SyncFd(), message, master);
  if (err != 0) Fail(err, "sending the pty master to the agent");
  close(master);
  return slave;
}

void PrepareProcess(const ProcessPlan& plan, const int stdio[3], int tty) {
  if (setsid() < 0) Fail(errno, "setsid");
  if (tty >= 0) {
    if (ioctl(tty, TIOCSCTTY, 0) != 0) Fail(errno, "making the pty the controlling terminal");
    const int fds[3] = {tty, tty, tty};
    InstallStdio(fds);
    if (tty > 2) close(tty);
  } else {
    InstallStdio(stdio);
  }

  if (!plan.oom_score_adj.empty()) {
    int err = WriteFile("/proc/self/oom_score_adj", plan.oom_score_adj.c_str());
    if (err != 0) Fail(err, "writing process.oomScoreAdj", plan.oom_score_adj.c_str());
  }
  for (const RlimitStep& rlimit : plan.rlimits) {
    if (setrlimit(static_cast<__rlimit_resource>(rlimit.resource), &rlimit.limit) != 0) {
      Fail(errno, "setting process.rlimits", rlimit.name.c_str());
    }
  }

  if (plan.capabilities) {
    for (int cap = 0; cap <= plan.last_cap; ++cap) {
      if ((plan.capabilities->bounding & (uint64_t{1} << cap)) != 0) continue;
      if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0) {
        Fail(errno, "dropping a capability from the bounding set");
      }
    }
    if (prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) != 0) Fail(errno, "PR_SET_KEEPCAPS");
  }
  if (SetGroups(plan.additional_gids.size(), plan.additional_gids.data()) != 0) {
    Fail(errno, "setgroups for process.user.additionalGids");
  }
  if (SetResGid(plan.gid) != 0) Fail(errno, "setting process.user.gid");
  if (SetResUid(plan.uid) != 0) Fail(errno, "setting process.user.uid");
  if (plan.capabilities) {
    if (prctl(PR_SET_KEEPCAPS, 0, 0, 0, 0) != 0) Fail(errno, "PR_SET_KEEPCAPS");
    const CapabilitySets& caps = *plan.capabilities;
    uint64_t extra = DeferCapabilityDrop(plan) ? uint64_t{1} << CAP_SYS_ADMIN : 0;
    int err = SetCapabilities(caps.effective | extra, caps.permitted | extra, caps.inheritable);
    if (err != 0) Fail(err, "capset for process.capabilities");
    if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0 && errno != EINVAL) {
      Fail(errno, "clearing the ambient capabilities");
    }
    for (int cap = 0; cap <= plan.last_cap; ++cap) {
      if ((caps.ambient & (uint64_t{1} << cap)) == 0) continue;
      if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, cap, 0, 0) != 0) {
        Fail(errno, "raising an ambient capability");
      }
    }
  }
  umask(plan.umask);
  if (chdir(plan.cwd.c_str()) != 0) Fail(errno, "changing to process.cwd", plan.cwd.c_str());
  if (plan.no_new_privileges && prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) {
    Fail(errno, "setting no_new_privs");
  }
}

void Exec(const ProcessPlan& plan) {
  if (plan.seccomp) {
    sock_fprog program{};
    program.len = static_cast<unsigned short>(plan.seccomp->instructions.size());
    program.filter = const_cast<sock_filter*>(plan.seccomp->instructions.data());
    if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, plan.seccomp->flags, &program) != 0) {
      Fail(errno, errno == EACCES
                      ? "loading the seccomp filter (needs noNewPrivileges or CAP_SYS_ADMIN)"
                      : "loading the seccomp filter");
    }
    if (DeferCapabilityDrop(plan)) {
      const CapabilitySets& caps = *plan.capabilities;
      int err = SetCapabilities(caps.effective, caps.permitted, caps.inheritable);
      if (err != 0) {
        Fail(err,
             "capset after loading seccomp (the profile must allow capset when "
             "noNewPrivileges is false)");
      }
    }
  }
  syscall(SYS_close_range, 3U, ~0U, CLOSE_RANGE_CLOEXEC);
  int err = ENOENT;
  for (const std::string& path : plan.exec_paths) {
    execve(path.c_str(), plan.argv.data(), plan.envp.data());
    // Keep the most telling error: a found but unusable file beats a missing one.
    if (errno != ENOENT || err == ENOENT) err = errno;
  }
  Fail(err, "executing", plan.args.empty() ? "" : plan.args[0].c_str());
}

}  // namespace kapsel::agent::child
