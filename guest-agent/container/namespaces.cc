#include "guest-agent/container/namespaces.h"

#include <sched.h>

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace kapsel::agent {

absl::StatusOr<uint64_t> NamespaceFlag(absl::string_view type) {
  if (type == "pid") return CLONE_NEWPID;
  if (type == "network") return CLONE_NEWNET;
  if (type == "mount") return CLONE_NEWNS;
  if (type == "ipc") return CLONE_NEWIPC;
  if (type == "uts") return CLONE_NEWUTS;
  if (type == "user") return CLONE_NEWUSER;
  if (type == "cgroup") return CLONE_NEWCGROUP;
  if (type == "time") {
    return absl::InvalidArgumentError(
        "linux.namespaces: the time namespace is not supported (nor linux.timeOffsets)");
  }
  return absl::InvalidArgumentError(
      absl::StrCat("linux.namespaces: unknown namespace type \"", type, "\""));
}

absl::StatusOr<NamespaceSet> ParseNamespaces(
    const google::protobuf::RepeatedPtrField<oci::v1::Namespace>& namespaces) {
  NamespaceSet set;
  for (const oci::v1::Namespace& ns : namespaces) {
    absl::StatusOr<uint64_t> flag = NamespaceFlag(ns.type());
    if (!flag.ok()) return flag.status();
    if (set.all_flags & *flag) {
      return absl::InvalidArgumentError(
          absl::StrCat("linux.namespaces: \"", ns.type(), "\" is given twice"));
    }
    set.all_flags |= *flag;
    if (ns.path().empty()) {
      set.new_flags |= *flag;
    } else {
      if (ns.path().front() != '/') {
        return absl::InvalidArgumentError(absl::StrCat("linux.namespaces: the ", ns.type(),
                                                       " namespace path \"", ns.path(),
                                                       "\" is not absolute"));
      }
      set.joins.push_back({static_cast<int>(*flag), ns.path()});
    }
  }
  // Join the user namespace first: the others are owned by it, and its capabilities let the
  // process join them.
  std::stable_partition(set.joins.begin(), set.joins.end(),
                        [](const JoinNamespace& j) { return j.clone_flag == CLONE_NEWUSER; });
  return set;
}

}  // namespace kapsel::agent
