// What kapsel-agent does first when it is the VM's init (PID 1): mount the filesystems every
// container needs from the guest, enable the cgroup v2 controllers, and point its output at the
// console.
#ifndef KAPSEL_GUEST_AGENT_PID1_H_
#define KAPSEL_GUEST_AGENT_PID1_H_

#include "absl/status/status.h"

namespace kapsel::agent {

// The initramfs root ("rootfs") cannot be pivoted away from, which every container's pivot_root
// needs. As init started from the initramfs, the agent bind-mounts that root, moves the bind mount
// over / and chroots into it: the same files (the agent binary is not copied, so the guest keeps
// one copy of it), on a mount that pivot_root accepts. Nothing to do when / is not the initramfs
// (booted from a root image).
absl::Status LeaveInitramfsRoot();

// Mounts /proc, /sys, /dev (devtmpfs), /dev/pts, /dev/shm, /run, /tmp and cgroup2 at
// /sys/fs/cgroup, opens /dev/console as stdin/stdout/stderr, and enables every available cgroup
// controller for child cgroups.
absl::Status SetUpAsInit();

// Powers the VM off (the VMM's guest is booted with reboot=k: a reboot stops the VM).
[[noreturn]] void PowerOff();

}  // namespace kapsel::agent

#endif  // KAPSEL_GUEST_AGENT_PID1_H_
