// process (args, env, cwd, terminal, user, capabilities, rlimits, no_new_privs, oom_score_adj) to
// a ProcessPlan. Fields kapsel does not support are errors naming the field.
#ifndef KAPSEL_GUEST_AGENT_CONTAINER_PROCESS_PLAN_H_
#define KAPSEL_GUEST_AGENT_CONTAINER_PROCESS_PLAN_H_

#include <memory>
#include <optional>

#include "absl/status/statusor.h"
#include "common/oci/spec.pb.h"
#include "guest-agent/container/plan.h"

namespace kapsel::agent {

// seccomp: the container's compiled profile (linux.seccomp), applied to every process of it.
// The plan is not finalized (ProcessPlan::Finalize) yet.
absl::StatusOr<std::unique_ptr<ProcessPlan>> BuildProcessPlan(
    const oci::v1::Process& process, const std::optional<SeccompProgram>& seccomp, int last_cap);

// The executables execve tries for args[0]: itself when it has a '/', else each directory of the
// PATH in env (or a default PATH).
std::vector<std::string> ExecCandidates(const std::string& arg0,
                                        const std::vector<std::string>& env);

}  // namespace kapsel::agent

#endif  // KAPSEL_GUEST_AGENT_CONTAINER_PROCESS_PLAN_H_
