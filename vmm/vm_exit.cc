#include "vmm/vm_exit.h"

namespace kapsel::vmm {

bool VmExit::Request(int exit_code, std::string reason) {
  {
    absl::MutexLock lock(&mu_);
    if (requested_) return false;
    requested_ = true;
    exit_code_ = exit_code;
    reason_ = std::move(reason);
  }
  if (on_first_) on_first_();
  return true;
}

bool VmExit::requested() const {
  absl::MutexLock lock(&mu_);
  return requested_;
}

int VmExit::exit_code() const {
  absl::MutexLock lock(&mu_);
  return exit_code_;
}

std::string VmExit::reason() const {
  absl::MutexLock lock(&mu_);
  return reason_;
}

}  // namespace kapsel::vmm
