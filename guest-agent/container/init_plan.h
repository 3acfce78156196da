// The whole OCI spec to the plan of a container's init: namespaces, id mappings, rootfs, mounts,
// devices, masked/read-only paths, sysctls, hostname and the process. Everything is checked here,
// before any process exists; unsupported fields are errors that name the field.
#ifndef KAPSEL_GUEST_AGENT_CONTAINER_INIT_PLAN_H_
#define KAPSEL_GUEST_AGENT_CONTAINER_INIT_PLAN_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "common/oci/spec.pb.h"
#include "guest-agent/container/namespaces.h"
#include "guest-agent/container/plan.h"

namespace kapsel::agent {

struct InitPlanInputs {
  std::string bundle_dir;  // relative root.path and mount sources are resolved against it
  std::string rootfs;      // absolute; overrides root.path when set
  int last_cap = 40;
};

struct BuiltInitPlan {
  std::unique_ptr<InitPlan> plan;
  NamespaceSet namespaces;
};

absl::StatusOr<BuiltInitPlan> BuildInitPlan(const oci::v1::Spec& spec,
                                            const InitPlanInputs& inputs);

}  // namespace kapsel::agent

#endif  // KAPSEL_GUEST_AGENT_CONTAINER_INIT_PLAN_H_
