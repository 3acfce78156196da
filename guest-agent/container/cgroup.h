// A container's cgroup v2 directory: creation (with the controllers its limits need), limits,
// membership, freezing, killing, statistics and removal.
#ifndef KAPSEL_GUEST_AGENT_CONTAINER_CGROUP_H_
#define KAPSEL_GUEST_AGENT_CONTAINER_CGROUP_H_

#include <sys/types.h>

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/unique_fd.h"
#include "guest-agent/container/cgroup_resources.h"

namespace kapsel::agent {

// Figures from the cgroup's interface files; a field is unset when its file does not exist (its
// controller is not enabled). Limits that read "max" are kUnlimited.
struct CgroupStats {
  static constexpr uint64_t kUnlimited = UINT64_MAX;
  std::optional<uint64_t> memory_current;
  std::optional<uint64_t> memory_max;
  std::map<std::string, uint64_t> memory_stat;
  std::optional<uint64_t> cpu_usage_usec;
  std::optional<uint64_t> cpu_user_usec;
  std::optional<uint64_t> cpu_system_usec;
  std::optional<uint64_t> pids_current;
  std::optional<uint64_t> pids_max;
  struct IoDevice {
    uint32_t major = 0;
    uint32_t minor = 0;
    std::map<std::string, uint64_t> values;  // rbytes, wbytes, rios, wios, dbytes, dios
  };
  std::vector<IoDevice> io;
};

class Cgroup {
 public:
  // Creates `root`/`relative_path` (and missing parents). relative_path must not contain "..".
  // Fails if the directory already exists (another container owns it).
  static absl::StatusOr<std::unique_ptr<Cgroup>> Create(const std::string& root,
                                                        const std::string& relative_path);
  // Removes the directories Create made (best effort; Remove() reports errors).
  ~Cgroup();
  Cgroup(const Cgroup&) = delete;
  Cgroup& operator=(const Cgroup&) = delete;

  const std::string& path() const { return path_; }
  // An O_DIRECTORY fd of the cgroup (for clone3 CLONE_INTO_CGROUP).
  int dir_fd() const { return dir_fd_.get(); }

  // Writes each value; the controllers they need are enabled in the ancestors' subtree_control
  // first. A controller that is not available is a FailedPrecondition naming it and the field.
  absl::Status Apply(const std::vector<CgroupWrite>& writes);

  absl::StatusOr<std::vector<pid_t>> Procs() const;
  absl::StatusOr<bool> Populated() const;
  // Writes cgroup.freeze and waits until cgroup.events says frozen accordingly.
  absl::Status SetFrozen(bool frozen, absl::Duration timeout);
  // Kills every process (cgroup.kill, or SIGKILL to each one on kernels without it) and waits
  // until the cgroup is empty.
  absl::Status KillAll(absl::Duration timeout);
  absl::StatusOr<CgroupStats> Stats() const;
  // Removes the cgroup and the parents Create made (parents still in use are left). Idempotent.
  absl::Status Remove();

 private:
  Cgroup(std::string root, std::string path, std::vector<std::string> created, UniqueFd dir_fd)
      : root_(std::move(root)),
        path_(std::move(path)),
        created_(std::move(created)),
        dir_fd_(std::move(dir_fd)) {}
  absl::Status EnableController(const std::string& controller, const std::string& field);
  absl::StatusOr<std::string> ReadEventsField(const std::string& key) const;

  std::string root_;
  std::string path_;
  std::vector<std::string> created_;  // directories made by Create, outermost first
  UniqueFd dir_fd_;
  bool removed_ = false;
};

// Small file helpers shared with the container code.
absl::StatusOr<std::string> ReadSmallFile(const std::string& path);
absl::Status WriteSmallFile(const std::string& path, absl::string_view value);

}  // namespace kapsel::agent

#endif  // KAPSEL_GUEST_AGENT_CONTAINER_CGROUP_H_
