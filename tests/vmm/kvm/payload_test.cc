// Tiny guest payloads run on this machine's /dev/kvm (hardware KVM or PVM, where simple
// instructions are emulated) through the real Vmm: its vCPU loop, port I/O and MMIO buses, serial
// console, i8042 reset line, virtio-mmio window, exit reasons and signal handling.
#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "vmm/arch/x86_64/cpu_setup.h"
#include "vmm/devices/virtio/rng/rng_device.h"
#include "vmm/vm_exit.h"
#include "vmm/vmm.h"

namespace kapsel::vmm {
namespace {

constexpr uint64_t kPayloadAddress = 0x1000;

struct Outcome {
  int exit_code = -1;
  std::string reason;
  std::string console;
};

// Byte helpers for 32-bit code.
void Emit(std::vector<uint8_t>& code, std::initializer_list<uint8_t> bytes) {
  code.insert(code.end(), bytes);
}
void OutSerial(std::vector<uint8_t>& code, char c) {
  Emit(code, {0x66, 0xba, 0xf8, 0x03});               // mov dx, 0x3f8
  Emit(code, {0xb0, static_cast<uint8_t>(c), 0xee});  // mov al, c; out dx, al
}
void ResetViaI8042(std::vector<uint8_t>& code) {
  Emit(code, {0xb0, 0xfe, 0xe6, 0x64});  // mov al, 0xfe; out 0x64, al
  Emit(code, {0xeb, 0xfe});              // jmp $ (never reached)
}

// Builds a 1-vCPU machine (with a virtio-rng at the first virtio-mmio slot when asked), puts the
// vCPU in 32-bit protected mode at the payload, runs it and returns how it ended.
Outcome RunPayload(const std::vector<uint8_t>& code, bool with_rng = false,
                   std::function<void()> during_run = nullptr) {
  Outcome outcome;
  int console_fd = memfd_create("console", MFD_CLOEXEC);
  EXPECT_GE(console_fd, 0);
  MachineConfig config;
  config.mem_bytes = 32 << 20;
  config.console = std::make_shared<ConsoleOutput>(console_fd, false, nullptr);
  config.allow_pvm = true;
  absl::StatusOr<std::unique_ptr<Vmm>> vmm = Vmm::CreateMachine(config);
  EXPECT_TRUE(vmm.ok()) << vmm.status();
  if (!vmm.ok()) return outcome;
  if (with_rng) {
    absl::StatusOr<std::string> entry =
        (*vmm)->AddVirtioDevice(std::make_unique<virtio::RngDevice>());
    EXPECT_TRUE(entry.ok()) << entry.status();
    EXPECT_EQ(*entry, "virtio_mmio.device=4K@0xd0000000:5");
  }
  EXPECT_TRUE((*vmm)->memory().Write(kPayloadAddress, code.data(), code.size()).ok());
  LoadedKernel payload{BootProtocol::kPvh, kPayloadAddress, kPayloadAddress + code.size(), {}};
  absl::Status boot = x86::ConfigureBootVcpu((*vmm)->vcpu(0), (*vmm)->memory(), payload);
  EXPECT_TRUE(boot.ok()) << boot;

  std::thread helper;
  if (during_run) helper = std::thread(during_run);
  outcome.exit_code = (*vmm)->Run(&outcome.reason);
  if (helper.joinable()) helper.join();
  vmm->reset();
  config.console->Flush();
  char buffer[4096];
  ssize_t n = pread(console_fd, buffer, sizeof(buffer), 0);
  if (n > 0) outcome.console.assign(buffer, n);
  close(console_fd);
  return outcome;
}

TEST(KvmPayload, SerialOutputAndI8042Reset) {
  std::vector<uint8_t> code;
  for (char c : std::string("hello\n")) OutSerial(code, c);
  ResetViaI8042(code);
  Outcome o = RunPayload(code);
  EXPECT_EQ(o.exit_code, kExitGuestShutdown) << o.reason;
  EXPECT_EQ(o.reason, "guest reset");
  EXPECT_EQ(o.console, "hello\n");
}

TEST(KvmPayload, ReadsTheVirtioMmioWindow) {
  std::vector<uint8_t> code;
  Emit(code, {0xa1, 0x00, 0x00, 0x00, 0xd0});  // mov eax, [0xd0000000]  (MagicValue)
  Emit(code, {0x66, 0xba, 0xf8, 0x03});        // mov dx, 0x3f8
  for (int i = 0; i < 4; ++i) {
    Emit(code, {0xee});              // out dx, al
    Emit(code, {0xc1, 0xe8, 0x08});  // shr eax, 8
  }
  Emit(code, {0xa1, 0x08, 0x00, 0x00, 0xd0});  // mov eax, [0xd0000008]  (DeviceID)
  Emit(code, {0x04, '0', 0xee});               // add al, '0'; out dx, al
  Emit(code, {0xa1, 0x04, 0x00, 0x00, 0xd0});  // mov eax, [0xd0000004]  (Version)
  Emit(code, {0x04, '0', 0xee});               // add al, '0'; out dx, al
  Emit(code, {0xa1, 0x00, 0x00, 0x00, 0xe0});  // mov eax, [0xe0000000]  (nothing there)
  Emit(code, {0x04, 0x01, 0x04, '0', 0xee});   // add al, 1; add al, '0'; out dx, al: "0" if 0xff..
  ResetViaI8042(code);
  Outcome o = RunPayload(code, /*with_rng=*/true);
  EXPECT_EQ(o.exit_code, kExitGuestShutdown) << o.reason;
  // "virt", device 4 (entropy), version 2, and all-ones from an unclaimed address.
  EXPECT_EQ(o.console, "virt420");
}

TEST(KvmPayload, TripleFaultIsReported) {
  std::vector<uint8_t> code;
  OutSerial(code, '!');
  Emit(code, {0x0f, 0x0b});  // ud2 with an empty IDT: #UD -> #DF -> triple fault
  Outcome o = RunPayload(code);
  EXPECT_EQ(o.console, "!");
  EXPECT_EQ(o.exit_code, kExitTripleFault) << o.reason;
}

TEST(KvmPayload, SigtermStopsASpinningGuest) {
  // Block SIGTERM here so the helper thread inherits the mask and the signal stays pending for
  // the Vmm's signalfd, as in kapsel-vmm (whose only thread is the one that calls Run).
  sigset_t term, old;
  sigemptyset(&term);
  sigaddset(&term, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &term, &old);
  std::vector<uint8_t> code;
  OutSerial(code, 'x');
  Emit(code, {0xeb, 0xfe});  // jmp $
  Outcome o = RunPayload(code, false, [] {
    usleep(300 * 1000);
    kill(getpid(), SIGTERM);
  });
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
  EXPECT_EQ(o.exit_code, kExitSignalBase + SIGTERM) << o.reason;
  EXPECT_EQ(o.console, "x");
}

}  // namespace
}  // namespace kapsel::vmm
