// kapsel-vmm boots the real guest kernel and initramfs (the marker /init) and the guest reports
// what it sees. Needs a KVM that boots Linux: ctest runs it through tests/testhost/e2e (directly on
// hardware KVM, inside the test host otherwise).
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/support/subprocess.h"
#include "tests/vmm/net/offload_test_util.h"

namespace kapsel {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

const std::string kVmm = KAPSEL_BIN_DIR "/kapsel-vmm";
const std::string kVmlinux = KAPSEL_GUEST_DIR "/vmlinux";
const std::string kBzImage = KAPSEL_GUEST_DIR "/bzImage";
const std::string kInitramfs = KAPSEL_INITRAMFS;
const std::string kMarkerImage = KAPSEL_MARKER_IMAGE;  // the marker init in an ext4 root image
constexpr char kMarker[] = "KAPSEL_GUEST_READY";
// The default command line plus kapsel.hold: the guest stays up after the marker until the VM is
// stopped from outside.
constexpr char kHoldCmdline[] = "console=ttyS0 reboot=k panic=-1 quiet kapsel.hold";
const absl::Duration kBootTimeout = absl::Seconds(120);

// A temporary file removed at the end of the test.
class TempFile {
 public:
  explicit TempFile(const std::string& contents, size_t size = 0) {
    char path[] = "/tmp/kapsel-e2e-XXXXXX";
    int fd = mkstemp(path);
    path_ = path;
    std::string data = contents;
    if (data.size() < size) data.resize(size, '\0');
    EXPECT_EQ(write(fd, data.data(), data.size()), static_cast<ssize_t>(data.size()));
    close(fd);
  }
  ~TempFile() { unlink(path_.c_str()); }
  const std::string& path() const { return path_; }
  std::string Read() const {
    std::ifstream in(path_, std::ios::binary);
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
  }

