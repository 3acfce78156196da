#include "shim/virtiofsd.h"

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "common/ttrpc/address.h"

namespace kapsel::shim {

absl::StatusOr<std::unique_ptr<ChildProcess>> StartVirtiofsd(const Config& config,
                                                             const std::string& shared_dir,
                                                             const std::string& socket_path,
                                                             const std::string& log_path,
                                                             int cgroup_procs_fd) {
  // One client: kapsel-vmm.
  absl::StatusOr<UniqueFd> listener = ttrpc::ListenUnix(socket_path, /*backlog=*/1);
  if (!listener.ok()) return Annotate(listener.status(), "virtiofsd's vhost-user socket");
  // The child gets the listener under the same number; this copy closes on return.
  return ChildProcess::Spawn(
      {config.virtiofsd, absl::StrCat("--fd=", listener->get()), "-o",
       absl::StrCat("source=", shared_dir), "-o", absl::StrCat("cache=", config.virtiofsd_cache)},
      log_path, {listener->get()}, cgroup_procs_fd);
}

}  // namespace kapsel::shim
