// linux.namespaces: which namespaces the container gets new, and which it joins by path.
#ifndef KAPSEL_GUEST_AGENT_CONTAINER_NAMESPACES_H_
#define KAPSEL_GUEST_AGENT_CONTAINER_NAMESPACES_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/oci/spec.pb.h"
#include "guest-agent/container/plan.h"

namespace kapsel::agent {

struct NamespaceSet {
  uint64_t new_flags = 0;            // CLONE_NEW* created for the container
  std::vector<JoinNamespace> joins;  // joined by path; the user namespace first
  uint64_t all_flags = 0;            // new_flags and the joined ones
};

// The CLONE_NEW* flag of a namespace type (pid, network, mount, ipc, uts, user, cgroup);
// "time" and unknown types are errors.
absl::StatusOr<uint64_t> NamespaceFlag(absl::string_view type);

// Parses the list; a type given twice is an error.
absl::StatusOr<NamespaceSet> ParseNamespaces(
    const google::protobuf::RepeatedPtrField<oci::v1::Namespace>& namespaces);

}  // namespace kapsel::agent

#endif  // KAPSEL_GUEST_AGENT_CONTAINER_NAMESPACES_H_
