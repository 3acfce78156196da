// The seccomp filter kapsel-vmm runs its guest under: once the VM is built, every thread (the event
// loop, the vCPU threads) may make only the system calls that running a VM needs. The guest is
// untrusted; a device-emulation bug it exploits must not reach open, execve, ptrace, network
// sockets and the rest of the kernel.
#ifndef KAPSEL_VMM_SECCOMP_VMM_FILTER_H_
#define KAPSEL_VMM_SECCOMP_VMM_FILTER_H_

#include "absl/status/status.h"

namespace kapsel::vmm {

// Installs the allowlist on every thread of the calling process (SECCOMP_FILTER_FLAG_TSYNC) and,
// through inheritance, on every thread created later. Sets no_new_privs. A system call outside the
// list is not made: the process writes "kapsel-vmm: system call N (at 0xADDR) is not allowed by
// the seccomp filter" to stderr and ends with SIGSYS (its handler for SIGSYS is replaced). Call it
// after the VM is wired (every file, device, socket and memory mapping the build needs exists) and
// before the guest runs: from then on the process cannot open files or create anything but Unix
// sockets, eventfds, timerfds and threads.
absl::Status InstallVmmSeccompFilter();

// Runs the lazy one-time initializations that would otherwise read files (/sys) from a running
// VM's threads, where neither the filter nor the jail (vmm/jail) lets them. InstallVmmSeccompFilter
// calls it; call it before EnterJail too.
void WarmUpLazyInitialization();

}  // namespace kapsel::vmm

#endif  // KAPSEL_VMM_SECCOMP_VMM_FILTER_H_