 private:
  std::string path_;
};

std::vector<std::string> VmmArgs(const std::string& kernel, std::vector<std::string> extra = {}) {
  std::vector<std::string> args = {kVmm,       "--kernel", kernel, "--initrd",
                                   kInitramfs, "--mem",    "256"};
  args.insert(args.end(), extra.begin(), extra.end());
  return args;
}

testing::ProcessResult Boot(const std::vector<std::string>& args) {
  absl::StatusOr<testing::ProcessResult> result = testing::RunProcess(args, kBootTimeout);
  EXPECT_TRUE(result.ok()) << result.status();
  if (!result.ok()) return {};
  EXPECT_FALSE(result->timed_out) << "kapsel-vmm did not finish; output:\n" << result->out;
  return *result;
}

TEST(VmmBoot, VmlinuxBootsToMarkerAndPowersOff) {
  testing::ProcessResult r = Boot(VmmArgs(kVmlinux));
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_THAT(r.out, HasSubstr(kMarker));
  EXPECT_THAT(r.out, HasSubstr("kapsel-guest: cpus=1"));
  // virtio-rng delivered 16 random bytes.
  EXPECT_TRUE(std::regex_search(r.out, std::regex("kapsel-guest: rng=[0-9a-f]{32}\r?\n"))) << r.out;
}

TEST(VmmBoot, TwoVcpusComeOnline) {
  testing::ProcessResult r = Boot(VmmArgs(kVmlinux, {"--vcpus", "2"}));
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_THAT(r.out, HasSubstr("kapsel-guest: cpus=2"));
  EXPECT_THAT(r.out, HasSubstr(kMarker));
}

TEST(VmmBoot, BzImageBoots) {
  testing::ProcessResult r = Boot(VmmArgs(kBzImage, {"--vcpus", "2"}));
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_THAT(r.out, HasSubstr("kapsel-guest: cpus=2"));
  EXPECT_THAT(r.out, HasSubstr(kMarker));
}

TEST(VmmBoot, GuestReadsAndWritesAVirtioDisk) {
  TempFile disk("hello from the host disk\n", 1 << 20);
  testing::ProcessResult r =
      Boot(VmmArgs(kVmlinux, {"--disk", disk.path(), "--cmdline",
                              "console=ttyS0 reboot=k panic=-1 quiet kapsel.write_disk"}));
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_THAT(r.out, HasSubstr("kapsel-guest: disk vda: hello from the host disk"));
  EXPECT_THAT(r.out, HasSubstr("kapsel-guest: disk vda write: ok"));
  const std::string contents = disk.Read();
  ASSERT_EQ(contents.size(), 1u << 20);
  EXPECT_EQ(contents.substr(512, 21), "written by the guest\n");
  EXPECT_EQ(contents.substr(0, 25), "hello from the host disk\n");
}

TEST(VmmBoot, ReadOnlyDiskRefusesWrites) {
  TempFile disk("read-only disk\n", 1 << 20);
  TempFile second("second disk\n", 64 << 10);
  testing::ProcessResult r =
      Boot(VmmArgs(kVmlinux, {"--disk", disk.path() + ",ro", "--disk", second.path(), "--cmdline",
                              "console=ttyS0 reboot=k panic=-1 quiet kapsel.write_disk"}));
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_THAT(r.out, HasSubstr("kapsel-guest: disk vda: read-only disk"));
  EXPECT_THAT(r.out, HasSubstr("kapsel-guest: disk vdb: second disk"));
  EXPECT_THAT(r.out, Not(HasSubstr("kapsel-guest: disk vda write: ok")));
  EXPECT_EQ(disk.Read().substr(512, 20), std::string(20, '\0'));
}

TEST(VmmBoot, GuestPanicExitsWithCode3) {
  testing::ProcessResult r = Boot(
      VmmArgs(kVmlinux, {"--cmdline", "console=ttyS0 reboot=k panic=-1 quiet kapsel.exit_init"}));
  EXPECT_EQ(r.exit_code, 3) << r.out << r.err;
  EXPECT_THAT(r.out, HasSubstr(kMarker));
  EXPECT_THAT(r.err, HasSubstr("Kernel panic - not syncing"));
}

TEST(VmmBoot, ConsoleToFileAndOff) {
  TempFile console("");
  testing::ProcessResult to_file = Boot(VmmArgs(kVmlinux, {"--console", console.path()}));
  EXPECT_EQ(to_file.exit_code, 0) << to_file.err;
  EXPECT_THAT(to_file.out, Not(HasSubstr(kMarker)));
  EXPECT_THAT(console.Read(), HasSubstr(kMarker));

  testing::ProcessResult off = Boot(VmmArgs(kVmlinux, {"--console", "off"}));
  EXPECT_EQ(off.exit_code, 0) << off.err;
  EXPECT_THAT(off.out, Not(HasSubstr(kMarker)));
}

TEST(VmmBoot, FreePageReportingGivesMemoryBack) {
  // With --free-page-reporting the guest's virtio-balloon driver reports free memory (first all
  // of it, a few seconds after boot); kapsel-vmm punches it out of the guest memory file and says
  // how much at exit. Without the flag there is no balloon device (the other cases).
  auto vmm = testing::Subprocess::Start(
      VmmArgs(kVmlinux, {"--free-page-reporting", "--cmdline", kHoldCmdline}));
  ASSERT_TRUE(vmm.ok()) << vmm.status();
  ASSERT_TRUE((*vmm)->WaitForOutput(kMarker, kBootTimeout));
  absl::SleepFor(absl::Seconds(8));  // the guest reports after a 2 s delay
  (*vmm)->Signal(SIGTERM);
  testing::ProcessResult r = (*vmm)->Wait(absl::Seconds(30));
  EXPECT_EQ(r.exit_code, 128 + SIGTERM) << r.err;
  // Most of a 256 MiB guest that only booted is free.
  const std::string prefix = "free page reporting gave back ";
  const size_t at = r.err.find(prefix);
  ASSERT_NE(at, std::string::npos) << r.err;
  const long kib = std::atol(r.err.c_str() + at + prefix.size());
  EXPECT_GT(kib, 100 * 1024) << r.err;
}

// The kB figures of the mappings in /proc/<pid>/smaps whose header line `match`es, summed:
// {"Rss", n}, {"Pss", n}...
std::map<std::string, long> Smaps(pid_t pid, const std::function<bool(const std::string&)>& match) {
  std::ifstream in(absl::StrCat("/proc/", pid, "/smaps"));
  std::map<std::string, long> kib;
  std::string line;
  bool counted = false;
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    std::string first, second;
    fields >> first >> second;
    if (first.empty()) continue;
    if (first.back() != ':') {  // a mapping's header line: range perms offset dev inode path
      counted = match(line);
      continue;
    }
    if (counted) kib[first.substr(0, first.size() - 1)] += std::atol(second.c_str());
  }
  return kib;
}

