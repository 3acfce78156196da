#include "shim/guest_spec.h"

#include <algorithm>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/status.h"
#include "shim/log.h"
#include "shim/mounts.h"

namespace kapsel::shim {
namespace {

bool HasOption(const oci::v1::Mount& m, const std::string& option) {
  return std::find(m.options().begin(), m.options().end(), option) != m.options().end();
}

// <pid> of a path /proc/<pid>/ns/<name>.
std::optional<uint32_t> ContainerPidOfPath(const std::string& path) {
  std::vector<std::string> parts = absl::StrSplit(path, '/');
  uint32_t pid = 0;
  if (parts.size() != 5 || !parts[0].empty() || parts[1] != "proc" || parts[3] != "ns" ||
      parts[4].empty() || !absl::SimpleAtoi(parts[2], &pid) || pid == 0) {
    return std::nullopt;
  }
  return pid;
}

}  // namespace

absl::Status MapNamespacesIntoVm(const SandboxNamespaces& sandbox, oci::v1::Spec* spec) {
  auto* namespaces = spec->mutable_linux()->mutable_namespaces();
  for (int i = 0; i < namespaces->size(); ++i) {
    oci::v1::Namespace& ns = (*namespaces)[i];
    if (ns.path().empty()) continue;
    if (std::optional<uint32_t> pid = ContainerPidOfPath(ns.path());
        pid.has_value() && sandbox.container_inits.count(*pid) != 0) {
      continue;  // a namespace of a container in this VM: the same path there
    }
    if (ns.type() == "network") {
      if (sandbox.network_in_vm) {
        LogInfo("the container joins the VM's network namespace (the pod's network) instead of ",
                ns.path());
        namespaces->erase(namespaces->begin() + i--);
      } else if (sandbox.sandbox_init.has_value()) {
        LogInfo("the container joins its pod's network namespace instead of ", ns.path());
        ns.set_path(absl::StrCat("/proc/", *sandbox.sandbox_init, "/ns/net"));
      } else {
        LogInfo("the container gets a network namespace of the VM instead of ", ns.path());
        ns.clear_path();
      }
      continue;
    }
    if (ns.type() == "cgroup") {
      LogInfo("the container gets a cgroup namespace of the VM instead of ", ns.path());
      ns.clear_path();
      continue;
    }
    return absl::UnimplementedError(absl::StrCat(
        "config.json: joining the ", ns.type(), " namespace ", ns.path(),
        " is not supported in a kapsel VM (only namespaces of containers in the same sandbox)"));
  }
  return absl::OkStatus();
}

absl::Status PrepareGuestSpec(const std::string& host_dir, const std::string& guest_dir,
                              const SandboxNamespaces& sandbox, oci::v1::Spec* spec) {
  const oci::v1::Hooks& hooks = spec->hooks();
  if (hooks.prestart_size() + hooks.create_runtime_size() + hooks.create_container_size() +
          hooks.start_container_size() + hooks.poststart_size() + hooks.poststop_size() >
      0) {
    return absl::UnimplementedError("config.json: OCI hooks are not supported by kapsel");
  }
  RETURN_IF_ERROR(MapNamespacesIntoVm(sandbox, spec));
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
