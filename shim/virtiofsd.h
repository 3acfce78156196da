// virtiofsd, the vhost-user backend serving a sandbox's shared directory to its VM.
#ifndef KAPSEL_SHIM_VIRTIOFSD_H_
#define KAPSEL_SHIM_VIRTIOFSD_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "shim/child_process.h"
#include "shim/config.h"

namespace kapsel::shim {

// Starts virtiofsd (config.virtiofsd, cache mode config.virtiofsd_cache) sharing `shared_dir` on
// the vhost-user socket `socket_path`, output appended to `log_path`. The shim binds and listens on
// the socket itself and hands it over (virtiofsd --fd), so it accepts connections from the moment
// this returns: kapsel-vmm can start at once, and its connection waits until virtiofsd answers.
// The shim keeps no copy of the socket: if virtiofsd dies, connecting fails or the connection
// closes. `cgroup_procs_fd`: as for ChildProcess::Spawn.
absl::StatusOr<std::unique_ptr<ChildProcess>> StartVirtiofsd(const Config& config,
                                                             const std::string& shared_dir,
                                                             const std::string& socket_path,
                                                             const std::string& log_path,
                                                             int cgroup_procs_fd = -1);

}  // namespace kapsel::shim

#endif  // KAPSEL_SHIM_VIRTIOFSD_H_