// The mappings of file `path`.
std::map<std::string, long> SmapsOfFile(pid_t pid, const std::string& path) {
  return Smaps(pid, [&path](const std::string& header) { return absl::EndsWith(header, path); });
}

TEST(VmmBoot, KernelTextIsSharedBetweenVms) {
  // Two guests of the same vmlinux map its text copy-on-write from the file: the pages they run
  // are the page cache's, counted once for both (Pss below Rss), and only the few the guest
  // patches at boot are private copies (noreplace-smp keeps a one-vCPU guest from rewriting
  // every lock prefix). With --private-kernel the file is not mapped at all.
  char resolved[PATH_MAX];
  ASSERT_NE(realpath(kVmlinux.c_str(), resolved), nullptr) << kVmlinux;
  const std::string vmlinux = resolved;
  const std::vector<std::string> hold = {"--cmdline", kHoldCmdline};
  std::vector<std::unique_ptr<testing::Subprocess>> vms;
  for (int i = 0; i < 2; ++i) {
    auto vmm = testing::Subprocess::Start(VmmArgs(kVmlinux, hold));
    ASSERT_TRUE(vmm.ok()) << vmm.status();
    vms.push_back(*std::move(vmm));
  }
  std::vector<std::string> private_args = hold;
  private_args.push_back("--private-kernel");
  auto private_vmm = testing::Subprocess::Start(VmmArgs(kVmlinux, private_args));
  ASSERT_TRUE(private_vmm.ok()) << private_vmm.status();
  for (auto& vm : vms) ASSERT_TRUE(vm->WaitForOutput(kMarker, kBootTimeout));
  ASSERT_TRUE((*private_vmm)->WaitForOutput(kMarker, kBootTimeout));

  for (auto& vm : vms) {
    std::map<std::string, long> text = SmapsOfFile(vm->pid(), vmlinux);
    EXPECT_GT(text["Rss"], 1024) << "the guest runs megabytes of its text from the file";
    EXPECT_LT(text["Pss"], text["Rss"]) << "not shared with the other VM";
    EXPECT_GT(text["Shared_Clean"], 1024);
    EXPECT_LT(text["Private_Dirty"], text["Rss"] / 4) << "the guest wrote most of its text pages";
  }
  EXPECT_EQ(SmapsOfFile((*private_vmm)->pid(), vmlinux)["Rss"], 0);

  for (auto& vm : vms) vm->Signal(SIGTERM);
  (*private_vmm)->Signal(SIGTERM);
  for (auto& vm : vms) EXPECT_EQ(vm->Wait(absl::Seconds(30)).exit_code, 128 + SIGTERM);
  EXPECT_EQ((*private_vmm)->Wait(absl::Seconds(30)).exit_code, 128 + SIGTERM);
}

// Kilobytes of guest RAM the VMM holds (its memfd's resident pages).
long GuestRamKib(pid_t pid) {
  return Smaps(pid, [](const std::string& header) {
    return absl::StrContains(header, "kapsel-guest-ram");
  })["Rss"];
}

