#include "guest-agent/container/sysctl.h"

#include <sched.h>

#include <algorithm>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"

namespace kapsel::agent {
namespace {

bool ValidName(const std::string& name) {
  if (name.empty() || name.front() == '.' || name.back() == '.') return false;
  if (absl::StrContains(name, "..") || absl::StrContains(name, "/")) return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '.' || c == '-';
  });
}

bool IsIpcSysctl(const std::string& name) {
  return name == "kernel.sem" || absl::StartsWith(name, "kernel.shm") ||
         absl::StartsWith(name, "kernel.msg") || absl::StartsWith(name, "fs.mqueue.");
}

}  // namespace

absl::StatusOr<std::vector<SysctlStep>> SysctlSteps(
    const google::protobuf::Map<std::string, std::string>& sysctls, uint64_t namespace_flags) {
  std::vector<SysctlStep> steps;
  for (const auto& [name, value] : sysctls) {
    if (!ValidName(name)) {
      return absl::InvalidArgumentError(absl::StrCat("linux.sysctl: invalid name \"", name, "\""));
    }
    if (name == "kernel.hostname" || name == "kernel.domainname") {
      return absl::InvalidArgumentError(absl::StrCat(
          "linux.sysctl: ", name, " is set through the spec's hostname/domainname fields"));
    }
    if (absl::StartsWith(name, "net.")) {
      if ((namespace_flags & CLONE_NEWNET) == 0) {
        return absl::InvalidArgumentError(absl::StrCat(
            "linux.sysctl: ", name, " needs its own network namespace (linux.namespaces)"));
      }
    } else if (IsIpcSysctl(name)) {
      if ((namespace_flags & CLONE_NEWIPC) == 0) {
        return absl::InvalidArgumentError(absl::StrCat(
            "linux.sysctl: ", name, " needs its own ipc namespace (linux.namespaces)"));
      }
    } else {
      return absl::InvalidArgumentError(absl::StrCat(
          "linux.sysctl: ", name, " is not namespaced; only net.*, kernel.shm*, kernel.msg*, ",
          "kernel.sem and fs.mqueue.* can be set for a container"));
    }
    steps.push_back({absl::StrCat("/proc/sys/", absl::StrReplaceAll(name, {{".", "/"}})), value});
  }
  std::sort(steps.begin(), steps.end(),
            [](const SysctlStep& a, const SysctlStep& b) { return a.proc_path < b.proc_path; });
  return steps;
}

}  // namespace kapsel::agent
