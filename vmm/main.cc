// kapsel-vmm: boots a Linux kernel in a KVM microVM and exits with a code that says how the guest
// ended (see vm_exit.h).
#include <cstdio>
#include <filesystem>

#include "common/status.h"
#include "vmm/builder.h"
#include "vmm/config.h"
#include "vmm/jail/jail.h"
#include "vmm/seccomp/vmm_filter.h"
#include "vmm/vm_exit.h"

namespace {

#ifdef KAPSEL_SANITIZE
constexpr bool kSanitizerBuild = true;
#else
constexpr bool kSanitizerBuild = false;
#endif

int Fail(int code, const absl::Status& status) {
  std::fprintf(stderr, "kapsel-vmm: %s\n", std::string(status.message()).c_str());
  return code;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace kapsel::vmm;
  bool help = false;
  absl::StatusOr<v1::VmConfig> config = ParseCommandLine(argc, argv, &help);
  if (help) {
    std::fputs(Usage().c_str(), stdout);
    return 0;
  }
  if (!config.ok()) {
    Fail(kExitUsage, config.status());
    std::fputs(Usage().c_str(), stderr);
    return kExitUsage;
  }
  absl::StatusOr<std::unique_ptr<Vmm>> vmm = BuildVmm(*config);
  if (!vmm.ok()) {
    return Fail(kapsel::IsUsageError(vmm.status()) ? kExitUsage : kExitVmmError, vmm.status());
  }
  // The jail and the filter are skipped in sanitizer builds, whose runtime makes system calls of
  // its own (reports read /proc/self/maps and spawn symbolizers; LeakSanitizer lists
  // /proc/self/task at exit).
  if (config->jail() && !kSanitizerBuild) {
    WarmUpLazyInitialization();
    JailConfig jail;
    // Guest-to-host vsock connections reach <uds>_<port> beside the listener.
    if (config->has_vsock()) {
      jail.visible_dirs.push_back(
          std::filesystem::path(config->vsock().uds_path()).parent_path().string());
    }
    absl::Status jailed = EnterJail(jail);
    if (!jailed.ok()) return Fail(kExitVmmError, jailed);
  }
  // From here on the guest can reach the host only through device emulation and vCPU exits: every
  // thread runs under the allowlist (vmm/seccomp).
  if (!config->no_seccomp() && !kSanitizerBuild) {
    absl::Status filtered = InstallVmmSeccompFilter();
    if (!filtered.ok()) return Fail(kExitVmmError, filtered);
  }
  std::string reason;
  const int code = (*vmm)->Run(&reason);
  // Say why before tearing down, so the reason is known even if teardown is slow.
  if (code != kExitGuestShutdown) std::fprintf(stderr, "kapsel-vmm: %s\n", reason.c_str());
  vmm->reset();
  return code;
}
