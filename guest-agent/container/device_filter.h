// linux.resources.devices on cgroup v2: the rules become a BPF_PROG_TYPE_CGROUP_DEVICE program
// attached to the container's cgroup.
//
// Semantics: the last matching rule decides; no matching rule allows (as a new cgroup v1 device
// cgroup inherits "a *:* rwm"), so specs start with a deny-all rule. An allow rule matches when
// it covers every requested access, a deny rule when it covers any of them (an access split over
// several allow rules is denied: conservative).
#ifndef KAPSEL_GUEST_AGENT_CONTAINER_DEVICE_FILTER_H_
#define KAPSEL_GUEST_AGENT_CONTAINER_DEVICE_FILTER_H_

#include <linux/bpf.h>

#include <vector>

#include "absl/status/statusor.h"
#include "common/oci/spec.pb.h"
#include "common/unique_fd.h"

namespace kapsel::agent {

using DeviceRules = google::protobuf::RepeatedPtrField<oci::v1::DeviceCgroup>;

// Checks types (a, c, b) and access strings (r, w, m).
absl::Status CheckDeviceRules(const DeviceRules& rules);

// One eBPF instruction, laid out as struct bpf_insn (without its bit-fields).
struct BpfInstruction {
  uint8_t code;
  uint8_t regs;  // dst in the low nibble, src in the high one
  int16_t off;
  int32_t imm;
};
static_assert(sizeof(BpfInstruction) == sizeof(bpf_insn));

// The program for the rules (empty rules: an empty program).
absl::StatusOr<std::vector<BpfInstruction>> CompileDeviceRules(const DeviceRules& rules);

// `rules` followed by allow rules for the devices every container gets (the OCI runtime spec's
// default devices: null, zero, full, random, urandom, tty, console, ptmx, and /dev/pts/*), so a
// deny-all rule (containerd's and runc's default specs have only that) leaves them usable, as
// runc does. Empty rules stay empty (no device program at all).
DeviceRules WithDefaultDevices(const DeviceRules& rules);

// Loads the program for WithDefaultDevices(`rules`) and attaches it to the cgroup; a program
// attached before (*attached) is detached afterwards and *attached replaced. Empty rules change
// nothing.
absl::Status ApplyDeviceRules(const DeviceRules& rules, int cgroup_fd, UniqueFd* attached);

}  // namespace kapsel::agent

#endif  // KAPSEL_GUEST_AGENT_CONTAINER_DEVICE_FILTER_H_
