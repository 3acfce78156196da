// What kapsel-agent does first when it is the VM's init (PID 1): mount the filesystems every
// container needs from the guest, enable the cgroup v2 controllers, and point its output at the
// console.
#ifndef KAPSEL_GUEST_AGENT_PID1_H_
#define KAPSEL_GUEST_AGENT_PID1_H_

#include "absl/status/status.h"

namespace kapsel::agent {

// The initramfs root ("rootfs") cannot be pivoted away from, which every container's pivot_root
// needs. As init started from the initramfs, the agent copies itself to a fresh tmpfs, moves that
// over / and re-executes itself from there. Returns only on failure, or when already done (the
// re-executed agent sees `kRootMovedEnv`).
absl::Status MoveRootToTmpfs(char** argv);
inline constexpr char kRootMovedEnv[] = "KAPSEL_AGENT_ROOT_MOVED";

// Mounts /proc, /sys, /dev (devtmpfs), /dev/pts, /dev/shm, /run, /tmp and cgroup2 at
// /sys/fs/cgroup, opens /dev/console as stdin/stdout/stderr, and enables every available cgroup
// controller for child cgroups.
absl::Status SetUpAsInit();

// Powers the VM off (the VMM's guest is booted with reboot=k: a reboot stops the VM).
[[noreturn]] void PowerOff();

}  // namespace kapsel::agent

#endif  // KAPSEL_GUEST_AGENT_PID1_H_
