#include "guest-agent/container/init_plan.h"

#include <sched.h>
#include <stdlib.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
// The protobuf accessors major() and minor() must not meet the macros of the same names.
#undef major
#undef minor

#include <climits>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "guest-agent/container/mount_options.h"
#include "guest-agent/container/process_plan.h"
#include "guest-agent/container/seccomp_filter.h"
#include "guest-agent/container/sysctl.h"

namespace kapsel::agent {
namespace {

absl::Status Unsupported(absl::string_view field) {
  return absl::InvalidArgumentError(absl::StrCat(field, " is not supported by kapsel"));
}

std::string ResolveAgainst(const std::string& dir, const std::string& path) {
  if (path.empty() || path.front() == '/' || dir.empty()) return path;
  return absl::StrCat(dir, "/", path);
}

// Paths inside the container: absolute, without "..".
absl::Status CheckContainerPath(const std::string& path, absl::string_view field) {
  if (path.empty() || path.front() != '/') {
    return absl::InvalidArgumentError(
        absl::StrCat(field, ": \"", path, "\" is not an absolute path"));
  }
  if (path.size() >= PATH_MAX) {
    return absl::InvalidArgumentError(absl::StrCat(field, ": \"", path, "\" is too long"));
  }
  return absl::OkStatus();
}

absl::Status CheckUnsupported(const oci::v1::Spec& spec) {
  const oci::v1::Hooks& hooks = spec.hooks();
  if (!hooks.prestart().empty() || !hooks.create_runtime().empty() ||
      !hooks.create_container().empty() || !hooks.start_container().empty() ||
      !hooks.poststart().empty() || !hooks.poststop().empty()) {
    return Unsupported("hooks");
  }
  const oci::v1::Linux& linux = spec.linux();
  if (!linux.mount_label().empty()) return Unsupported("linux.mountLabel");
  if (linux.has_personality()) return Unsupported("linux.personality");
  if (!linux.time_offsets().empty()) return Unsupported("linux.timeOffsets");
  if (linux.has_intel_rdt()) return Unsupported("linux.intelRdt");
  return absl::OkStatus();
}

absl::StatusOr<std::string> IdMapText(
    const google::protobuf::RepeatedPtrField<oci::v1::IdMapping>& mappings,
    absl::string_view field) {
  std::string text;
  for (const oci::v1::IdMapping& m : mappings) {
    if (m.size() == 0) {
      return absl::InvalidArgumentError(absl::StrCat(field, ": a mapping has size 0"));
    }
    absl::StrAppend(&text, m.container_id(), " ", m.host_id(), " ", m.size(), "\n");
  }
  return text;
}

absl::Status AddMounts(const oci::v1::Spec& spec, const std::string& bundle_dir, InitPlan& plan) {
  bool dev_shm = false;
  for (int i = 0; i < spec.mounts_size(); ++i) {
    const oci::v1::Mount& mount = spec.mounts(i);
    std::string field = absl::StrCat("mounts[", i, "] (", mount.destination(), ")");
    RETURN_IF_ERROR(CheckContainerPath(mount.destination(), field));
    if (!mount.uid_mappings().empty() || !mount.gid_mappings().empty()) {
      return Unsupported(absl::StrCat(field, ".uidMappings/gidMappings (idmapped mounts)"));
    }
    absl::StatusOr<MountOptions> options = ParseMountOptions(mount.options());
    if (!options.ok()) return Annotate(options.status(), field);
    MountStep step;
    step.destination = mount.destination();
    step.flags = options->flags;
    step.propagation = options->propagation;
    if (options->bind || mount.type() == "bind") {
      step.kind = MountKind::kBind;
      step.recursive = options->recursive;
      step.source = ResolveAgainst(bundle_dir, mount.source());
      if (step.source.empty()) {
        return absl::InvalidArgumentError(absl::StrCat(field, ": a bind mount needs a source"));
      }
      if (!options->data.empty()) {
        return absl::InvalidArgumentError(
            absl::StrCat(field, ": options \"", options->data, "\" mean nothing for a bind mount"));
      }
      struct stat st {};
      if (stat(step.source.c_str(), &st) != 0) {
        return ErrnoError(absl::StrCat(field, ": bind source ", step.source));
      }
      step.destination_is_file = !S_ISDIR(st.st_mode);
      step.needs_remount = step.flags != 0;
    } else {
      if (mount.type().empty()) {
        return absl::InvalidArgumentError(absl::StrCat(field, ": the mount has no type"));
      }
      step.kind = MountKind::kFilesystem;
      // The guest is cgroup v2 only: a "cgroup" mount is the cgroup2 filesystem.
      step.type = mount.type() == "cgroup" ? "cgroup2" : mount.type();
      step.source = mount.source().empty() ? step.type : mount.source();
      step.data = options->data;
    }
    if (mount.destination() == "/dev/shm") dev_shm = true;
    plan.mounts.push_back(std::move(step));
  }
  if (!dev_shm) {
    MountStep shm;
    shm.source = "shm";
    shm.type = "tmpfs";
    shm.destination = "/dev/shm";
    shm.flags = MS_NOSUID | MS_NODEV | MS_NOEXEC;
    shm.data = "mode=1777,size=65536k";
    plan.mounts.push_back(std::move(shm));
  }
  return absl::OkStatus();
}

absl::Status AddDevices(const oci::v1::Spec& spec, InitPlan& plan) {
  for (int i = 0; i < spec.linux().devices_size(); ++i) {
    const oci::v1::Device& device = spec.linux().devices(i);
    std::string field = absl::StrCat("linux.devices[", i, "] (", device.path(), ")");
    RETURN_IF_ERROR(CheckContainerPath(device.path(), field));
    DeviceStep step;
    step.path = device.path();
    step.host_path = device.path();
    mode_t type;
    if (device.type() == "c" || device.type() == "u") {
      type = S_IFCHR;
    } else if (device.type() == "b") {
      type = S_IFBLK;
    } else if (device.type() == "p") {
      type = S_IFIFO;
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat(field, ": unknown type \"", device.type(), "\""));
    }
    if (device.major() < 0 || device.minor() < 0 || device.major() > 0xfff ||
        device.minor() > 0xfffff) {
      return absl::InvalidArgumentError(absl::StrCat(field, ": invalid major/minor"));
    }
    uint32_t mode = device.has_file_mode() ? device.file_mode() : 0666;
    if (mode > 07777) {
      return absl::InvalidArgumentError(absl::StrCat(field, ": fileMode has type bits"));
    }
    step.mode = type | mode;
    step.rdev = type == S_IFIFO ? 0 : makedev(device.major(), device.minor());
    step.uid = device.has_uid() ? device.uid() : 0;
    step.gid = device.has_gid() ? device.gid() : 0;
    plan.devices.push_back(std::move(step));
  }
  struct Default {
    const char* path;
    unsigned int major, minor;
  };
  constexpr Default kDefaults[] = {{"/dev/null", 1, 3},    {"/dev/zero", 1, 5},
                                   {"/dev/full", 1, 7},    {"/dev/random", 1, 8},
                                   {"/dev/urandom", 1, 9}, {"/dev/tty", 5, 0}};
  bool ptmx_given = false;
  for (const DeviceStep& step : plan.devices) ptmx_given |= step.path == "/dev/ptmx";
  for (const Default& d : kDefaults) {
    bool given = false;
    for (const DeviceStep& step : plan.devices) given |= step.path == d.path;
    if (given) continue;
    DeviceStep step;
    step.path = d.path;
    step.host_path = d.path;
    step.mode = S_IFCHR | 0666;
    step.rdev = makedev(d.major, d.minor);
    plan.devices.push_back(std::move(step));
  }
  plan.symlinks = {{"/dev/fd", "/proc/self/fd"},
                   {"/dev/stdin", "/proc/self/fd/0"},
                   {"/dev/stdout", "/proc/self/fd/1"},
                   {"/dev/stderr", "/proc/self/fd/2"}};
  if (!ptmx_given) plan.symlinks.push_back({"/dev/ptmx", "pts/ptmx"});
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<BuiltInitPlan> BuildInitPlan(const oci::v1::Spec& spec,
                                            const InitPlanInputs& inputs) {
  RETURN_IF_ERROR(CheckUnsupported(spec));
  if (!spec.has_process()) return absl::InvalidArgumentError("the spec has no process");
  if (!spec.has_linux()) return absl::InvalidArgumentError("the spec has no linux section");
  const oci::v1::Linux& linux = spec.linux();

  BuiltInitPlan built;
  built.plan = std::make_unique<InitPlan>();
  InitPlan& plan = *built.plan;

  ASSIGN_OR_RETURN(built.namespaces, ParseNamespaces(linux.namespaces()));
  const NamespaceSet& ns = built.namespaces;
  if ((ns.new_flags & CLONE_NEWNS) == 0) {
    return absl::InvalidArgumentError(
        "linux.namespaces must include a new mount namespace (without a path)");
  }
  plan.clone_flags = ns.new_flags;
  plan.join_namespaces = ns.joins;
  plan.new_user_namespace = (ns.new_flags & CLONE_NEWUSER) != 0;
  plan.loopback_up = (ns.new_flags & CLONE_NEWNET) != 0;
  if (plan.new_user_namespace) {
    if (linux.uid_mappings().empty() || linux.gid_mappings().empty()) {
      return absl::InvalidArgumentError(
          "a new user namespace needs linux.uidMappings and linux.gidMappings");
    }
    IdMap map;
    ASSIGN_OR_RETURN(map.uid_map, IdMapText(linux.uid_mappings(), "linux.uidMappings"));
    ASSIGN_OR_RETURN(map.gid_map, IdMapText(linux.gid_mappings(), "linux.gidMappings"));
    plan.id_map = std::move(map);
  } else if (!linux.uid_mappings().empty() || !linux.gid_mappings().empty()) {
    return absl::InvalidArgumentError(
        "linux.uidMappings/gidMappings need a new user namespace in linux.namespaces");
  }

  // The rootfs.
  std::string rootfs = inputs.rootfs;
  if (rootfs.empty()) {
    if (spec.root().path().empty()) {
      return absl::InvalidArgumentError("root.path is empty and no rootfs was given");
    }
    rootfs = ResolveAgainst(inputs.bundle_dir, spec.root().path());
  }
  if (rootfs.front() != '/') {
    return absl::InvalidArgumentError(
        absl::StrCat("the rootfs \"", rootfs, "\" is not an absolute path"));
  }
  char resolved[PATH_MAX];
  if (realpath(rootfs.c_str(), resolved) == nullptr) {
    return ErrnoError(absl::StrCat("rootfs ", rootfs));
  }
  plan.rootfs = resolved;
  struct stat st {};
  if (stat(plan.rootfs.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    return absl::InvalidArgumentError(absl::StrCat("rootfs ", plan.rootfs, " is not a directory"));
  }
  if (plan.rootfs == "/") {
    return absl::InvalidArgumentError("the rootfs must not be the agent's own root");
  }
  plan.rootfs_readonly = spec.root().readonly();

  plan.host_propagation = MS_REC | MS_PRIVATE;
  if (!linux.rootfs_propagation().empty()) {
    absl::StatusOr<unsigned long> propagation = ParsePropagation(linux.rootfs_propagation());
    if (!propagation.ok()) return Annotate(propagation.status(), "linux.rootfsPropagation");
    plan.rootfs_propagation = *propagation;
    if (*propagation & (MS_SHARED | MS_SLAVE)) plan.host_propagation = MS_REC | MS_SLAVE;
  }

  RETURN_IF_ERROR(AddMounts(spec, inputs.bundle_dir, plan));
  RETURN_IF_ERROR(AddDevices(spec, plan));
  for (const std::string& path : linux.masked_paths()) {
    RETURN_IF_ERROR(CheckContainerPath(path, "linux.maskedPaths"));
    plan.masked_paths.push_back(path);
  }
  for (const std::string& path : linux.readonly_paths()) {
    RETURN_IF_ERROR(CheckContainerPath(path, "linux.readonlyPaths"));
    plan.readonly_paths.push_back(path);
  }
  ASSIGN_OR_RETURN(plan.sysctls, SysctlSteps(linux.sysctl(), ns.all_flags));

  if (!spec.hostname().empty()) {
    if ((ns.all_flags & CLONE_NEWUTS) == 0) {
      return absl::InvalidArgumentError("hostname needs a uts namespace in linux.namespaces");
    }
    plan.hostname = spec.hostname();
    plan.set_hostname = true;
  }
  if (!spec.domainname().empty()) {
    if ((ns.all_flags & CLONE_NEWUTS) == 0) {
      return absl::InvalidArgumentError("domainname needs a uts namespace in linux.namespaces");
    }
    plan.domainname = spec.domainname();
    plan.set_domainname = true;
  }

  std::optional<SeccompProgram> seccomp;
  if (linux.has_seccomp()) {
    absl::StatusOr<SeccompProgram> program = CompileSeccomp(linux.seccomp());
    if (!program.ok()) return program.status();
    seccomp = std::move(*program);
  }
  ASSIGN_OR_RETURN(std::unique_ptr<ProcessPlan> process,
                   BuildProcessPlan(spec.process(), seccomp, inputs.last_cap));
  plan.process = std::move(*process);
  return built;
}

}  // namespace kapsel::agent
