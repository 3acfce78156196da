#include "guest-agent/container/rlimits.h"

#include <sys/resource.h>

#include "absl/strings/str_cat.h"

namespace kapsel::agent {
namespace {

struct RlimitName {
  absl::string_view name;
  int resource;
};

#define KAPSEL_RLIMIT(name) \
  { #name, name }
constexpr RlimitName kRlimits[] = {
    KAPSEL_RLIMIT(RLIMIT_AS),      KAPSEL_RLIMIT(RLIMIT_CORE),     KAPSEL_RLIMIT(RLIMIT_CPU),
    KAPSEL_RLIMIT(RLIMIT_DATA),    KAPSEL_RLIMIT(RLIMIT_FSIZE),    KAPSEL_RLIMIT(RLIMIT_LOCKS),
    KAPSEL_RLIMIT(RLIMIT_MEMLOCK), KAPSEL_RLIMIT(RLIMIT_MSGQUEUE), KAPSEL_RLIMIT(RLIMIT_NICE),
    KAPSEL_RLIMIT(RLIMIT_NOFILE),  KAPSEL_RLIMIT(RLIMIT_NPROC),    KAPSEL_RLIMIT(RLIMIT_RSS),
    KAPSEL_RLIMIT(RLIMIT_RTPRIO),  KAPSEL_RLIMIT(RLIMIT_RTTIME),   KAPSEL_RLIMIT(RLIMIT_SIGPENDING),
    KAPSEL_RLIMIT(RLIMIT_STACK),
};
#undef KAPSEL_RLIMIT

}  // namespace

absl::StatusOr<int> RlimitResource(absl::string_view name) {
  for (const RlimitName& r : kRlimits) {
    if (r.name == name) return r.resource;
  }
  return absl::NotFoundError(absl::StrCat("unknown rlimit \"", name, "\""));
}

absl::StatusOr<std::vector<RlimitStep>> RlimitSteps(
    const google::protobuf::RepeatedPtrField<oci::v1::Rlimit>& rlimits) {
  std::vector<RlimitStep> steps;
  for (const oci::v1::Rlimit& rlimit : rlimits) {
    absl::StatusOr<int> resource = RlimitResource(rlimit.type());
    if (!resource.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("process.rlimits: unknown type \"", rlimit.type(), "\""));
    }
    for (const RlimitStep& step : steps) {
      if (step.resource == *resource) {
        return absl::InvalidArgumentError(
            absl::StrCat("process.rlimits: ", rlimit.type(), " given twice"));
      }
    }
    if (rlimit.soft() > rlimit.hard()) {
      return absl::InvalidArgumentError(absl::StrCat("process.rlimits: ", rlimit.type(), " soft ",
                                                     rlimit.soft(), " exceeds hard ",
                                                     rlimit.hard()));
    }
    RlimitStep step;
    step.name = rlimit.type();
    step.resource = *resource;
    step.limit.rlim_cur = rlimit.soft();
    step.limit.rlim_max = rlimit.hard();
    steps.push_back(step);
  }
  return steps;
}

}  // namespace kapsel::agent
