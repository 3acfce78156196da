// process.rlimits: RLIMIT_* names to resources.
#ifndef KAPSEL_GUEST_AGENT_CONTAINER_RLIMITS_H_
#define KAPSEL_GUEST_AGENT_CONTAINER_RLIMITS_H_

#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/oci/spec.pb.h"
#include "guest-agent/container/plan.h"

namespace kapsel::agent {

// The resource number of a name such as "RLIMIT_NOFILE"; NotFound when unknown.
absl::StatusOr<int> RlimitResource(absl::string_view name);

// The steps for process.rlimits: unknown names, duplicates and soft > hard are errors.
absl::StatusOr<std::vector<RlimitStep>> RlimitSteps(
    const google::protobuf::RepeatedPtrField<oci::v1::Rlimit>& rlimits);

}  // namespace kapsel::agent

#endif  // KAPSEL_GUEST_AGENT_CONTAINER_RLIMITS_H_