TEST(VmmBoot, FreePageReportingReturnsBlocksSmallerThan2MiB) {
  // At boot Linux frees its init memory and the gap between its text and rodata, in blocks of
  // 64 KiB to 1 MiB beside pages in use: reported only from 2 MiB up (Linux's default order 9,
  // which a later page_reporting.page_reporting_order= on the line restores), they stay resident
  // on the host; kapsel-vmm's order 4 gives them back. Both guests run at once, with reporting.
  auto small = testing::Subprocess::Start(
      VmmArgs(kVmlinux, {"--free-page-reporting", "--cmdline", kHoldCmdline}));
  ASSERT_TRUE(small.ok()) << small.status();
  auto large = testing::Subprocess::Start(
      VmmArgs(kVmlinux, {"--free-page-reporting", "--cmdline",
                         absl::StrCat(kHoldCmdline, " page_reporting.page_reporting_order=9")}));
  ASSERT_TRUE(large.ok()) << large.status();
  ASSERT_TRUE((*small)->WaitForOutput(kMarker, kBootTimeout));
  ASSERT_TRUE((*large)->WaitForOutput(kMarker, kBootTimeout));
  absl::SleepFor(absl::Seconds(8));  // reporting runs 2 s after a free, in rounds
  const long small_kib = GuestRamKib((*small)->pid());
  const long large_kib = GuestRamKib((*large)->pid());
  (*small)->Signal(SIGTERM);
  (*large)->Signal(SIGTERM);
  EXPECT_EQ((*small)->Wait(absl::Seconds(30)).exit_code, 128 + SIGTERM);
  EXPECT_EQ((*large)->Wait(absl::Seconds(30)).exit_code, 128 + SIGTERM);
  EXPECT_LT(small_kib + 1024, large_kib)
      << "guest RAM " << small_kib << " KiB reporting from 64 KiB, " << large_kib
      << " KiB from 2 MiB";
  std::printf("idle guest RAM: %ld KiB reporting free blocks from 64 KiB, %ld KiB from 2 MiB\n",
              small_kib, large_kib);
}

TEST(VmmBoot, BootsFromAPmemRootThatVmsShare) {
  // --pmem IMAGE,root: no initramfs; the kernel mounts the image's ext4 from /dev/pmem0 with DAX
  // and runs its /init from the image's pages, which are the host page cache's: two VMs share
  // them (Pss below Rss) and neither copies the init program into its RAM.
  char resolved[PATH_MAX];
  ASSERT_NE(realpath(kMarkerImage.c_str(), resolved), nullptr) << kMarkerImage;
  const std::string image = resolved;
  std::vector<std::unique_ptr<testing::Subprocess>> vms;
  for (int i = 0; i < 2; ++i) {
    auto vmm = testing::Subprocess::Start({kVmm, "--kernel", kVmlinux, "--mem", "256", "--pmem",
                                           image + ",root", "--cmdline", kHoldCmdline});
    ASSERT_TRUE(vmm.ok()) << vmm.status();
    vms.push_back(*std::move(vmm));
  }
  for (auto& vm : vms) ASSERT_TRUE(vm->WaitForOutput(kMarker, kBootTimeout));
  for (auto& vm : vms) {
    std::map<std::string, long> mapped = SmapsOfFile(vm->pid(), image);
    EXPECT_GT(mapped["Rss"], 200) << "the guest ran its init from the image";
    EXPECT_LT(mapped["Pss"], mapped["Rss"]) << "not shared with the other VM";
    // A page the guest writes becomes a private copy (Anonymous). Of the read-only root Linux
    // sometimes writes one or two pages (seen: the one at 4 KiB, where libnvdimm looks for an
    // info block); the rest must stay shared.
    EXPECT_LT(mapped["Anonymous"], mapped["Rss"] / 8) << "the guest wrote to its read-only root";
  }
  for (auto& vm : vms) vm->Signal(SIGTERM);
  for (auto& vm : vms) {
    testing::ProcessResult r = vm->Wait(absl::Seconds(30));
    EXPECT_EQ(r.exit_code, 128 + SIGTERM);
    EXPECT_TRUE(std::regex_search(
        r.out, std::regex("kapsel-guest: root /dev/root ext4 ro,[^\r\n]*dax=always")))
        << r.out;
  }
}

