#include "shim/guest_spec.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "shim/log.h"
#include "shim/mounts.h"

namespace kapsel::shim {
namespace {

bool HasOption(const oci::v1::Mount& m, const std::string& option) {
  return std::find(m.options().begin(), m.options().end(), option) != m.options().end();
}

}  // namespace

absl::Status PrepareGuestSpec(const std::string& host_dir, const std::string& guest_dir,
                              oci::v1::Spec* spec) {
  const oci::v1::Hooks& hooks = spec->hooks();
  if (hooks.prestart_size() + hooks.create_runtime_size() + hooks.create_container_size() +
          hooks.start_container_size() + hooks.poststart_size() + hooks.poststop_size() >
      0) {
    return absl::UnimplementedError("config.json: OCI hooks are not supported by kapsel");
  }
  for (oci::v1::Namespace& ns : *spec->mutable_linux()->mutable_namespaces()) {
    if (ns.path().empty()) continue;
    if (ns.type() == "network" || ns.type() == "cgroup") {
      LogInfo("the container gets a ", ns.type(), " namespace of the VM instead of ", ns.path());
      ns.clear_path();
      continue;
    }
    return absl::UnimplementedError(absl::StrCat("config.json: joining the ", ns.type(),
                                                 " namespace ", ns.path(),
                                                 " is not supported in a kapsel VM"));
  }
  int n = 0;
  for (oci::v1::Mount& m : *spec->mutable_mounts()) {
    const bool bind = m.type() == "bind" || HasOption(m, "bind") || HasOption(m, "rbind");
    if (!bind) continue;
    if (m.source().empty() || m.source()[0] != '/') {
      return absl::InvalidArgumentError(absl::StrCat("config.json: bind mount on ", m.destination(),
                                                     " needs an absolute source"));
    }
    const std::string name = absl::StrCat("mounts/", n++);
    RETURN_IF_ERROR(BindMount(m.source(), absl::StrCat(host_dir, "/", name), HasOption(m, "ro")));
    m.set_source(absl::StrCat(guest_dir, "/", name));
  }
  return absl::OkStatus();
}

}  // namespace kapsel::shim
