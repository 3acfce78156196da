// The prepared plan a container's child processes run on. The parent (the agent) validates the OCI
// spec and turns it into these structures: every string, number and BPF program is computed before
// any process is cloned, so the code in the child (child_*.cc) only reads the plan and makes
// system calls. It never allocates, which keeps it safe in a child cloned from a multi-threaded
// agent (and under ASan).
#ifndef KAPSEL_GUEST_AGENT_CONTAINER_PLAN_H_
#define KAPSEL_GUEST_AGENT_CONTAINER_PLAN_H_

#include <linux/filter.h>
#include <sys/resource.h>
#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace kapsel::agent {

// The five capability sets as bit masks (bit N = capability N).
struct CapabilitySets {
  uint64_t bounding = 0;
  uint64_t effective = 0;
  uint64_t permitted = 0;
  uint64_t inheritable = 0;
  uint64_t ambient = 0;
};

struct RlimitStep {
  std::string name;  // RLIMIT_*, for errors
  int resource = 0;
  struct rlimit limit = {};
};

// A compiled seccomp filter: the BPF program libseccomp produced and the seccomp(2) flags.
struct SeccompProgram {
  std::vector<sock_filter> instructions;
  unsigned int flags = 0;
};

// What a container process (the init or an exec'd process) does right before execve.
struct ProcessPlan {
  // Candidate executables, tried in order (args[0] searched in the process's PATH).
  std::vector<std::string> exec_paths;
  std::vector<std::string> args;
  std::vector<std::string> env;
  // NULL-terminated pointer arrays into args/env (filled by Finalize()).
  std::vector<char*> argv;
  std::vector<char*> envp;

  std::string cwd;
  bool terminal = false;
  unsigned short console_rows = 0;
  unsigned short console_cols = 0;

  uid_t uid = 0;
  gid_t gid = 0;
  std::vector<gid_t> additional_gids;
  mode_t umask = 022;

  std::optional<CapabilitySets> capabilities;  // unset: capabilities are left as they are
  int last_cap = 40;                           // /proc/sys/kernel/cap_last_cap
  bool no_new_privileges = false;
  std::optional<SeccompProgram> seccomp;
  std::vector<RlimitStep> rlimits;
  std::string oom_score_adj;  // empty: leave it

  // Points argv/envp at the strings. Call after the strings are final; the plan must not be
  // copied afterwards (the pointers would refer to the original).
  void Finalize();
};

enum class MountKind { kFilesystem, kBind };

struct MountStep {
  MountKind kind = MountKind::kFilesystem;
  std::string source;       // a host path for binds; the filesystem's source otherwise
  std::string destination;  // absolute, inside the rootfs
  std::string type;
  unsigned long flags = 0;        // mount flags (without propagation flags)
  bool recursive = false;         // rbind
  unsigned long propagation = 0;  // MS_SHARED/MS_SLAVE/MS_PRIVATE/MS_UNBINDABLE [| MS_REC], or 0
  std::string data;
  bool destination_is_file = false;  // bind of a non-directory: the mount point is a file
  // After a bind: remount with these flags (MS_REMOUNT | MS_BIND | flags) when they say anything.
  bool needs_remount = false;
};

struct DeviceStep {
  std::string path;  // absolute, inside the rootfs
  mode_t mode = 0;   // S_IFCHR/S_IFBLK/S_IFIFO | permissions
  dev_t rdev = 0;
  uid_t uid = 0;
  gid_t gid = 0;
  std::string host_path;  // bound instead when mknod is not permitted (user namespace)
};

struct SymlinkStep {
  std::string path;
  std::string target;
};

struct SysctlStep {
  std::string proc_path;  // /proc/sys/...
  std::string value;
};

// A namespace joined by path (setns).
struct JoinNamespace {
  int clone_flag = 0;
  std::string path;
};

struct IdMap {
  std::string uid_map;  // uid_map file contents, one "inside outside count" line per mapping
  std::string gid_map;
};

// Everything the container's init process does, in order.
struct InitPlan {
  uint64_t clone_flags = 0;                    // CLONE_NEW* namespaces created for the init
  std::vector<JoinNamespace> join_namespaces;  // user namespace first
  std::optional<IdMap> id_map;                 // written by the parent when a user ns is new
  bool new_user_namespace = false;
  bool loopback_up = false;  // a new network namespace: its lo is brought up

  std::string rootfs;  // absolute host path
  bool rootfs_readonly = false;
  unsigned long rootfs_propagation = 0;  // applied to the container's / (0: private)
  unsigned long host_propagation = 0;  // first applied to the whole tree: MS_REC | MS_PRIVATE/SLAVE
  std::vector<MountStep> mounts;       // the spec's, then defaults (/dev/shm) it does not cover
  std::vector<DeviceStep> devices;
  std::vector<SymlinkStep> symlinks;
  std::vector<std::string> masked_paths;
  std::vector<std::string> readonly_paths;
  std::vector<SysctlStep> sysctls;
  std::string hostname;
  bool set_hostname = false;
  std::string domainname;
  bool set_domainname = false;

  ProcessPlan process;
};

}  // namespace kapsel::agent

#endif  // KAPSEL_GUEST_AGENT_CONTAINER_PLAN_H_
