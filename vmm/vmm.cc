#include "vmm/vmm.h"

#include <signal.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/status.h"
#include "vmm/arch/x86_64/cpu_setup.h"
#include "vmm/arch/x86_64/e820.h"
#include "vmm/arch/x86_64/layout.h"
#include "vmm/devices/legacy/i8042.h"
#include "vmm/devices/legacy/serial.h"
#include "vmm/devices/virtio/mmio_transport.h"

namespace kapsel::vmm {
namespace {

// The signal that kicks a vCPU thread out of KVM_RUN. Its handler does nothing: the point is the
// EINTR.
int KickSignal() { return SIGRTMIN; }
void IgnoreKick(int) {}

}  // namespace

Vmm::Vmm(std::shared_ptr<ConsoleOutput> console)
    : console_(std::move(console)), exit_([this] {
        if (event_loop_) event_loop_->Stop();
        KickVcpus();
      }) {}

Vmm::~Vmm() {
  // Marks the VM stopped first (a no-op after Run): a device that reports a failure while it is
  // torn down (a vhost-user backend that does not answer) must not call back into a Vmm whose
  // members are being destroyed.
  exit_.Request(kExitVmmError, "the VMM is being torn down");
  KickVcpus();
  JoinVcpus();
}

void Vmm::JoinVcpus() {
  std::vector<std::thread> threads;
  {
    absl::MutexLock lock(&threads_mu_);
    threads.swap(vcpu_threads_);
  }
  for (std::thread& t : threads) t.join();
}

absl::StatusOr<std::unique_ptr<Vmm>> Vmm::CreateMachine(const MachineConfig& config,
                                                        std::unique_ptr<GuestMemory> memory) {
  auto vmm = std::unique_ptr<Vmm>(new Vmm(config.console));
  ASSIGN_OR_RETURN(vmm->kvm_, Kvm::Open());
  if (vmm->kvm_->is_pvm() && !config.allow_pvm) {
    return absl::FailedPreconditionError(
        "this host's /dev/kvm is PVM (kvm_pvm): it emulates guest code and cannot boot a stock "
        "Linux guest. Run kapsel-vmm on a host with hardware virtualization (VT-x/AMD-V), or "
        "inside the test host (tests/testhost/run). --allow-pvm runs anyway.");
  }
  ASSIGN_OR_RETURN(vmm->event_loop_, EventLoop::Create());
  if (memory) {
    vmm->memory_ = std::move(memory);
  } else {
    ASSIGN_OR_RETURN(vmm->memory_, GuestMemory::Create(x86::RamRanges(config.mem_bytes)));
  }
  ASSIGN_OR_RETURN(vmm->vm_, vmm->kvm_->CreateVm());
  Vm& vm = *vmm->vm_;
  RETURN_IF_ERROR(vm.SetTssAddress(x86::kTssAddress));
  RETURN_IF_ERROR(vm.SetIdentityMapAddress(x86::kIdentityMapAddress));
  RETURN_IF_ERROR(vm.CreateIrqchip());
  RETURN_IF_ERROR(vm.CreatePit());
  for (const MemoryRegion& r : vmm->memory_->regions()) {
    RETURN_IF_ERROR(
        vm.SetUserMemoryRegion(vmm->next_memory_slot_++, r.guest_start, r.size, r.host));
  }

  // Legacy devices: COM1 and the i8042 reset line.
  ASSIGN_OR_RETURN(std::unique_ptr<EventFdInterrupt> com1_irq,
                   EventFdInterrupt::Create(x86::kCom1Irq));
  RETURN_IF_ERROR(vm.RegisterIrqfd(com1_irq->fd(), com1_irq->gsi()));
  std::shared_ptr<ConsoleOutput> console = config.console;
  if (!console) console = std::make_shared<ConsoleOutput>(-1, false, nullptr);
  RETURN_IF_ERROR(vmm->pio_bus_.Insert(std::make_shared<Serial>(console, std::move(com1_irq)),
                                       x86::kCom1Port, Serial::kLength));
  Vmm* raw = vmm.get();
  RETURN_IF_ERROR(vmm->pio_bus_.Insert(
      std::make_shared<I8042>([raw] { raw->exit_.Request(kExitGuestShutdown, "guest reset"); }),
      x86::kI8042Port, I8042::kLength));

  ASSIGN_OR_RETURN(std::vector<kvm_cpuid_entry2> cpuid, vmm->kvm_->GetSupportedCpuid());
  // With the in-kernel LAPIC created above.
  if (vmm->kvm_->CheckExtension(KVM_CAP_TSC_DEADLINE_TIMER) > 0) {
    x86::AnnounceTscDeadlineTimer(cpuid);
  }
  for (uint32_t id = 0; id < config.vcpus; ++id) {
    ASSIGN_OR_RETURN(std::unique_ptr<Vcpu> vcpu, vm.CreateVcpu(id));
    RETURN_IF_ERROR(x86::ConfigureVcpu(*vcpu, cpuid, config.vcpus));
    vmm->vcpus_.push_back(std::move(vcpu));
  }
  return vmm;
}

absl::Status Vmm::AddPmem(std::unique_ptr<PmemRegion> region) {
  RETURN_IF_ERROR(vm_->SetUserMemoryRegion(next_memory_slot_++, region->guest_start(),
                                           region->size(), region->host()));
  pmem_.push_back(std::move(region));
  return absl::OkStatus();
}

absl::StatusOr<std::string> Vmm::AddVirtioDevice(std::unique_ptr<virtio::VirtioDevice> device) {
  const uint32_t index = static_cast<uint32_t>(transports_.size());
  const uint32_t irq = x86::kFirstVirtioIrq + index;
  if (irq > x86::kLastVirtioIrq) {
    return absl::ResourceExhaustedError("no interrupt line left for another virtio device");
  }
  const uint64_t base = x86::kVirtioMmioBase + index * x86::kVirtioMmioSize;
  ASSIGN_OR_RETURN(std::unique_ptr<EventFdInterrupt> line, EventFdInterrupt::Create(irq));
  RETURN_IF_ERROR(vm_->RegisterIrqfd(line->fd(), irq));
  auto transport =
      std::make_shared<virtio::MmioTransport>(std::move(device), memory_.get(), std::move(line));
  RETURN_IF_ERROR(mmio_bus_.Insert(transport, base, x86::kVirtioMmioSize));
  // A device served by another process (vhost-user) gets the eventfds to hand to its backend;
  // for the others the event loop reads them and calls NotifyQueue.
  const bool device_owns = transport->device_owns_queue_notifications();
  std::vector<int> notify_fds;
  for (uint16_t q = 0; q < transport->num_queues(); ++q) {
    UniqueFd fd(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    if (!fd) return ErrnoError("eventfd for a virtio queue");
    RETURN_IF_ERROR(vm_->RegisterIoeventfd(fd.get(), base + virtio::kMmioQueueNotifyOffset, 4, q,
                                           /*pio=*/false));
    const int raw_fd = fd.get();
    notify_fds.push_back(raw_fd);
    if (!device_owns) {
      virtio::MmioTransport* t = transport.get();
      RETURN_IF_ERROR(event_loop_->Add(raw_fd, EPOLLIN, [raw_fd, t, q](uint32_t) {
        uint64_t count;
        if (read(raw_fd, &count, sizeof(count)) == sizeof(count)) t->NotifyQueue(q);
      }));
    }
    queue_eventfds_.push_back(std::move(fd));
  }
  if (device_owns) transport->SetQueueNotifyFds(std::move(notify_fds));
  transports_.push_back(std::move(transport));
  return absl::StrFormat("virtio_mmio.device=4K@%#x:%d", base, irq);
}

void Vmm::KickVcpus() {
  absl::MutexLock lock(&threads_mu_);
  for (size_t i = 0; i < vcpu_threads_.size() && i < vcpus_.size(); ++i) {
    vcpus_[i]->run()->immediate_exit = 1;
    if (vcpu_threads_[i].joinable()) pthread_kill(vcpu_threads_[i].native_handle(), KickSignal());
  }
}

void Vmm::VcpuLoop(Vcpu* vcpu) {
  kvm_run* run = vcpu->run();
  if (vcpu->id() == 0 && getenv("KAPSEL_VMM_STARTUP_REPORT") != nullptr) {
    // For bench/: the process's CPU time from exec to the first KVM_RUN.
    rusage usage;
    getrusage(RUSAGE_SELF, &usage);
    const int64_t cpu_us = (usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) * 1000000LL +
                           usage.ru_utime.tv_usec + usage.ru_stime.tv_usec;
    std::fprintf(stderr, "kapsel-vmm: startup cpu_us=%lld\n", static_cast<long long>(cpu_us));
  }
  while (!exit_.requested()) {
    absl::Status status = vcpu->Run();
    if (!status.ok()) {
      exit_.Request(kExitKvmError, std::string(status.message()));
      return;
    }
    switch (run->exit_reason) {
      case KVM_EXIT_INTR:
        break;
      case KVM_EXIT_IO: {
        uint8_t* data = reinterpret_cast<uint8_t*>(run) + run->io.data_offset;
        for (uint32_t i = 0; i < run->io.count; ++i, data += run->io.size) {
          // Unclaimed ports (POST code 0x80, probes for absent hardware) ignore writes and
          // read as all ones, as on a PC with nothing there.
          if (run->io.direction == KVM_EXIT_IO_OUT) {
            pio_bus_.Write(run->io.port, {data, run->io.size});
          } else {
            pio_bus_.Read(run->io.port, {data, run->io.size});
          }
        }
        break;
      }
      case KVM_EXIT_MMIO: {
        const uint32_t len = std::min<uint32_t>(run->mmio.len, sizeof(run->mmio.data));
        if (run->mmio.is_write) {
          mmio_bus_.Write(run->mmio.phys_addr, {run->mmio.data, len});
        } else {
          mmio_bus_.Read(run->mmio.phys_addr, {run->mmio.data, len});
        }
        break;
      }
      case KVM_EXIT_HLT:
        exit_.Request(kExitGuestShutdown, absl::StrCat("vCPU ", vcpu->id(), " halted"));
        return;
      case KVM_EXIT_SHUTDOWN:
        exit_.Request(kExitTripleFault,
                      absl::StrCat("guest triple fault (KVM_EXIT_SHUTDOWN) on vCPU ", vcpu->id()));
        return;
      case KVM_EXIT_SYSTEM_EVENT:
        if (run->system_event.type == KVM_SYSTEM_EVENT_CRASH) {
          exit_.Request(kExitGuestPanic, "guest crashed (KVM_SYSTEM_EVENT_CRASH)");
        } else {
          exit_.Request(kExitGuestShutdown, "guest shut down (KVM_SYSTEM_EVENT)");
        }
        return;
      case KVM_EXIT_FAIL_ENTRY:
        exit_.Request(kExitKvmError,
                      absl::StrFormat("KVM could not enter the guest on vCPU %d (reason %#x)",
                                      vcpu->id(), run->fail_entry.hardware_entry_failure_reason));
        return;
      case KVM_EXIT_INTERNAL_ERROR:
        exit_.Request(kExitKvmError, absl::StrFormat("KVM internal error on vCPU %d (suberror %d)",
                                                     vcpu->id(), run->internal.suberror));
        return;
      default:
        exit_.Request(kExitKvmError, absl::StrFormat("unexpected KVM exit %d on vCPU %d",
                                                     run->exit_reason, vcpu->id()));
        return;
    }
  }
}

int Vmm::Run(std::string* reason) {
  // SIGTERM, SIGINT and SIGHUP stop the VM: they are read from a signalfd by the event loop, so
  // every thread blocks them. The kick signal interrupts KVM_RUN.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  for (int s : {SIGTERM, SIGINT, SIGHUP}) sigaddset(&stop_signals, s);
  sigset_t old_mask;
  pthread_sigmask(SIG_BLOCK, &stop_signals, &old_mask);
  struct sigaction kick {};
  kick.sa_handler = IgnoreKick;
  sigaction(KickSignal(), &kick, nullptr);

  UniqueFd signal_fd(signalfd(-1, &stop_signals, SFD_CLOEXEC | SFD_NONBLOCK));
  if (signal_fd) {
    const int fd = signal_fd.get();
    absl::Status added = event_loop_->Add(fd, EPOLLIN, [this, fd](uint32_t) {
      signalfd_siginfo info;
      if (read(fd, &info, sizeof(info)) == sizeof(info)) {
        exit_.Request(kExitSignalBase + static_cast<int>(info.ssi_signo),
                      absl::StrCat("stopped by signal ", strsignal(info.ssi_signo)));
      }
    });
    if (!added.ok()) exit_.Request(kExitVmmError, std::string(added.message()));
  } else {
    exit_.Request(kExitVmmError, "signalfd failed");
  }

  {
    absl::MutexLock lock(&threads_mu_);
    for (auto& vcpu : vcpus_) {
      Vcpu* v = vcpu.get();
      vcpu_threads_.emplace_back([this, v] { VcpuLoop(v); });
    }
  }
  while (!exit_.requested()) {
    absl::Status status = event_loop_->RunOnce(-1);
    if (!status.ok()) exit_.Request(kExitVmmError, std::string(status.message()));
  }
  KickVcpus();
  JoinVcpus();
  if (signal_fd) (void)event_loop_->Remove(signal_fd.get());
  pthread_sigmask(SIG_SETMASK, &old_mask, nullptr);
  if (console_) console_->Flush();
  *reason = exit_.reason();
  return exit_.exit_code();
}

}  // namespace kapsel::vmm
