#include "vmm/builder.h"

#include <asm/e820.h>
#include <fcntl.h>
#include <unistd.h>

#include <optional>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status.h"
#include "vmm/arch/x86_64/boot_info.h"
#include "vmm/arch/x86_64/cpu_setup.h"
#include "vmm/arch/x86_64/e820.h"
#include "vmm/arch/x86_64/mptable.h"
#include "vmm/config.h"
#include "vmm/devices/virtio/balloon/balloon_device.h"
#include "vmm/devices/virtio/block/block_device.h"
#include "vmm/devices/virtio/fs/fs_device.h"
#include "vmm/devices/virtio/net/net_device.h"
#include "vmm/devices/virtio/net/tap.h"
#include "vmm/devices/virtio/rng/rng_device.h"
#include "vmm/devices/virtio/vsock/vsock_device.h"
#include "vmm/loader/kernel_loader.h"
#include "vmm/loader/mapped_file.h"
#include "vmm/memory/pmem_region.h"
#include "vmm/vhost_user/frontend.h"

namespace kapsel::vmm {
namespace {

// With free page reporting, the smallest free block the guest reports: 2^4 pages, 64 KiB.
constexpr int kPageReportingOrder = 4;

// An input-file problem is the user's: a usage error naming the flag.
absl::Status FlagError(const absl::Status& status, absl::string_view flag,
                       absl::string_view value) {
  return UsageError(absl::StrCat(flag, " ", value, ": ", status.message()));
}

absl::StatusOr<std::shared_ptr<ConsoleOutput>> OpenConsole(
    const std::string& console, std::function<void(const std::string&)> on_panic) {
  if (console == "off") return std::make_shared<ConsoleOutput>(-1, false, std::move(on_panic));
  if (console == "stdout") {
    return std::make_shared<ConsoleOutput>(STDOUT_FILENO, false, std::move(on_panic));
  }
  int fd = open(console.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return FlagError(ErrnoError("cannot create the file"), "--console", console);
  return std::make_shared<ConsoleOutput>(fd, true, std::move(on_panic));
}

// "--net fd=N,mac=..." as the user wrote it, for errors.
std::string NetFlagValue(const v1::NetConfig& net) {
  std::string s = net.tap_name().empty() ? absl::StrCat("fd=", net.tap_fd())
                                         : absl::StrCat("tap=", net.tap_name());
  absl::StrAppend(&s, ",mac=", net.mac());
  if (net.mtu() != 0) absl::StrAppend(&s, ",mtu=", net.mtu());
  return s;
}

// Takes over the inherited tap fd or opens the named tap (before the machine exists, so a bad
// tap stops the build early).
absl::StatusOr<virtio::NetDevice::Options> OpenNet(const v1::NetConfig& net) {
  absl::StatusOr<virtio::Tap> tap = net.tap_name().empty()
                                        ? virtio::AdoptTap(UniqueFd(net.tap_fd()))
                                        : virtio::OpenTap(net.tap_name());
  if (!tap.ok()) return FlagError(tap.status(), "--net", NetFlagValue(net));
  absl::StatusOr<std::array<uint8_t, 6>> mac = ParseMac(net.mac());
  if (!mac.ok()) return FlagError(mac.status(), "--net", NetFlagValue(net));
  return virtio::NetDevice::Options{.tap = *std::move(tap), .mac = *mac, .mtu = net.mtu()};
}

}  // namespace

absl::StatusOr<std::unique_ptr<Vmm>> BuildVmm(const v1::VmConfig& config) {
  // Read every input before creating anything, so a bad argument leaves nothing behind.
  absl::StatusOr<std::unique_ptr<MappedFile>> kernel_file = MappedFile::Open(config.kernel());
  if (!kernel_file.ok()) return FlagError(kernel_file.status(), "--kernel", config.kernel());
  std::unique_ptr<MappedFile> initrd_file;
  if (!config.initrd().empty()) {
    absl::StatusOr<std::unique_ptr<MappedFile>> f = MappedFile::Open(config.initrd());
    if (!f.ok()) return FlagError(f.status(), "--initrd", config.initrd());
    initrd_file = *std::move(f);
  }
  std::vector<std::unique_ptr<virtio::VirtioDevice>> disks;
  for (const v1::DiskConfig& disk : config.disks()) {
    absl::StatusOr<std::unique_ptr<virtio::BlockDevice>> device = virtio::BlockDevice::Open(
        {.path = disk.path(), .read_only = disk.read_only(), .serial = ""});
    if (!device.ok()) return FlagError(device.status(), "--disk", disk.path());
    disks.push_back(*std::move(device));
  }
  // virtio-fs backends: connect now, so that a backend that is not there stops us before any
  // machine exists. Not a usage error (exit 1): the socket path may be right and the backend late.
  std::vector<std::unique_ptr<vhost_user::Frontend>> fs_backends;
  for (const v1::FsConfig& fs : config.fs()) {
    absl::StatusOr<std::unique_ptr<vhost_user::Frontend>> frontend =
        vhost_user::Frontend::Connect(fs.socket_path());
    if (!frontend.ok()) {
      return Annotate(frontend.status(), absl::StrCat("--fs ", fs.tag(), ",", fs.socket_path()));
    }
    fs_backends.push_back(*std::move(frontend));
  }
  std::vector<virtio::NetDevice::Options> nets;
  for (const v1::NetConfig& net : config.net()) {
    ASSIGN_OR_RETURN(virtio::NetDevice::Options options, OpenNet(net));
    nets.push_back(std::move(options));
  }

  // Guest memory with the kernel and initrd in place.
  ASSIGN_OR_RETURN(std::unique_ptr<GuestMemory> guest_memory,
                   GuestMemory::Create(x86::RamRanges(uint64_t{config.mem_mib()} << 20)));
  absl::StatusOr<LoadedKernel> kernel =
      LoadKernel(kernel_file.value()->bytes(), *guest_memory,
                 config.private_kernel() ? -1 : kernel_file.value()->fd());
  if (!kernel.ok()) return FlagError(kernel.status(), "--kernel", config.kernel());
  std::optional<GuestRange> initrd;
  if (initrd_file) {
    absl::StatusOr<GuestRange> placed =
        x86::LoadInitrd(initrd_file->bytes(), *guest_memory, kernel->end);
    if (!placed.ok()) return FlagError(placed.status(), "--initrd", config.initrd());
    initrd = *placed;
  }
  kernel_file->reset();
  initrd_file.reset();
  std::unique_ptr<PmemRegion> pmem;
  if (config.has_pmem()) {
    absl::StatusOr<std::unique_ptr<PmemRegion>> region =
        PmemRegion::Map(config.pmem().path(), x86::PmemGuestAddress(*guest_memory));
    if (!region.ok()) return FlagError(region.status(), "--pmem", config.pmem().path());
    pmem = *std::move(region);
  }

  // A console file this call creates is removed again if the build fails.
  const bool console_is_file = config.console() != "off" && config.console() != "stdout";
  const bool console_existed = console_is_file && access(config.console().c_str(), F_OK) == 0;
  absl::Cleanup remove_console = [&] {
    if (console_is_file && !console_existed) unlink(config.console().c_str());
  };

  // The console watches for a guest panic; the Vmm it reports to exists only later.
  auto vmm_slot = std::make_shared<Vmm*>(nullptr);
  ASSIGN_OR_RETURN(std::shared_ptr<ConsoleOutput> console,
                   OpenConsole(config.console(), [vmm_slot](const std::string& line) {
                     if (*vmm_slot != nullptr) (*vmm_slot)->RequestExit(kExitGuestPanic, line);
                   }));

  MachineConfig machine;
  machine.mem_bytes = uint64_t{config.mem_mib()} << 20;
  machine.vcpus = config.vcpus();
  machine.console = console;
  machine.allow_pvm = config.allow_pvm();
  ASSIGN_OR_RETURN(std::unique_ptr<Vmm> vmm, Vmm::CreateMachine(machine, std::move(guest_memory)));
  const GuestMemory& memory = vmm->memory();
  *vmm_slot = vmm.get();

  std::vector<std::string> cmdline = {config.cmdline()};
  std::vector<x86::E820Entry> device_memory;
  if (pmem) {
    device_memory.push_back({pmem->guest_start(), pmem->size(), E820_PRAM});
    // First on the line, so that --cmdline can override any of it.
    if (config.pmem().root()) {
      cmdline.insert(cmdline.begin(), "root=/dev/pmem0 rootflags=dax ro rootwait");
    }
    RETURN_IF_ERROR(vmm->AddPmem(std::move(pmem)));
  }
  // A guest that boots with one CPU rewrites every lock prefix of its text for uniprocessor use,
  // which would make most of the shared text pages private copies.
  if (kernel->shared_bytes > 0) cmdline.push_back("noreplace-smp");
  ASSIGN_OR_RETURN(std::string rng_entry,
                   vmm->AddVirtioDevice(std::make_unique<virtio::RngDevice>()));
  cmdline.push_back(rng_entry);
  if (config.free_page_reporting()) {
    // What the guest frees goes back to the host: free blocks of 64 KiB and up, not only the
    // 2 MiB blocks Linux reports by default (what a guest frees at boot, its init memory and the
    // gap between its text and rodata, sits in blocks of 64 KiB to 1 MiB; kernel-config/patches
    // makes Linux keep this order). First on the line, so that --cmdline can override it.
    cmdline.insert(cmdline.begin(),
                   absl::StrCat("page_reporting.page_reporting_order=", kPageReportingOrder));
    ASSIGN_OR_RETURN(std::string balloon_entry,
                     vmm->AddVirtioDevice(std::make_unique<virtio::BalloonDevice>()));
    cmdline.push_back(balloon_entry);
  }
  for (auto& disk : disks) {
    ASSIGN_OR_RETURN(std::string entry, vmm->AddVirtioDevice(std::move(disk)));
    cmdline.push_back(entry);
  }
  if (config.has_vsock()) {
    // Listens on the socket path now: a path in use stops the build here.
    absl::StatusOr<std::unique_ptr<virtio::VsockDevice>> vsock = virtio::VsockDevice::Create(
        {.guest_cid = config.vsock().guest_cid(), .uds_path = config.vsock().uds_path()},
        &vmm->event_loop());
    if (!vsock.ok()) return FlagError(vsock.status(), "--vsock", config.vsock().uds_path());
    ASSIGN_OR_RETURN(std::string entry, vmm->AddVirtioDevice(*std::move(vsock)));
    cmdline.push_back(entry);
  }
  for (int i = 0; i < config.fs_size(); ++i) {
    const v1::FsConfig& fs = config.fs(i);
    // A backend that dies or hangs stops the VM (exit 1, the message names the tag): the guest's
    // file system requests could never complete (see fs_device.h).
    Vmm* raw = vmm.get();
    absl::StatusOr<std::unique_ptr<virtio::FsDevice>> device = virtio::FsDevice::Create(
        fs.tag(), std::move(fs_backends[i]), &vmm->event_loop(),
        [raw](const std::string& why) { raw->RequestExit(kExitVmmError, why); });
    if (!device.ok()) {
      return Annotate(device.status(), absl::StrCat("--fs ", fs.tag(), ",", fs.socket_path()));
    }
    ASSIGN_OR_RETURN(std::string entry, vmm->AddVirtioDevice(*std::move(device)));
    cmdline.push_back(entry);
  }
  for (int i = 0; i < config.net_size(); ++i) {
    absl::StatusOr<std::unique_ptr<virtio::NetDevice>> device =
        virtio::NetDevice::Create(std::move(nets[i]), &vmm->event_loop());
    if (!device.ok()) return FlagError(device.status(), "--net", NetFlagValue(config.net(i)));
    ASSIGN_OR_RETURN(std::string entry, vmm->AddVirtioDevice(*std::move(device)));
    cmdline.push_back(entry);
  }

  absl::Status boot_info =
      x86::WriteBootInfo(memory, *kernel, absl::StrJoin(cmdline, " "), initrd, device_memory);
  if (!boot_info.ok()) return FlagError(boot_info, "--cmdline", "");
  RETURN_IF_ERROR(x86::WriteMpTable(memory, config.vcpus()));
  RETURN_IF_ERROR(x86::ConfigureBootVcpu(vmm->vcpu(0), memory, *kernel));
  std::move(remove_console).Cancel();
  return vmm;
}

}  // namespace kapsel::vmm
