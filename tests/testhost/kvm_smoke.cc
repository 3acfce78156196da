// kvm_smoke: checks that /dev/kvm runs a vCPU, with the smallest possible VM.
//
// One page of guest memory at 0x1000 holds a real-mode payload; one vCPU starts there:
//     mov al, 42      b0 2a
//     out 0x10, al    e6 10
//     hlt             f4
// and the program checks that KVM_RUN exits first with KVM_EXIT_IO (port 0x10, one byte out, 42),
// then with KVM_EXIT_HLT.
//
//   kvm_smoke              the check above; prints one line
//   kvm_smoke --loop N     also measures the KVM exit round trip: a payload looping on `out 0x10,
//   al`
//                          is re-entered N times; prints "kvm_smoke: N port-I/O exits, X us/exit"
//
// Exit status: 0 = KVM works; 1 = KVM misbehaved (wrong exit, wrong value); 77 = no usable KVM here
// (no /dev/kvm, or this KVM refuses to create or run such a VM: e.g. PVM). Never crashes or hangs
// on a broken KVM: a watchdog alarm turns a vCPU stuck in KVM_RUN into status 1.
#include <fcntl.h>
#include <linux/kvm.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

namespace {

constexpr int kUnavailable = 77;
constexpr uint64_t kGuestBase = 0x1000;
constexpr size_t kGuestSize = 0x1000;
constexpr uint16_t kPort = 0x10;
constexpr uint8_t kValue = 42;

// mov al, 42; out 0x10, al; hlt
constexpr uint8_t kOnce[] = {0xb0, kValue, 0xe6, kPort, 0xf4};
// mov al, 42; l: out 0x10, al; jmp l
constexpr uint8_t kLoop[] = {0xb0, kValue, 0xe6, kPort, 0xeb, 0xfc};

volatile sig_atomic_t g_timed_out = 0;

[[noreturn]] void Fail(int status, const std::string& what) {
  std::fprintf(stderr, "kvm_smoke: %s%s%s\n", what.c_str(), errno ? ": " : "",
               errno ? std::strerror(errno) : "");
  std::exit(status);
}

const char* ExitName(uint32_t reason) {
  switch (reason) {
    case KVM_EXIT_UNKNOWN:
      return "UNKNOWN";
    case KVM_EXIT_EXCEPTION:
      return "EXCEPTION";
    case KVM_EXIT_IO:
      return "IO";
    case KVM_EXIT_HLT:
      return "HLT";
    case KVM_EXIT_MMIO:
      return "MMIO";
    case KVM_EXIT_SHUTDOWN:
      return "SHUTDOWN";
    case KVM_EXIT_FAIL_ENTRY:
      return "FAIL_ENTRY";
    case KVM_EXIT_INTERNAL_ERROR:
      return "INTERNAL_ERROR";
    default:
      return "other";
  }
}

class Vm {
 public:
  Vm() {
    kvm_ = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    if (kvm_ < 0) Fail(kUnavailable, "cannot open /dev/kvm");
    int version = ioctl(kvm_, KVM_GET_API_VERSION, 0);
    if (version != KVM_API_VERSION)
      Fail(kUnavailable, "unexpected KVM API version " + std::to_string(version));
    vm_ = ioctl(kvm_, KVM_CREATE_VM, 0);
    if (vm_ < 0) Fail(kUnavailable, "KVM_CREATE_VM failed");
    mem_ = static_cast<uint8_t*>(
        mmap(nullptr, kGuestSize, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
    if (mem_ == MAP_FAILED) Fail(1, "mmap of guest memory failed");
    kvm_userspace_memory_region region{};
    region.slot = 0;
    region.guest_phys_addr = kGuestBase;
    region.memory_size = kGuestSize;
    region.userspace_addr = reinterpret_cast<uint64_t>(mem_);
    if (ioctl(vm_, KVM_SET_USER_MEMORY_REGION, &region) < 0)
      Fail(kUnavailable, "KVM_SET_USER_MEMORY_REGION failed");
    vcpu_ = ioctl(vm_, KVM_CREATE_VCPU, 0);
    if (vcpu_ < 0) Fail(kUnavailable, "KVM_CREATE_VCPU failed");
    int run_size = ioctl(kvm_, KVM_GET_VCPU_MMAP_SIZE, 0);
    if (run_size < static_cast<int>(sizeof(kvm_run)))
      Fail(kUnavailable, "KVM_GET_VCPU_MMAP_SIZE failed");
    run_size_ = static_cast<size_t>(run_size);
    void* run = mmap(nullptr, run_size_, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu_, 0);
    if (run == MAP_FAILED) Fail(kUnavailable, "mmap of kvm_run failed");
    run_ = static_cast<kvm_run*>(run);
  }
  ~Vm() {
    munmap(run_, run_size_);
    munmap(mem_, kGuestSize);
    close(vcpu_);
    close(vm_);
    close(kvm_);
  }
  Vm(const Vm&) = delete;
  Vm& operator=(const Vm&) = delete;

  // Loads a payload at kGuestBase and points the vCPU at it, in real mode with flat segments.
  void Load(const uint8_t* code, size_t size) {
    std::memset(mem_, 0xf4, kGuestSize);  // hlt everywhere else
    std::memcpy(mem_, code, size);
    kvm_sregs sregs{};
    if (ioctl(vcpu_, KVM_GET_SREGS, &sregs) < 0) Fail(kUnavailable, "KVM_GET_SREGS failed");
    sregs.cs.base = 0;
    sregs.cs.selector = 0;
    if (ioctl(vcpu_, KVM_SET_SREGS, &sregs) < 0) Fail(kUnavailable, "KVM_SET_SREGS failed");
    kvm_regs regs{};
    regs.rip = kGuestBase;
    regs.rflags = 0x2;
    if (ioctl(vcpu_, KVM_SET_REGS, &regs) < 0) Fail(kUnavailable, "KVM_SET_REGS failed");
  }

  // Runs the vCPU until its next exit; returns the exit reason. `first`: a failure of the very
  // first KVM_RUN means this KVM cannot run such a vCPU at all (unavailable), not a misbehaviour.
  uint32_t Run(bool first) {
    while (ioctl(vcpu_, KVM_RUN, 0) < 0) {
      if (errno == EINTR && !g_timed_out) continue;
      if (g_timed_out) Fail(1, "the vCPU did not exit within the watchdog time");
      Fail(first ? kUnavailable : 1, "KVM_RUN failed");
    }
    return run_->exit_reason;
  }

  // Checks that the last exit is the payload's `out 0x10, al` with al = 42.
  void ExpectOut(bool first) const {
    if (run_->exit_reason != KVM_EXIT_IO) {
      errno = 0;
      Fail(first && (run_->exit_reason == KVM_EXIT_FAIL_ENTRY ||
                     run_->exit_reason == KVM_EXIT_INTERNAL_ERROR)
               ? kUnavailable
               : 1,
           std::string("expected an IO exit, got ") + ExitName(run_->exit_reason) + " (" +
               std::to_string(run_->exit_reason) + ")");
    }
    const auto& io = run_->io;
    const uint8_t value = reinterpret_cast<const uint8_t*>(run_)[io.data_offset];
    if (io.direction != KVM_EXIT_IO_OUT || io.port != kPort || io.size != 1 || io.count != 1 ||
        value != kValue) {
      errno = 0;
      Fail(1, "wrong IO exit: direction " + std::to_string(io.direction) + ", port " +
                  std::to_string(io.port) + ", size " + std::to_string(io.size) + ", count " +
                  std::to_string(io.count) + ", value " + std::to_string(value));
    }
  }

  kvm_run* run() const { return run_; }

 private:
  int kvm_ = -1;
  int vm_ = -1;
  int vcpu_ = -1;
  uint8_t* mem_ = nullptr;
  kvm_run* run_ = nullptr;
  size_t run_size_ = 0;
};

void OnAlarm(int) { g_timed_out = 1; }

}  // namespace

int main(int argc, char** argv) {
  long loops = 0;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--loop" && i + 1 < argc) {
      loops = std::strtol(argv[++i], nullptr, 10);
      if (loops <= 0) Fail(2, "--loop wants a positive count");
    } else {
      std::fprintf(stderr, "usage: kvm_smoke [--loop N]\n");
      return 2;
    }
  }
  // A vCPU that never exits is a failure, not a hang: SIGALRM interrupts KVM_RUN.
  struct sigaction sa {};
  sa.sa_handler = OnAlarm;
  sigaction(SIGALRM, &sa, nullptr);
  alarm(static_cast<unsigned>(30 + loops / 1000));

