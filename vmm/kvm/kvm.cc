#include "vmm/kvm/kvm.h"

#include <fcntl.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstdlib>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/status.h"

namespace kapsel::vmm {
namespace {

struct RequiredCapability {
  int capability;
  const char* name;
};

constexpr RequiredCapability kRequired[] = {
    {KVM_CAP_IRQCHIP, "KVM_CAP_IRQCHIP"},
    {KVM_CAP_USER_MEMORY, "KVM_CAP_USER_MEMORY"},
    {KVM_CAP_SET_TSS_ADDR, "KVM_CAP_SET_TSS_ADDR"},
    {KVM_CAP_EXT_CPUID, "KVM_CAP_EXT_CPUID"},
    {KVM_CAP_IRQFD, "KVM_CAP_IRQFD"},
    {KVM_CAP_IOEVENTFD, "KVM_CAP_IOEVENTFD"},
    {KVM_CAP_PIT2, "KVM_CAP_PIT2"},
};

// linux/kvm.h (6.1) declares its variable-length arrays with __DECLARE_FLEX_ARRAY, whose empty
// struct member has size 1 in C++: sizeof() of those headers, and the ioctl numbers derived from
// them, differ from the kernel's C layout. These are the C layouts and the kernel's numbers.
struct CpuidHeader {
  uint32_t nent;
  uint32_t padding;
};
struct MsrsHeader {
  uint32_t nmsrs;
  uint32_t pad;
};
struct MsrListHeader {
  uint32_t nmsrs;
};
constexpr unsigned long kGetSupportedCpuid = _IOWR(KVMIO, 0x05, CpuidHeader);
constexpr unsigned long kSetCpuid2 = _IOW(KVMIO, 0x90, CpuidHeader);
constexpr unsigned long kSetMsrs = _IOW(KVMIO, 0x89, MsrsHeader);
constexpr unsigned long kGetMsrIndexList = _IOWR(KVMIO, 0x02, MsrListHeader);

bool HostKvmIsPvm() {
  struct stat st;
  return stat("/sys/module/kvm_pvm", &st) == 0;
}

// Reads a variable-length KVM array (cpuid, msr list) by growing the buffer until E2BIG stops.
template <typename Header, typename Entry>
absl::StatusOr<std::vector<Entry>> GetArray(int fd, unsigned long request, const char* what,
                                            uint32_t Header::*count, size_t first) {
  for (uint32_t n = first; n <= 4096; n *= 2) {
    const size_t bytes = sizeof(Header) + n * sizeof(Entry);
    std::vector<uint8_t> buffer(bytes);
    auto* header = reinterpret_cast<Header*>(buffer.data());
    header->*count = n;
    if (ioctl(fd, request, buffer.data()) == 0) {
      const Entry* entries = reinterpret_cast<const Entry*>(buffer.data() + sizeof(Header));
      return std::vector<Entry>(entries, entries + (header->*count));
    }
    if (errno != E2BIG) return ErrnoError(what);
  }
  return absl::ResourceExhaustedError(absl::StrCat(what, ": too many entries"));
}

}  // namespace

absl::StatusOr<std::unique_ptr<Kvm>> Kvm::Open(const std::string& path) {
  UniqueFd fd(open(path.c_str(), O_RDWR | O_CLOEXEC));
  if (!fd) {
    return Annotate(
        ErrnoError(absl::StrCat("cannot open ", path)),
        "KVM is not available (is the kvm module loaded and are you allowed to use it?)");
  }
  const int version = ioctl(fd.get(), KVM_GET_API_VERSION, 0);
  if (version != KVM_API_VERSION) {
    return absl::FailedPreconditionError(
        absl::StrFormat("%s: KVM API version %d, want %d", path, version, KVM_API_VERSION));
  }
  for (const RequiredCapability& cap : kRequired) {
    if (ioctl(fd.get(), KVM_CHECK_EXTENSION, cap.capability) <= 0) {
      return absl::FailedPreconditionError(
          absl::StrFormat("%s lacks %s, which kapsel-vmm needs", path, cap.name));
    }
  }
  const int mmap_size = ioctl(fd.get(), KVM_GET_VCPU_MMAP_SIZE, 0);
  if (mmap_size < static_cast<int>(sizeof(kvm_run))) {
    return ErrnoError(absl::StrCat(path, ": KVM_GET_VCPU_MMAP_SIZE"));
  }
  return std::unique_ptr<Kvm>(new Kvm(std::move(fd), HostKvmIsPvm(), mmap_size));
}

int Kvm::CheckExtension(int capability) const {
  return ioctl(fd_.get(), KVM_CHECK_EXTENSION, capability);
}

absl::StatusOr<std::vector<kvm_cpuid_entry2>> Kvm::GetSupportedCpuid() const {
  return GetArray<CpuidHeader, kvm_cpuid_entry2>(
      fd_.get(), kGetSupportedCpuid, "KVM_GET_SUPPORTED_CPUID", &CpuidHeader::nent, 128);
}

absl::StatusOr<std::vector<uint32_t>> Kvm::GetMsrIndexList() const {
  return GetArray<MsrListHeader, uint32_t>(fd_.get(), kGetMsrIndexList, "KVM_GET_MSR_INDEX_LIST",
                                           &MsrListHeader::nmsrs, 64);
}

absl::StatusOr<std::unique_ptr<Vm>> Kvm::CreateVm() const {
  int vm_fd;
  do {
    vm_fd = ioctl(fd_.get(), KVM_CREATE_VM, 0);
  } while (vm_fd < 0 && errno == EINTR);
  if (vm_fd < 0) return ErrnoError("KVM_CREATE_VM");
  return std::unique_ptr<Vm>(new Vm(this, UniqueFd(vm_fd)));
}

absl::Status Vm::SetUserMemoryRegion(uint32_t slot, uint64_t guest_addr, uint64_t size,
                                     void* host) {
  kvm_userspace_memory_region region{};
  region.slot = slot;
  region.guest_phys_addr = guest_addr;
  region.memory_size = size;
  region.userspace_addr = reinterpret_cast<uint64_t>(host);
  if (ioctl(fd_.get(), KVM_SET_USER_MEMORY_REGION, &region) != 0) {
    return ErrnoError(
        absl::StrFormat("KVM_SET_USER_MEMORY_REGION slot %d at %#x", slot, guest_addr));
  }
  return absl::OkStatus();
}

absl::Status Vm::SetTssAddress(uint64_t addr) {
  if (ioctl(fd_.get(), KVM_SET_TSS_ADDR, addr) != 0) return ErrnoError("KVM_SET_TSS_ADDR");
  return absl::OkStatus();
}

absl::Status Vm::SetIdentityMapAddress(uint64_t addr) {
  if (ioctl(fd_.get(), KVM_SET_IDENTITY_MAP_ADDR, &addr) != 0) {
    return ErrnoError("KVM_SET_IDENTITY_MAP_ADDR");
  }
  return absl::OkStatus();
}

absl::Status Vm::CreateIrqchip() {
  if (ioctl(fd_.get(), KVM_CREATE_IRQCHIP, 0) != 0) return ErrnoError("KVM_CREATE_IRQCHIP");
  return absl::OkStatus();
}

absl::Status Vm::CreatePit() {
  kvm_pit_config config{};
  config.flags = KVM_PIT_SPEAKER_DUMMY;
  if (ioctl(fd_.get(), KVM_CREATE_PIT2, &config) != 0) return ErrnoError("KVM_CREATE_PIT2");
  return absl::OkStatus();
}

absl::Status Vm::RegisterIrqfd(int fd, uint32_t gsi) {
  kvm_irqfd irqfd{};
  irqfd.fd = static_cast<uint32_t>(fd);
  irqfd.gsi = gsi;
  if (ioctl(fd_.get(), KVM_IRQFD, &irqfd) != 0) {
    return ErrnoError(absl::StrCat("KVM_IRQFD for GSI ", gsi));
  }
  return absl::OkStatus();
}

absl::Status Vm::RegisterIoeventfd(int fd, uint64_t addr, uint32_t length, uint64_t datamatch,
                                   bool pio) {
  kvm_ioeventfd ioeventfd{};
  ioeventfd.datamatch = datamatch;
  ioeventfd.addr = addr;
  ioeventfd.len = length;
  ioeventfd.fd = fd;
  ioeventfd.flags = KVM_IOEVENTFD_FLAG_DATAMATCH | (pio ? KVM_IOEVENTFD_FLAG_PIO : 0);
  if (ioctl(fd_.get(), KVM_IOEVENTFD, &ioeventfd) != 0) {
    return ErrnoError(absl::StrFormat("KVM_IOEVENTFD at %#x", addr));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<Vcpu>> Vm::CreateVcpu(uint32_t id) {
  UniqueFd fd(ioctl(fd_.get(), KVM_CREATE_VCPU, id));
  if (!fd) return ErrnoError(absl::StrCat("KVM_CREATE_VCPU ", id));
  const size_t size = static_cast<size_t>(kvm_->vcpu_mmap_size());
  void* run = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd.get(), 0);
  if (run == MAP_FAILED) return ErrnoError(absl::StrCat("mmap of vCPU ", id, " run area"));
  return std::unique_ptr<Vcpu>(new Vcpu(id, std::move(fd), static_cast<kvm_run*>(run), size));
}

Vcpu::~Vcpu() { munmap(run_, run_size_); }

absl::Status Vcpu::Run() {
  if (ioctl(fd_.get(), KVM_RUN, 0) != 0) {
    if (errno == EINTR || errno == EAGAIN) {
      run_->exit_reason = KVM_EXIT_INTR;
      return absl::OkStatus();
    }
    return ErrnoError(absl::StrCat("KVM_RUN on vCPU ", id_));
  }
  return absl::OkStatus();
}

#define KAPSEL_VCPU_IOCTL(request, arg, what)                \
  if (ioctl(fd_.get(), request, arg) != 0) {                 \
    return ErrnoError(absl::StrCat(what, " on vCPU ", id_)); \
  }                                                          \
  return absl::OkStatus()

absl::Status Vcpu::GetRegs(kvm_regs* regs) const {
  KAPSEL_VCPU_IOCTL(KVM_GET_REGS, regs, "KVM_GET_REGS");
}
absl::Status Vcpu::SetRegs(const kvm_regs& regs) {
  KAPSEL_VCPU_IOCTL(KVM_SET_REGS, &regs, "KVM_SET_REGS");
}
absl::Status Vcpu::GetSregs(kvm_sregs* sregs) const {
  KAPSEL_VCPU_IOCTL(KVM_GET_SREGS, sregs, "KVM_GET_SREGS");
}
absl::Status Vcpu::SetSregs(const kvm_sregs& sregs) {
  KAPSEL_VCPU_IOCTL(KVM_SET_SREGS, &sregs, "KVM_SET_SREGS");
}
absl::Status Vcpu::SetFpu(const kvm_fpu& fpu) {
  KAPSEL_VCPU_IOCTL(KVM_SET_FPU, &fpu, "KVM_SET_FPU");
}
absl::Status Vcpu::GetLapic(kvm_lapic_state* lapic) const {
  KAPSEL_VCPU_IOCTL(KVM_GET_LAPIC, lapic, "KVM_GET_LAPIC");
}
absl::Status Vcpu::SetLapic(const kvm_lapic_state& lapic) {
  KAPSEL_VCPU_IOCTL(KVM_SET_LAPIC, &lapic, "KVM_SET_LAPIC");
}

#undef KAPSEL_VCPU_IOCTL

absl::Status Vcpu::SetCpuid(const std::vector<kvm_cpuid_entry2>& entries) {
  std::vector<uint8_t> buffer(sizeof(CpuidHeader) + entries.size() * sizeof(kvm_cpuid_entry2));
  auto* cpuid = reinterpret_cast<CpuidHeader*>(buffer.data());
  cpuid->nent = static_cast<uint32_t>(entries.size());
  std::copy(entries.begin(), entries.end(),
            reinterpret_cast<kvm_cpuid_entry2*>(buffer.data() + sizeof(CpuidHeader)));
  if (ioctl(fd_.get(), kSetCpuid2, cpuid) != 0) {
    return ErrnoError(absl::StrCat("KVM_SET_CPUID2 on vCPU ", id_));
  }
  return absl::OkStatus();
}

absl::Status Vcpu::SetMsrs(const std::vector<kvm_msr_entry>& entries) {
  std::vector<uint8_t> buffer(sizeof(MsrsHeader) + entries.size() * sizeof(kvm_msr_entry));
  auto* msrs = reinterpret_cast<MsrsHeader*>(buffer.data());
  msrs->nmsrs = static_cast<uint32_t>(entries.size());
  std::copy(entries.begin(), entries.end(),
            reinterpret_cast<kvm_msr_entry*>(buffer.data() + sizeof(MsrsHeader)));
  const int n = ioctl(fd_.get(), kSetMsrs, msrs);
  if (n < 0) return ErrnoError(absl::StrCat("KVM_SET_MSRS on vCPU ", id_));
  if (static_cast<size_t>(n) != entries.size()) {
    return absl::InternalError(
        absl::StrFormat("KVM_SET_MSRS on vCPU %d: MSR %#x was rejected", id_, entries[n].index));
  }
  return absl::OkStatus();
}

}  // namespace kapsel::vmm
