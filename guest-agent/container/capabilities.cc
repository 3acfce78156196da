#include "guest-agent/container/capabilities.h"

#include <linux/capability.h>

#include <fstream>
#include <string>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"

namespace kapsel::agent {
namespace {

struct CapabilityName {
  absl::string_view name;
  int number;
};

#define KAPSEL_CAP(name) \
  { #name, name }
constexpr CapabilityName kCapabilities[] = {
    KAPSEL_CAP(CAP_CHOWN),
    KAPSEL_CAP(CAP_DAC_OVERRIDE),
    KAPSEL_CAP(CAP_DAC_READ_SEARCH),
    KAPSEL_CAP(CAP_FOWNER),
    KAPSEL_CAP(CAP_FSETID),
    KAPSEL_CAP(CAP_KILL),
    KAPSEL_CAP(CAP_SETGID),
    KAPSEL_CAP(CAP_SETUID),
    KAPSEL_CAP(CAP_SETPCAP),
    KAPSEL_CAP(CAP_LINUX_IMMUTABLE),
    KAPSEL_CAP(CAP_NET_BIND_SERVICE),
    KAPSEL_CAP(CAP_NET_BROADCAST),
    KAPSEL_CAP(CAP_NET_ADMIN),
    KAPSEL_CAP(CAP_NET_RAW),
    KAPSEL_CAP(CAP_IPC_LOCK),
    KAPSEL_CAP(CAP_IPC_OWNER),
    KAPSEL_CAP(CAP_SYS_MODULE),
    KAPSEL_CAP(CAP_SYS_RAWIO),
    KAPSEL_CAP(CAP_SYS_CHROOT),
    KAPSEL_CAP(CAP_SYS_PTRACE),
    KAPSEL_CAP(CAP_SYS_PACCT),
    KAPSEL_CAP(CAP_SYS_ADMIN),
    KAPSEL_CAP(CAP_SYS_BOOT),
    KAPSEL_CAP(CAP_SYS_NICE),
    KAPSEL_CAP(CAP_SYS_RESOURCE),
    KAPSEL_CAP(CAP_SYS_TIME),
    KAPSEL_CAP(CAP_SYS_TTY_CONFIG),
    KAPSEL_CAP(CAP_MKNOD),
    KAPSEL_CAP(CAP_LEASE),
    KAPSEL_CAP(CAP_AUDIT_WRITE),
    KAPSEL_CAP(CAP_AUDIT_CONTROL),
    KAPSEL_CAP(CAP_SETFCAP),
    KAPSEL_CAP(CAP_MAC_OVERRIDE),
    KAPSEL_CAP(CAP_MAC_ADMIN),
    KAPSEL_CAP(CAP_SYSLOG),
    KAPSEL_CAP(CAP_WAKE_ALARM),
    KAPSEL_CAP(CAP_BLOCK_SUSPEND),
    KAPSEL_CAP(CAP_AUDIT_READ),
    KAPSEL_CAP(CAP_PERFMON),
    KAPSEL_CAP(CAP_BPF),
    KAPSEL_CAP(CAP_CHECKPOINT_RESTORE),
};
#undef KAPSEL_CAP

absl::StatusOr<uint64_t> SetMask(const google::protobuf::RepeatedPtrField<std::string>& names,
                                 absl::string_view set, int last_cap) {
  uint64_t mask = 0;
  for (const std::string& name : names) {
    absl::StatusOr<int> number = CapabilityNumber(name);
    if (!number.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("process.capabilities.", set, ": unknown capability \"", name, "\""));
    }
    if (*number <= last_cap) mask |= uint64_t{1} << *number;
  }
  return mask;
}

}  // namespace

absl::StatusOr<int> CapabilityNumber(absl::string_view name) {
  for (const CapabilityName& cap : kCapabilities) {
    if (cap.name == name) return cap.number;
  }
  return absl::NotFoundError(absl::StrCat("unknown capability \"", name, "\""));
}

absl::StatusOr<int> LastCapability() {
  std::ifstream file("/proc/sys/kernel/cap_last_cap");
  std::string text;
  int last = 0;
  if (!std::getline(file, text) || !absl::SimpleAtoi(absl::StripAsciiWhitespace(text), &last) ||
      last < 0 || last > 63) {
    return absl::InternalError("cannot read /proc/sys/kernel/cap_last_cap");
  }
  return last;
}

absl::StatusOr<CapabilitySets> CapabilitySetsFromSpec(const oci::v1::Capabilities& caps,
                                                      int last_cap) {
  CapabilitySets sets;
  absl::StatusOr<uint64_t> mask = SetMask(caps.bounding(), "bounding", last_cap);
  if (!mask.ok()) return mask.status();
  sets.bounding = *mask;
  mask = SetMask(caps.effective(), "effective", last_cap);
  if (!mask.ok()) return mask.status();
  sets.effective = *mask;
  mask = SetMask(caps.permitted(), "permitted", last_cap);
  if (!mask.ok()) return mask.status();
  sets.permitted = *mask;
  mask = SetMask(caps.inheritable(), "inheritable", last_cap);
  if (!mask.ok()) return mask.status();
  sets.inheritable = *mask;
  mask = SetMask(caps.ambient(), "ambient", last_cap);
  if (!mask.ok()) return mask.status();
  sets.ambient = *mask;
  if ((sets.effective & ~sets.permitted) != 0) {
    return absl::InvalidArgumentError(
        "process.capabilities: effective capabilities must also be permitted");
  }
  if ((sets.ambient & ~(sets.permitted & sets.inheritable)) != 0) {
    return absl::InvalidArgumentError(
        "process.capabilities: ambient capabilities must also be permitted and inheritable");
  }
  return sets;
}

}  // namespace kapsel::agent
