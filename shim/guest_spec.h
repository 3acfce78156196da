// Turns a bundle's OCI spec (written for the host) into the spec the guest agent runs: host paths
// are shared into the VM and renamed, host namespace paths are dropped or refused.
#ifndef KAPSEL_SHIM_GUEST_SPEC_H_
#define KAPSEL_SHIM_GUEST_SPEC_H_

#include <string>

#include "absl/status/status.h"
#include "common/oci/spec.pb.h"

namespace kapsel::shim {

// `host_dir` is the container's directory in the shared folder, `guest_dir` the same directory
// as the guest sees it.
// - Bind mounts of host paths are bind-mounted to <host_dir>/mounts/<n> and point at
//   <guest_dir>/mounts/<n>.
// - A network (or cgroup) namespace path names a host namespace: dropped, the container gets a
//   namespace of the VM. Other namespace paths and OCI hooks (host programs) are errors.
absl::Status PrepareGuestSpec(const std::string& host_dir, const std::string& guest_dir,
                              oci::v1::Spec* spec);

}  // namespace kapsel::shim

#endif  // KAPSEL_SHIM_GUEST_SPEC_H_
