// The host cgroup a sandbox's processes run in: kapsel-vmm and virtiofsd start in it, so the
// cgroups above it account for and limit the VM (its guest memory, vCPU time, I/O) as they would
// runc's container. Its path is the linux.cgroupsPath of the container that creates the sandbox:
// where runc would put that container. Under Kubernetes that is the pod sandbox's, inside
// kubelet's pod cgroup, whose limits (the containers' plus the RuntimeClass's pod overhead) then
// bound the whole VM. cgroup v2 only.
#ifndef KAPSEL_SHIM_HOST_CGROUP_H_
#define KAPSEL_SHIM_HOST_CGROUP_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/unique_fd.h"

namespace kapsel::shim {

inline constexpr char kCgroupRoot[] = "/sys/fs/cgroup";

class HostCgroup {
 public:
  // Makes the cgroup `cgroups_path` names (absolute: below `root`; relative: below the shim's own
  // cgroup, as runc reads it) and enables the cpu, io, memory and pids controllers above it where
  // available. Null, with a log line saying why, when there is nothing to do: an empty path, a
  // `root` that is not cgroup v2, or a systemd-style "slice:prefix:name" path (runc asks systemd
  // for those; kapsel does not yet). A path naming the root cgroup itself is an error.
  static absl::StatusOr<std::unique_ptr<HostCgroup>> Create(absl::string_view cgroups_path,
                                                            const std::string& root = kCgroupRoot);
  HostCgroup(const HostCgroup&) = delete;
  HostCgroup& operator=(const HostCgroup&) = delete;
  ~HostCgroup();  // Remove(dir()), a failure logged

  // The cgroup's directory.
  const std::string& dir() const { return dir_; }
  // Its cgroup.procs, open for writing: a process writing "0" to it moves itself in (a child the
  // shim spawns does so before exec, so even its first page is charged here).
  int procs_fd() const { return procs_.get(); }

  // Kills whatever still runs in the cgroup `dir` (cgroup.kill), waits for it to empty and removes
  // it. A missing `dir` is fine (removed already).
  static absl::Status Remove(const std::string& dir);

 private:
  HostCgroup(std::string dir, UniqueFd procs) : dir_(std::move(dir)), procs_(std::move(procs)) {}

  const std::string dir_;
  const UniqueFd procs_;
};

}  // namespace kapsel::shim

#endif  // KAPSEL_SHIM_HOST_CGROUP_H_
