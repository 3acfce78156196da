// linux.seccomp compiled to a BPF program with libseccomp, in the parent. The child only hands the
// program to seccomp(2), as the last step before execve.
#ifndef KAPSEL_GUEST_AGENT_CONTAINER_SECCOMP_FILTER_H_
#define KAPSEL_GUEST_AGENT_CONTAINER_SECCOMP_FILTER_H_

#include "absl/status/statusor.h"
#include "common/oci/spec.pb.h"
#include "guest-agent/container/plan.h"

namespace kapsel::agent {

// Compiles the profile: default action (with defaultErrnoRet), architectures (the native one is
// always included), per-syscall actions with errnoRet and argument comparisons, flags. Syscall
// names this libseccomp/kernel does not know are skipped (profiles list syscalls of newer
// kernels); unknown actions, operators, architectures and flags are errors, and so are
// SCMP_ACT_NOTIFY and listenerPath (no seccomp agent in kapsel).
absl::StatusOr<SeccompProgram> CompileSeccomp(const oci::v1::Seccomp& seccomp);

}  // namespace kapsel::agent

#endif  // KAPSEL_GUEST_AGENT_CONTAINER_SECCOMP_FILTER_H_
