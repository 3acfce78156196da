// RAII wrappers for the three kinds of KVM file descriptor: the system (/dev/kvm), a VM and a vCPU.
#ifndef KAPSEL_VMM_KVM_KVM_H_
#define KAPSEL_VMM_KVM_KVM_H_

#include <linux/kvm.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/unique_fd.h"

namespace kapsel::vmm {

class Vm;
class Vcpu;

// /dev/kvm. Open() checks the API version and every capability kapsel-vmm relies on, and says which
// is missing.
class Kvm {
 public:
  static absl::StatusOr<std::unique_ptr<Kvm>> Open(const std::string& path = "/dev/kvm");

  int fd() const { return fd_.get(); }
  // True when /dev/kvm is provided by PVM (kvm_pvm), which emulates guest code and cannot boot a
  // stock Linux guest.
  bool is_pvm() const { return is_pvm_; }
  int CheckExtension(int capability) const;
  int vcpu_mmap_size() const { return vcpu_mmap_size_; }
  // KVM_GET_SUPPORTED_CPUID.
  absl::StatusOr<std::vector<kvm_cpuid_entry2>> GetSupportedCpuid() const;
  // Indices of the MSRs KVM can save and restore (KVM_GET_MSR_INDEX_LIST).
  absl::StatusOr<std::vector<uint32_t>> GetMsrIndexList() const;

  absl::StatusOr<std::unique_ptr<Vm>> CreateVm() const;

 private:
  Kvm(UniqueFd fd, bool is_pvm, int vcpu_mmap_size)
      : fd_(std::move(fd)), is_pvm_(is_pvm), vcpu_mmap_size_(vcpu_mmap_size) {}
  UniqueFd fd_;
  bool is_pvm_;
  int vcpu_mmap_size_;
};

class Vm {
 public:
  int fd() const { return fd_.get(); }

  absl::Status SetUserMemoryRegion(uint32_t slot, uint64_t guest_addr, uint64_t size, void* host);
  absl::Status SetTssAddress(uint64_t addr);
  absl::Status SetIdentityMapAddress(uint64_t addr);
  // In-kernel LAPIC + IOAPIC + PIC, and the PIT.
  absl::Status CreateIrqchip();
  absl::Status CreatePit();
  // Edge-triggered interrupt on `gsi` each time eventfd `fd` is written.
  absl::Status RegisterIrqfd(int fd, uint32_t gsi);
  // Makes a guest write of `length` bytes equal to `datamatch` at `addr` signal eventfd `fd`
  // instead of exiting to userspace.
  absl::Status RegisterIoeventfd(int fd, uint64_t addr, uint32_t length, uint64_t datamatch,
                                 bool pio);

  absl::StatusOr<std::unique_ptr<Vcpu>> CreateVcpu(uint32_t id);

 private:
  friend class Kvm;
  Vm(const Kvm* kvm, UniqueFd fd) : kvm_(kvm), fd_(std::move(fd)) {}
  const Kvm* kvm_;
  UniqueFd fd_;
};

class Vcpu {
 public:
  ~Vcpu();
  Vcpu(const Vcpu&) = delete;
  Vcpu& operator=(const Vcpu&) = delete;

  uint32_t id() const { return id_; }
  int fd() const { return fd_.get(); }
  // The shared kvm_run page: exit reason and exit data after Run().
  kvm_run* run() const { return run_; }

  // KVM_RUN. EINTR (a signal kicked the vCPU out) is not an error: check run()->exit_reason or
  // the caller's stop flag. Returns the errno-derived error otherwise.
  absl::Status Run();

  absl::Status GetRegs(kvm_regs* regs) const;
  absl::Status SetRegs(const kvm_regs& regs);
  absl::Status GetSregs(kvm_sregs* sregs) const;
  absl::Status SetSregs(const kvm_sregs& sregs);
  absl::Status SetFpu(const kvm_fpu& fpu);
  absl::Status SetCpuid(const std::vector<kvm_cpuid_entry2>& entries);
  absl::Status SetMsrs(const std::vector<kvm_msr_entry>& entries);
  absl::Status GetLapic(kvm_lapic_state* lapic) const;
  absl::Status SetLapic(const kvm_lapic_state& lapic);

 private:
  friend class Vm;
  Vcpu(uint32_t id, UniqueFd fd, kvm_run* run, size_t run_size)
      : id_(id), fd_(std::move(fd)), run_(run), run_size_(run_size) {}
  uint32_t id_;
  UniqueFd fd_;
  kvm_run* run_;
  size_t run_size_;
};

}  // namespace kapsel::vmm

#endif  // KAPSEL_VMM_KVM_KVM_H_
