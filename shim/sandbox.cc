#include "shim/sandbox.h"

#include <signal.h>
#include <sys/mount.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "common/agent/agent.pb.h"
#include "common/agent/dialer.h"
#include "common/status.h"
#include "shim/files.h"
#include "shim/log.h"
#include "shim/mounts.h"
#include "shim/virtiofsd.h"

namespace kapsel::shim {
namespace {

constexpr char kAgentService[] = "kapsel.agent.v1.Agent";
constexpr uint32_t kAgentPort = 1024;

// Unmounts and removes a sandbox's directory, then its namespace's directory if that is now empty.
absl::Status RemoveSandboxDir(const std::string& dir) {
  absl::Status status = UnmountAll(dir);
  status.Update(RemoveTree(dir));
  RemoveDirIfEmpty(std::filesystem::path(dir).parent_path());
  return status;
}

}  // namespace

SandboxPaths::SandboxPaths(std::string d)
    : dir(std::move(d)),
      vm_dir(dir + "/vm"),
      vsock(vm_dir + "/sock"),
      fs_socket(dir + "/fs.sock"),
      shared(dir + "/shared"),
      console(dir + "/console.log"),
      vmm_log(dir + "/vmm.log"),
      virtiofsd_log(dir + "/virtiofsd.log"),
      vmm_pid(dir + "/vmm.pid"),
      virtiofsd_pid(dir + "/virtiofsd.pid"),
      cgroup(dir + "/cgroup") {}

std::string SandboxPaths::agent_endpoint() const {
  return absl::StrCat("hvsock:", vsock, ":", kAgentPort);
}

std::string GuestDiskDevice(size_t index) {
  return absl::StrCat("/dev/vd", std::string(1, static_cast<char>('a' + index)));
}

std::string SandboxDir(const Config& config, const std::string& ns, const std::string& id) {
  return absl::StrCat(config.state_dir, "/", ns, "/", id);
}

absl::StatusOr<std::unique_ptr<Sandbox>> Sandbox::Start(
    const Config& config, const VmResources& size, SandboxPaths paths, const std::string& id,
    const std::string& hostname, const std::vector<VmDisk>& disks,
    std::unique_ptr<PodNetwork> network, const std::string& cgroups_path, VmExitCallback on_exit) {
  std::unique_ptr<Sandbox> sandbox(new Sandbox(std::move(paths)));
  sandbox->on_exit_ = std::move(on_exit);
  sandbox->has_network_ = network != nullptr && !network->empty();
  sandbox->network_ = std::move(network);
  absl::Status status = sandbox->Boot(config, size, id, hostname, disks, cgroups_path);
  if (!status.ok()) {
    const std::string console = sandbox->ConsoleTail();
    sandbox->Stop();
    if (!console.empty()) {
      status = Annotate(status, absl::StrCat("guest console ends with:\n", console, "\n"));
    }
    return Annotate(status, absl::StrCat("starting sandbox ", id));
  }
  return sandbox;
}

absl::Status Sandbox::Boot(const Config& config, const VmResources& size, const std::string& id,
                           const std::string& hostname, const std::vector<VmDisk>& disks,
                           const std::string& cgroups_path) {
  if (disks.size() > 26) return absl::InvalidArgumentError("more than 26 disks for one VM");
  RETURN_IF_ERROR(MkdirAll(paths_.shared));
  RETURN_IF_ERROR(MkdirAll(paths_.vm_dir));
  // shared/ becomes its own shared mount: what is mounted below it later (a pod's next container)
  // propagates into virtiofsd's mount namespace.
  if (mount(paths_.shared.c_str(), paths_.shared.c_str(), nullptr, MS_BIND, nullptr) != 0 ||
      mount(nullptr, paths_.shared.c_str(), nullptr, MS_SHARED, nullptr) != 0) {
    return ErrnoError(absl::StrCat("make ", paths_.shared, " a shared mount"));
  }

  ASSIGN_OR_RETURN(cgroup_, HostCgroup::Create(cgroups_path));
  const int cgroup_procs = cgroup_ != nullptr ? cgroup_->procs_fd() : -1;
  if (cgroup_ != nullptr) RETURN_IF_ERROR(WriteFile(paths_.cgroup, cgroup_->dir()));

  // virtiofsd and kapsel-vmm start together: virtiofsd's socket accepts from the start, and
  // kapsel-vmm's first vhost-user request waits for its answer.
  ASSIGN_OR_RETURN(virtiofsd_, StartVirtiofsd(config, paths_.shared, paths_.fs_socket,
                                              paths_.virtiofsd_log, cgroup_procs));
  RETURN_IF_ERROR(WriteFile(paths_.virtiofsd_pid, absl::StrCat(virtiofsd_->pid())));

  // The agent's root image (persistent memory, DAX), or else its initramfs.
  const bool from_image = !config.image.empty();
  std::vector<std::string> argv = {config.vmm,
                                   "--kernel",
                                   config.kernel,
                                   from_image ? "--pmem" : "--initrd",
                                   from_image ? absl::StrCat(config.image, ",root") : config.initrd,
                                   "--mem",
                                   absl::StrCat(size.memory_mib),
                                   "--vcpus",
                                   absl::StrCat(size.vcpus),
                                   "--console",
                                   paths_.console,
                                   "--vsock",
                                   absl::StrCat(kGuestCid, ",", paths_.vsock),
                                   "--fs",
                                   absl::StrCat(kSharedTag, ",", paths_.fs_socket)};
  for (const VmDisk& disk : disks) {
    argv.push_back("--disk");
    argv.push_back(disk.read_only ? absl::StrCat(disk.path, ",ro") : disk.path);
  }
  std::vector<int> inherit_fds;
  if (network_ != nullptr) {
    for (const std::string& net : network_->VmmNetArgs()) {
      argv.push_back("--net");
      argv.push_back(net);
    }
    inherit_fds = network_->tap_fds();
  }
  if (config.free_page_reporting) argv.push_back("--free-page-reporting");
  if (!config.share_kernel_text) argv.push_back("--private-kernel");
  if (config.jail) argv.push_back("--jail");
  if (!config.kernel_cmdline.empty()) {
    argv.push_back("--cmdline");
    argv.push_back(config.kernel_cmdline);
  }
  ASSIGN_OR_RETURN(vmm_, ChildProcess::Spawn(argv, paths_.vmm_log, inherit_fds, cgroup_procs));
  RETURN_IF_ERROR(WriteFile(paths_.vmm_pid, absl::StrCat(vmm_->pid())));
  LogInfo("sandbox ", id, ": kapsel-vmm pid ", vmm_->pid(), " (", size.ToString(),
          "), virtiofsd pid ", virtiofsd_->pid());

  // The agent answers once the guest booted; until then connects fail.
  const absl::Time started = absl::Now();
  const absl::Time deadline = started + config.boot_timeout;
  absl::Status last = absl::UnavailableError("no attempt");
  int tries = 0;
  while (true) {
    if (std::optional<int> code = vmm_->Wait(absl::ZeroDuration())) {
      std::string error =
          absl::StrCat("kapsel-vmm exited with status ", *code, " before the agent answered: ",
                       absl::StripTrailingAsciiWhitespace(ReadTail(paths_.vmm_log, 1024)));
      // kapsel-vmm fails when virtiofsd failed first (it could not connect, or its connection
      // closed): say why.
      if (std::optional<int> fsd = virtiofsd_->Wait(absl::ZeroDuration()); fsd && *fsd != 0) {
        const std::string log = ReadTail(paths_.virtiofsd_log, 1024);
        absl::StrAppend(&error, "; virtiofsd exited with status ", *fsd, ": ",
                        log.empty() ? "(no output)" : absl::StripTrailingAsciiWhitespace(log));
      }
      return absl::UnavailableError(error);
    }
    if (absl::Now() > deadline) {
      return absl::DeadlineExceededError(absl::StrCat("the guest agent did not answer within ",
                                                      absl::FormatDuration(config.boot_timeout),
                                                      ": ", last.message()));
    }
    ++tries;
    absl::StatusOr<UniqueFd> fd = agent::DialAgent(paths_.agent_endpoint(), absl::Seconds(2));
    if (!fd.ok()) {
      last = fd.status();
      absl::SleepFor(absl::Milliseconds(20));
      continue;
    }
    agent_ = std::make_unique<ttrpc::Client>(*std::move(fd));
    agent::v1::HealthResponse health;
    last = Call("Health", agent::v1::HealthRequest(), &health, absl::Seconds(5));
    if (last.ok()) {
      LogInfo("sandbox ", id, ": agent ", health.version(), " answered ",
              absl::FormatDuration(absl::Trunc(absl::Now() - started, absl::Milliseconds(1))),
              " after kapsel-vmm started (", tries, tries == 1 ? " try)" : " tries)");
      break;
    }
    agent_.reset();
    absl::SleepFor(absl::Milliseconds(20));
  }

  watcher_ = std::thread([this] {
    const int code = *vmm_->Wait(absl::InfiniteDuration());
    vm_exited_ = true;
    LogInfo("kapsel-vmm exited with status ", code);
    if (on_exit_) on_exit_(code);
  });

  agent::v1::CreateSandboxRequest request;
  request.set_sandbox_id(id);
  request.set_hostname(hostname);
  agent::v1::SharedMount* shared = request.add_shared_mounts();
  shared->set_tag(kSharedTag);
  shared->set_guest_path(kGuestSharedDir);
  if (network_ != nullptr) network_->AddTo(&request);
  agent::v1::Empty empty;
  return Call("CreateSandbox", request, &empty);
}

absl::Status Sandbox::Call(const std::string& method, const google::protobuf::Message& request,
                           google::protobuf::Message* response, absl::Duration timeout) {
  if (agent_ == nullptr || vm_exited_) return absl::UnavailableError("the VM is not running");
  absl::Status status = agent_->Call(kAgentService, method, request, response,
                                     ttrpc::CallOptions::WithTimeout(timeout));
  if (status.ok()) return status;
  status = Annotate(status, absl::StrCat("agent ", method));
  if (status.code() != absl::StatusCode::kUnavailable) return status;
  // The connection is gone. When the VM died with it (a guest crash, a killed kapsel-vmm), say so,
  // with kapsel-vmm's last words and the guest console's, not only "connection closed".
  // Up to 1 s for kapsel-vmm's exit, on its pidfd (the watcher may not have seen it yet).
  if (!vm_exited_ && !vmm_->Wait(absl::Seconds(1)).has_value()) return status;
  return absl::UnavailableError(
      absl::StrCat(status.message(), "; the VM stopped (kapsel-vmm: ",
                   absl::StripTrailingAsciiWhitespace(ReadTail(paths_.vmm_log, 512)),
                   "; guest console: ", absl::StripTrailingAsciiWhitespace(ConsoleTail(512)), ")"));
}

std::string Sandbox::ConsoleTail(size_t max_bytes) const {
  return ReadTail(paths_.console, max_bytes);
}

void Sandbox::Stop() {
  if (stopped_.exchange(true)) return;
  const absl::Time start = absl::Now();
  if (vmm_ != nullptr) {
    if (!vm_exited_ && agent_ != nullptr) {
      agent::v1::Empty empty;
      // The agent powers the VM off after answering (or the connection drops first).
      (void)agent_->Call(kAgentService, "DestroySandbox", agent::v1::DestroySandboxRequest(),
                         &empty, ttrpc::CallOptions::WithTimeout(absl::Seconds(5)));
    }
    if (!vmm_->Wait(agent_ != nullptr ? absl::Seconds(10) : absl::ZeroDuration()).has_value()) {
      LogWarn("kapsel-vmm did not stop after DestroySandbox: terminating it");
      vmm_->Stop(absl::Seconds(3));
    }
  }
  if (watcher_.joinable()) watcher_.join();
  agent_.reset();
  if (virtiofsd_ != nullptr) virtiofsd_->Stop(absl::Seconds(3));
  vmm_.reset();
  virtiofsd_.reset();
  network_.reset();  // after kapsel-vmm: its taps are gone with it
  cgroup_.reset();   // after kapsel-vmm and virtiofsd: empty, it can go
  if (absl::Status s = RemoveSandboxDir(paths_.dir); !s.ok()) {
    LogWarn("sandbox cleanup: ", s.ToString());
  }
  LogDebug("sandbox stopped and removed in ",
           absl::FormatDuration(absl::Trunc(absl::Now() - start, absl::Milliseconds(1))));
}

Sandbox::~Sandbox() { Stop(); }

absl::Status CleanUpSandboxDir(const std::string& dir) {
  const SandboxPaths paths(dir);
  for (const std::string& pid_file : {paths.vmm_pid, paths.virtiofsd_pid}) {
    std::ifstream in(pid_file);
    std::string text;
    int pid = 0;
    if (!std::getline(in, text) || !absl::SimpleAtoi(text, &pid) || pid <= 1) continue;
    // Only a process still serving this sandbox: its command line names the sandbox directory.
    if (ReadFile(absl::StrCat("/proc/", pid, "/cmdline")).find(dir) == std::string::npos) {
      continue;
    }
    LogInfo("cleanup: killing leftover pid ", pid, " of ", dir);
    kill(pid, SIGKILL);
    // Not our child (its shim is gone): wait until it is gone so the mounts can go.
    for (int i = 0; i < 500 && kill(pid, 0) == 0; ++i) {
      std::ifstream stat(absl::StrCat("/proc/", pid, "/stat"));
      std::string s;
      std::getline(stat, s);
      if (s.find(") Z") != std::string::npos) break;  // a zombie of someone else
      absl::SleepFor(absl::Milliseconds(10));
    }
  }
  absl::Status status;
  std::string cgroup;
  if (std::ifstream in(paths.cgroup); std::getline(in, cgroup) && !cgroup.empty()) {
    status = HostCgroup::Remove(cgroup);
  }
  status.Update(RemoveSandboxDir(dir));
  return status;
}

}  // namespace kapsel::shim
