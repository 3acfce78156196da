// Boot figures for kapsel-vmm beside QEMU's microvm machine (the VMM Kata uses), same kernel and
// initramfs, same run. Needs a KVM that boots Linux: run it through tests/testhost/e2e
// (scripts/bench). Prints, for each VMM, the median over --runs boots of: wall time from exec to
// the guest's marker line, and the VMM's resident memory excluding guest RAM (RssAnon + RssFile;
// guest RAM is a shared mapping) once the guest is up; for kapsel-vmm also the CPU time from exec
// to the first KVM_RUN.
#include <signal.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "tests/support/subprocess.h"

ABSL_FLAG(int, runs, 5, "boots per VMM");
ABSL_FLAG(int, vcpus, 1, "vCPUs per VM");
ABSL_FLAG(std::string, vmm, KAPSEL_BIN_DIR "/kapsel-vmm", "kapsel-vmm binary");
ABSL_FLAG(std::string, kernel, KAPSEL_GUEST_DIR "/vmlinux", "guest kernel");
ABSL_FLAG(std::string, initrd, KAPSEL_INITRAMFS, "guest initramfs");
ABSL_FLAG(std::string, qemu, "qemu-system-x86_64", "QEMU binary (empty: skip QEMU)");

namespace {

constexpr char kMarker[] = "KAPSEL_GUEST_READY";

struct Sample {
  double boot_ms = 0;
  double rss_kib = 0;
  double startup_cpu_us = -1;
};

// RssAnon + RssFile of a live process, in KiB.
double RssWithoutGuestMemory(pid_t pid) {
  std::ifstream status(absl::StrCat("/proc/", pid, "/status"));
  std::string line;
  double kib = 0;
  while (std::getline(status, line)) {
    if (line.rfind("RssAnon:", 0) == 0 || line.rfind("RssFile:", 0) == 0) {
      double v = 0;
      std::string number = line.substr(line.find(':') + 1);
      number = number.substr(0, number.find("kB"));
      number.erase(0, number.find_first_not_of(' '));
      number.erase(number.find_last_not_of(' ') + 1);
      if (absl::SimpleAtod(number, &v)) kib += v;
    }
  }
  return kib;
}

bool BootOnce(const std::vector<std::string>& argv, Sample* sample) {
  const absl::Time start = absl::Now();
  auto process = kapsel::testing::Subprocess::Start(argv);
  if (!process.ok()) {
    std::fprintf(stderr, "%s\n", std::string(process.status().message()).c_str());
    return false;
  }
  if (!(*process)->WaitForOutput(kMarker, absl::Seconds(120))) {
    kapsel::testing::ProcessResult r = (*process)->Wait(absl::Seconds(1));
    std::fprintf(stderr, "no marker from %s:\n%s\n%s\n", argv[0].c_str(), r.out.c_str(),
                 r.err.c_str());
    return false;
  }
  sample->boot_ms = absl::ToDoubleMilliseconds(absl::Now() - start);
  absl::SleepFor(absl::Milliseconds(200));  // let the guest settle before reading memory
  sample->rss_kib = RssWithoutGuestMemory((*process)->pid());
  (*process)->Signal(SIGKILL);
  kapsel::testing::ProcessResult r = (*process)->Wait(absl::Seconds(10));
  const size_t at = r.err.find("startup cpu_us=");
  if (at != std::string::npos) {
    double us;
    std::string digits = r.err.substr(at + 15, r.err.find('\n', at) - at - 15);
    if (absl::SimpleAtod(digits, &us)) sample->startup_cpu_us = us;
  }
  return true;
}

double Median(std::vector<double> v) {
  if (v.empty()) return -1;
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

struct Figures {
  double boot_ms, rss_kib, startup_cpu_us;
};

bool Measure(const std::string& name, const std::vector<std::string>& argv, Figures* out) {
  std::vector<double> boot, rss, cpu;
  for (int i = 0; i < absl::GetFlag(FLAGS_runs); ++i) {
    Sample s;
    if (!BootOnce(argv, &s)) return false;
    boot.push_back(s.boot_ms);
    rss.push_back(s.rss_kib);
    if (s.startup_cpu_us >= 0) cpu.push_back(s.startup_cpu_us);
  }
  *out = {Median(boot), Median(rss), Median(cpu)};
  std::printf("%-12s boot to marker %8.1f ms   RSS w/o guest RAM %8.0f KiB", name.c_str(),
              out->boot_ms, out->rss_kib);
  if (out->startup_cpu_us >= 0) {
    std::printf("   CPU exec->first KVM_RUN %6.2f ms", out->startup_cpu_us / 1000);
  }
  std::printf("   (median of %d)\n", absl::GetFlag(FLAGS_runs));
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  setenv("KAPSEL_VMM_STARTUP_REPORT", "1", 1);
  const std::string vcpus = absl::StrCat(absl::GetFlag(FLAGS_vcpus));
  const std::string cmdline_tail = " panic=-1 quiet kapsel.hold";
  std::vector<std::string> kapsel = {absl::GetFlag(FLAGS_vmm),
                                     "--kernel",
                                     absl::GetFlag(FLAGS_kernel),
                                     "--initrd",
                                     absl::GetFlag(FLAGS_initrd),
                                     "--mem",
                                     "256",
                                     "--vcpus",
                                     vcpus,
                                     "--cmdline",
                                     "console=ttyS0 reboot=k" + cmdline_tail};
  Figures k{};
  if (!Measure("kapsel-vmm", kapsel, &k)) return 1;
  std::printf("  targets: CPU exec->first KVM_RUN <= 3 ms, RSS <= 3 MiB (3072 KiB)\n");

  if (absl::GetFlag(FLAGS_qemu).empty()) return 0;
  std::vector<std::string> qemu = {absl::GetFlag(FLAGS_qemu),
                                   "-M",
                                   "microvm,x-option-roms=off,rtc=off",
                                   "-enable-kvm",
                                   "-cpu",
                                   "host",
                                   "-m",
                                   "256",
                                   "-smp",
                                   vcpus,
                                   "-nodefaults",
                                   "-no-user-config",
                                   "-nographic",
                                   "-serial",
                                   "stdio",
                                   "-no-reboot",
                                   "-kernel",
                                   absl::GetFlag(FLAGS_kernel),
                                   "-initrd",
                                   absl::GetFlag(FLAGS_initrd),
                                   "-append",
                                   "console=ttyS0 reboot=t" + cmdline_tail};
  Figures q{};
  if (!Measure("qemu microvm", qemu, &q)) return 1;
  std::printf("boot time ratio kapsel/qemu: %.2f (goal <= 0.5)   RSS ratio: %.2f\n",
              k.boot_ms / q.boot_ms, k.rss_kib / q.rss_kib);
  return 0;
}