TEST(VmmBoot, PmemImageOfTheWrongSizeIsAUsageError) {
  char path[] = "/var/tmp/kapsel-pmem-XXXXXX";
  const int fd = mkstemp(path);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(ftruncate(fd, (2 << 20) + 4096), 0);
  close(fd);
  testing::ProcessResult r = Boot(VmmArgs(kVmlinux, {"--pmem", path}));
  unlink(path);
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_THAT(r.err, HasSubstr("--pmem"));
  EXPECT_THAT(r.err, HasSubstr("not a multiple of 2 MiB"));
}

TEST(VmmBoot, ReceivedTrafficLeavesLittleGuestMemoryInRxBuffers) {
  // The guest's virtio-net driver keeps its rx ring full of buffers. With mergeable rx buffers
  // they are small and a 64 KiB frame takes as many as it needs; a Linux driver that takes
  // GUEST_TSO without them posts 256 chains of 18 pages, and once frames have filled them the
  // ring holds 18 MiB for good. The host sends 512 coalesced 64 KiB TCP frames through the tap
  // (nothing in the guest listens: they are dropped after the driver took them).
  const std::string tap = "kbootnet0";
  auto vmm = testing::Subprocess::Start(
      VmmArgs(kVmlinux, {"--net", absl::StrCat("tap=", tap, ",mac=52:54:00:12:34:56"), "--cmdline",
                         absl::StrCat(kHoldCmdline, " kapsel.net_up")}));
  ASSERT_TRUE(vmm.ok()) << vmm.status();
  ASSERT_TRUE((*vmm)->WaitForOutput(kMarker, kBootTimeout));
  absl::SleepFor(absl::Seconds(1));
  const long before = GuestRamKib((*vmm)->pid());
  ASSERT_TRUE(vmm::virtio::testing::BringUp(tap).ok());
  absl::StatusOr<vmm::virtio::testing::VnetHdrSender> host =
      vmm::virtio::testing::VnetHdrSender::Create(tap);
  ASSERT_TRUE(host.ok()) << host.status();
  vmm::virtio::testing::TcpFrameSpec spec;
  const uint8_t guest_mac[6] = {0x52, 0x54, 0x00, 0x12, 0x34, 0x56};
  std::memcpy(spec.dst_mac, guest_mac, 6);
  spec.payload_size = 65535 - vmm::virtio::testing::kTcpHeadersLen;
  spec.full_checksum = false;
  const std::vector<uint8_t> frame = vmm::virtio::testing::TcpFrame(spec);
  int sent = 0;
  for (int i = 0; i < 512; ++i) {
    // The tap's queue fills while the guest drains it: retry until it takes the frame.
    for (int attempt = 0; attempt < 200; ++attempt) {
      if (host->Send(vmm::virtio::testing::TcpOffloadHeader(1448), frame).ok()) {
        ++sent;
        break;
      }
      absl::SleepFor(absl::Milliseconds(5));
    }
  }
  absl::SleepFor(absl::Seconds(2));
  const long after = GuestRamKib((*vmm)->pid());
  (*vmm)->Signal(SIGTERM);
  testing::ProcessResult r = (*vmm)->Wait(absl::Seconds(30));
  EXPECT_THAT(r.out, HasSubstr("kapsel-guest: net up eth0: ok"));
  EXPECT_EQ(sent, 512);
  EXPECT_LT(after, before + 4 * 1024)
      << "guest RAM " << before << " KiB before the traffic, " << after << " KiB after";
  std::printf("guest RAM: %ld KiB before 32 MiB of received frames, %ld KiB after\n", before,
              after);
}