  Vm vm;
  vm.Load(kOnce, sizeof(kOnce));
  vm.Run(/*first=*/true);
  vm.ExpectOut(/*first=*/true);
  uint32_t reason = vm.Run(/*first=*/false);
  if (reason != KVM_EXIT_HLT) {
    errno = 0;
    Fail(1, std::string("expected a HLT exit after the IO exit, got ") + ExitName(reason) + " (" +
                std::to_string(reason) + ")");
  }
  std::printf("kvm_smoke: ok (IO exit on port 0x%x with value %d, then HLT)\n", kPort, kValue);

  if (loops > 0) {
    Vm loop_vm;
    loop_vm.Load(kLoop, sizeof(kLoop));
    loop_vm.Run(/*first=*/true);  // warm up: the first exit pays for setting the vCPU up
    loop_vm.ExpectOut(/*first=*/true);
    const auto start = std::chrono::steady_clock::now();
    for (long i = 0; i < loops; ++i) {
      loop_vm.Run(/*first=*/false);
      loop_vm.ExpectOut(/*first=*/false);
    }
    const std::chrono::duration<double, std::micro> took = std::chrono::steady_clock::now() - start;
    std::printf("kvm_smoke: %ld port-I/O exits, %.2f us/exit\n", loops,
                took.count() / static_cast<double>(loops));
  }
  std::fflush(stdout);
  return 0;
}
