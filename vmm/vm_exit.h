// Why a VM stopped, and the process exit code each reason maps to.
#ifndef KAPSEL_VMM_VM_EXIT_H_
#define KAPSEL_VMM_VM_EXIT_H_

#include <functional>
#include <string>

#include "absl/synchronization/mutex.h"

namespace kapsel::vmm {

// kapsel-vmm's exit codes.
enum ExitCode : int {
  kExitGuestShutdown = 0,  // the guest powered off or rebooted
  kExitVmmError = 1,       // the VMM failed (setup, a KVM call)
  kExitUsage = 2,          // bad arguments or unreadable input files
  kExitGuestPanic = 3,     // the guest kernel panicked
  kExitTripleFault = 4,    // the guest triple-faulted (KVM_EXIT_SHUTDOWN)
  kExitKvmError = 5,       // KVM could not run the guest (internal error, failed entry)
  kExitSignalBase = 128,   // stopped by signal N: 128 + N
};

// The first request to stop a VM wins; later ones are ignored. Thread-safe.
class VmExit {
 public:
  explicit VmExit(std::function<void()> on_first_request)
      : on_first_(std::move(on_first_request)) {}

  // Records why the VM stops. Returns true for the first request (which also runs the callback).
  bool Request(int exit_code, std::string reason);
  bool requested() const;
  int exit_code() const;
  std::string reason() const;

 private:
  std::function<void()> on_first_;
  mutable absl::Mutex mu_;
  bool requested_ ABSL_GUARDED_BY(mu_) = false;
  int exit_code_ ABSL_GUARDED_BY(mu_) = 0;
  std::string reason_ ABSL_GUARDED_BY(mu_);
};

}  // namespace kapsel::vmm

#endif  // KAPSEL_VMM_VM_EXIT_H_
