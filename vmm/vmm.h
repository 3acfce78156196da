// A running microVM: the KVM VM, guest memory, the buses and their devices, the vCPU threads and
// the device event loop. Created in two steps: CreateMachine() builds the hardware (no guest yet);
// the builder (builder.h) then adds virtio devices and loads a kernel. Run() runs the guest to its
// end and tears everything down: no thread or fd outlives the Vmm.
#ifndef KAPSEL_VMM_VMM_H_
#define KAPSEL_VMM_VMM_H_

#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "vmm/devices/bus.h"
#include "vmm/devices/interrupt.h"
#include "vmm/devices/legacy/console_output.h"
#include "vmm/devices/virtio/virtio_device.h"
#include "vmm/event_loop.h"
#include "vmm/kvm/kvm.h"
#include "vmm/memory/guest_memory.h"
#include "vmm/memory/pmem_region.h"
#include "vmm/vm_exit.h"

namespace kapsel::vmm {

namespace virtio {
class MmioTransport;
}

struct MachineConfig {
  uint64_t mem_bytes = 256ULL << 20;
  uint32_t vcpus = 1;
  // Where the serial console goes; nullptr drops it.
  std::shared_ptr<ConsoleOutput> console;
  // Refuse a PVM /dev/kvm unless this is set (tiny test payloads run there; Linux does not).
  bool allow_pvm = false;
};

class Vmm {
 public:
  // `memory` may already hold the guest (kernel, initrd); nullptr creates empty memory of
  // config.mem_bytes.
  static absl::StatusOr<std::unique_ptr<Vmm>> CreateMachine(
      const MachineConfig& config, std::unique_ptr<GuestMemory> memory = nullptr);
  ~Vmm();

  // Puts a virtio device on the next virtio-mmio slot (window + IRQ) and wires its queue
  // notifications (ioeventfd) and interrupt (irqfd). Returns the kernel command line entry that
  // announces it (virtio_mmio.device=4K@ADDR:IRQ).
  absl::StatusOr<std::string> AddVirtioDevice(std::unique_ptr<virtio::VirtioDevice> device);

  // Gives the guest `region` as memory outside RAM (a KVM memory slot of its own); the Vmm keeps
  // the mapping until it is destroyed. The guest learns of it through the memory map (e820.h).
  absl::Status AddPmem(std::unique_ptr<PmemRegion> region);

  const GuestMemory& memory() const { return *memory_; }
  // The loop Run() serves: devices with host-side file descriptors (vsock sockets) register here.
  EventLoop& event_loop() { return *event_loop_; }
  const Kvm& kvm() const { return *kvm_; }
  Vcpu& vcpu(size_t index) { return *vcpus_[index]; }
  size_t num_vcpus() const { return vcpus_.size(); }
  const Bus& pio_bus() const { return pio_bus_; }
  const Bus& mmio_bus() const { return mmio_bus_; }

  // Runs the guest until it stops (poweroff/reboot, panic, fault, KVM error) or the process gets
  // SIGTERM/SIGINT/SIGHUP. Returns the exit code (vm_exit.h) and fills *reason.
  int Run(std::string* reason);
  // Asks the VM to stop with this exit code (the first request wins). Thread-safe.
  void RequestExit(int exit_code, std::string reason) {
    exit_.Request(exit_code, std::move(reason));
  }

 private:
  explicit Vmm(std::shared_ptr<ConsoleOutput> console);
  void VcpuLoop(Vcpu* vcpu);
  void KickVcpus();
  void JoinVcpus();

  std::shared_ptr<ConsoleOutput> console_;
  std::unique_ptr<Kvm> kvm_;
  std::unique_ptr<Vm> vm_;
  std::unique_ptr<GuestMemory> memory_;
  std::vector<std::unique_ptr<PmemRegion>> pmem_;
  uint32_t next_memory_slot_ = 0;
  std::unique_ptr<EventLoop> event_loop_;
  VmExit exit_;
  Bus pio_bus_{"port I/O"};
  Bus mmio_bus_{"MMIO"};
  std::vector<std::unique_ptr<Vcpu>> vcpus_;
  std::vector<std::shared_ptr<virtio::MmioTransport>> transports_;
  std::vector<UniqueFd> queue_eventfds_;
  absl::Mutex threads_mu_;
  std::vector<std::thread> vcpu_threads_ ABSL_GUARDED_BY(threads_mu_);
};

}  // namespace kapsel::vmm

#endif  // KAPSEL_VMM_VMM_H_
