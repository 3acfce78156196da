// One sandbox = one microVM: virtiofsd sharing the sandbox's directory, kapsel-vmm booting the
// guest kernel with the agent as init, and the ttrpc connection to that agent over hybrid vsock.
//
// Host state lives in <state_dir>/<namespace>/<sandbox id>/ (SandboxPaths): vm/ with the vsock
// socket (all that a jailed kapsel-vmm sees of the host), the virtiofsd socket, logs, the pid files
// `delete` uses to clean up after a dead shim, and shared/, the directory the guest mounts at
// kGuestSharedDir (containers' rootfs and bind mounts go there).
#ifndef KAPSEL_SHIM_SANDBOX_H_
#define KAPSEL_SHIM_SANDBOX_H_

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "common/ttrpc/client.h"
#include "google/protobuf/message.h"
#include "shim/child_process.h"
#include "shim/config.h"
#include "shim/host_cgroup.h"
#include "shim/pod_network.h"
#include "shim/vm_resources.h"

namespace kapsel::shim {

inline constexpr char kSharedTag[] = "kapsel";
inline constexpr char kGuestSharedDir[] = "/run/kapsel/shared";
inline constexpr uint32_t kGuestCid = 3;

struct SandboxPaths {
  explicit SandboxPaths(std::string dir);
  std::string dir;
  std::string vm_dir;     // the one directory a jailed kapsel-vmm still sees
  std::string vsock;      // kapsel-vmm's hybrid vsock socket, in vm_dir
  std::string fs_socket;  // virtiofsd's vhost-user socket
  std::string shared;     // shared with the guest (virtio-fs tag kSharedTag)
  std::string console;    // the guest's serial console
  std::string vmm_log;    // kapsel-vmm's own messages
  std::string virtiofsd_log;
  std::string vmm_pid;  // pid files for `delete`
  std::string virtiofsd_pid;
  std::string cgroup;  // the host cgroup's directory, if the sandbox has one (HostCgroup)
  std::string agent_endpoint() const;  // "hvsock:<vsock>:1024"
};

// A virtio-blk disk of the VM: a block device or an image file on the host.
struct VmDisk {
  std::string path;
  bool read_only = false;
};
// The guest's device node for the `index`th disk (/dev/vda, /dev/vdb, ...).
std::string GuestDiskDevice(size_t index);

// <state_dir>/<namespace>/<sandbox id>
std::string SandboxDir(const Config& config, const std::string& ns, const std::string& id);

class Sandbox {
 public:
  // Called once, on the sandbox's watcher thread, when kapsel-vmm exits for any reason.
  using VmExitCallback = std::function<void(int exit_code)>;

  // Boots a VM of `size` (vCPUs and memory; config's own are not used) with `disks` and the pod's
  // `network` (null or empty: no network device) and waits (up to config.boot_timeout) for the
  // agent; then CreateSandbox with `hostname` and the network's interfaces and routes. The
  // sandbox owns the network and detaches it when it stops. On error everything started is
  // stopped and removed; the message carries the end of the guest console. kapsel-vmm and
  // virtiofsd run in the host cgroup `cgroups_path` names (HostCgroup; empty: the shim's).
  static absl::StatusOr<std::unique_ptr<Sandbox>> Start(
      const Config& config, const VmResources& size, SandboxPaths paths, const std::string& id,
      const std::string& hostname, const std::vector<VmDisk>& disks,
      std::unique_ptr<PodNetwork> network, const std::string& cgroups_path, VmExitCallback on_exit);
  Sandbox(const Sandbox&) = delete;
  Sandbox& operator=(const Sandbox&) = delete;
  ~Sandbox();  // Stop()

  const SandboxPaths& paths() const { return paths_; }
  bool vm_running() const { return !vm_exited_.load(); }
  // Whether the pod's network was moved into the VM.
  bool has_network() const { return has_network_; }

  // One agent RPC (kapsel.agent.v1.Agent/method). Unavailable once the VM is gone.
  absl::Status Call(const std::string& method, const google::protobuf::Message& request,
                    google::protobuf::Message* response,
                    absl::Duration timeout = absl::Seconds(30));

  // Powers the VM off (DestroySandbox, then signals), stops virtiofsd, detaches the pod network,
  // unmounts and removes the sandbox directory. Idempotent.
  void Stop();

  // The last `max_bytes` of the guest console (for error messages).
  std::string ConsoleTail(size_t max_bytes = 2048) const;

 private:
  explicit Sandbox(SandboxPaths paths) : paths_(std::move(paths)) {}
  absl::Status Boot(const Config& config, const VmResources& size, const std::string& id,
                    const std::string& hostname, const std::vector<VmDisk>& disks,
                    const std::string& cgroups_path);

  const SandboxPaths paths_;
  std::unique_ptr<PodNetwork> network_;  // may be null; reset by Stop
  std::unique_ptr<HostCgroup> cgroup_;   // may be null; reset by Stop, after its processes
  bool has_network_ = false;             // set once, before the sandbox is shared
  std::unique_ptr<ChildProcess> virtiofsd_;
  std::unique_ptr<ChildProcess> vmm_;
  std::unique_ptr<ttrpc::Client> agent_;
  std::thread watcher_;
  std::atomic<bool> vm_exited_{false};
  std::atomic<bool> stopped_{false};
  VmExitCallback on_exit_;
};

// What `delete` does for a shim that is gone: kills the VMM and virtiofsd named by the pid files
// (only if they still run for this sandbox), unmounts and removes the directory.
absl::Status CleanUpSandboxDir(const std::string& dir);

}  // namespace kapsel::shim

#endif  // KAPSEL_SHIM_SANDBOX_H_
