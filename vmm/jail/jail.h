// The jail kapsel-vmm enters once its VM is built, before the guest runs (with the seccomp filter,
// vmm/seccomp, installed right after it). The filter still lets a running VMM connect to Unix
// sockets, stat and unlink paths: what vsock's guest-to-host connections and the listener's
// teardown need. Without a jail, a guest that took over kapsel-vmm could use those on any path of
// the host, as root (containerd's socket is one connect away). In the jail:
//   - a mount namespace of its own whose root is an empty, read-only tmpfs; the only other things
//     in it are the directories asked for, each bind-mounted at its own path (so paths the VMM
//     already holds, such as the vsock socket's, resolve as before) without the mounts below it;
//   - a network namespace of its own: no interfaces and none of the host's abstract Unix sockets
//     (taps and sockets opened before keep working);
//   - no capabilities left in any set, the bounding set included.
// Like Firecracker's jailer, but entered from inside: every file kapsel-vmm needs is open by then.
#ifndef KAPSEL_VMM_JAIL_JAIL_H_
#define KAPSEL_VMM_JAIL_JAIL_H_

#include <string>
#include <vector>

#include "absl/status/status.h"

namespace kapsel::vmm {

struct JailConfig {
  // Absolute paths of existing directories that stay reachable, read-write.
  std::vector<std::string> visible_dirs;
};

// Confines the calling process as above. It must be single-threaded (a namespace entered by one
// thread of several would confine that thread alone) and have CAP_SYS_ADMIN. The working directory
// becomes "/". On an error the process may be partly confined and should exit.
absl::Status EnterJail(const JailConfig& config);

}  // namespace kapsel::vmm

#endif  // KAPSEL_VMM_JAIL_JAIL_H_
