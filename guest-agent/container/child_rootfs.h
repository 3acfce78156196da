// The container's filesystem view, built by its init in its new mount namespace (child side).
#ifndef KAPSEL_GUEST_AGENT_CONTAINER_CHILD_ROOTFS_H_
#define KAPSEL_GUEST_AGENT_CONTAINER_CHILD_ROOTFS_H_

#include "guest-agent/container/plan.h"

namespace kapsel::agent::child {

// Propagation, the rootfs bind mount, the spec's mounts, devices and symlinks, then pivot_root
// into the rootfs and detaching the old root. Afterwards the cwd is the new /.
void SetupRootfs(const InitPlan& plan);

// After pivot_root: sysctls.
void WriteSysctls(const InitPlan& plan);

// Binds the pty slave (/dev/pts/N) over /dev/console.
void BindConsole(int pts_number);

// Masked and read-only paths, the read-only root, the root's propagation.
void FinishRootfs(const InitPlan& plan);

}  // namespace kapsel::agent::child

#endif  // KAPSEL_GUEST_AGENT_CONTAINER_CHILD_ROOTFS_H_