TEST(VmmBoot, SigtermStopsARunningGuest) {
  auto vmm = testing::Subprocess::Start(VmmArgs(kVmlinux, {"--cmdline", kHoldCmdline}));
  ASSERT_TRUE(vmm.ok()) << vmm.status();
  ASSERT_TRUE((*vmm)->WaitForOutput(kMarker, kBootTimeout));
  (*vmm)->Signal(SIGTERM);
  testing::ProcessResult r = (*vmm)->Wait(absl::Seconds(30));
  EXPECT_FALSE(r.timed_out);
  EXPECT_EQ(r.exit_code, 128 + SIGTERM) << r.err;
  EXPECT_THAT(r.err, HasSubstr("stopped by signal"));
  // No --free-page-reporting: no balloon device, nothing given back.
  EXPECT_THAT(r.err, Not(HasSubstr("free page reporting")));
}

// "Seccomp:" from /proc/PID/task/TID/status for every thread of `pid` (mode 2 = filter), keyed
// by thread id.
std::map<std::string, std::string> SeccompModeByThread(pid_t pid) {
  std::map<std::string, std::string> modes;
  const std::string tasks = absl::StrCat("/proc/", pid, "/task");
  DIR* dir = opendir(tasks.c_str());
  if (dir == nullptr) return modes;
  while (dirent* entry = readdir(dir)) {
    if (entry->d_name[0] == '.') continue;
    std::ifstream status(absl::StrCat(tasks, "/", entry->d_name, "/status"));
    std::string line;
    while (std::getline(status, line)) {
      if (line.rfind("Seccomp:", 0) == 0) modes[entry->d_name] = line.substr(line.find(':') + 1);
    }
  }
  closedir(dir);
  for (auto& [tid, mode] : modes) mode.erase(0, mode.find_first_not_of(" \t"));
  return modes;
}

TEST(VmmBoot, EveryThreadRunsUnderTheSeccompFilter) {
  // Two vCPUs (two vCPU threads besides the event loop); the guest boots and holds.
  auto vmm =
      testing::Subprocess::Start(VmmArgs(kVmlinux, {"--vcpus", "2", "--cmdline", kHoldCmdline}));
  ASSERT_TRUE(vmm.ok()) << vmm.status();
  ASSERT_TRUE((*vmm)->WaitForOutput(kMarker, kBootTimeout));
  const std::map<std::string, std::string> modes = SeccompModeByThread((*vmm)->pid());
  // The event loop and two vCPU threads (newer kernels add KVM's kvm-nx-lpage-recovery task to
  // the process; it inherits the filter too).
  EXPECT_GE(modes.size(), 3u);
  for (const auto& [tid, mode] : modes) EXPECT_EQ(mode, "2") << "thread " << tid;
  (*vmm)->Signal(SIGTERM);
  testing::ProcessResult r = (*vmm)->Wait(absl::Seconds(30));
  // The stop path (signalfd, kicks, joins, teardown) is allowed too: no SIGSYS.
  EXPECT_EQ(r.exit_code, 128 + SIGTERM) << r.err;
}

TEST(VmmBoot, NoSeccompRunsUnfiltered) {
  auto vmm =
      testing::Subprocess::Start(VmmArgs(kVmlinux, {"--no-seccomp", "--cmdline", kHoldCmdline}));
  ASSERT_TRUE(vmm.ok()) << vmm.status();
  ASSERT_TRUE((*vmm)->WaitForOutput(kMarker, kBootTimeout));
  const std::map<std::string, std::string> modes = SeccompModeByThread((*vmm)->pid());
  EXPECT_FALSE(modes.empty());
  for (const auto& [tid, mode] : modes) EXPECT_EQ(mode, "0") << "thread " << tid;
  (*vmm)->Signal(SIGTERM);
  EXPECT_EQ((*vmm)->Wait(absl::Seconds(30)).exit_code, 128 + SIGTERM);
}

}  // namespace
}  // namespace kapsel
