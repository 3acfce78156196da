// containerd end to end, kapsel beside runc in the same environment and run:
//   - `ctr run --rm <busybox> true` latency (median of --runs),
//   - host memory of an idle sandbox: the PSS of the shim's whole process tree (for kapsel: shim,
//     kapsel-vmm with the guest memory it touched, virtiofsd; for runc: shim and the container),
//     also by process, with the guest's RAM apart.
// kapsel runs twice: as configured by default, and with free page reporting on ("kapsel+fpr").
// Prints both and the kapsel/runc ratios. Targets on hardware KVM: latency <= 2x runc,
// <= 16 MiB PSS per idle busybox sandbox. Runs under tests/support/private-containerd
// (scripts/bench), in the test host without hardware KVM, where TCG inflates every kapsel time.
#include <dirent.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "tests/support/subprocess.h"

ABSL_FLAG(int, runs, 5, "ctr run --rm repetitions per runtime");

namespace {

constexpr char kImage[] = "kapsel.test/busybox:latest";

struct Runtime {
  const char* name;
  const char* type;
  const char* shim;    // the shim binary's name, to find its process
  const char* config;  // a kapsel config (TOML) to run with, or null
};
// The kapsel config with free page reporting on (off by default).
constexpr char kFreePageReportingToml[] = "[vm]\nfree_page_reporting = true\n";
constexpr Runtime kRuntimes[] = {
    {"kapsel", "io.containerd.kapsel.v2", "containerd-shim-kapsel-v2", nullptr},
    {"kapsel+fpr", "io.containerd.kapsel.v2", "containerd-shim-kapsel-v2", kFreePageReportingToml},
    {"runc", "io.containerd.runc.v2", "containerd-shim-runc-v2", nullptr},
};

kapsel::testing::ProcessResult Sh(const std::string& script) {
  auto r = kapsel::testing::RunProcess({"/bin/bash", "-c", script}, absl::Seconds(300));
  if (!r.ok()) {
    kapsel::testing::ProcessResult failed;
    failed.err = r.status().ToString();
    return failed;
  }
  return *r;
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? -1 : v[v.size() / 2];
}

// pid → parent pid of every process.
std::map<int, int> Parents() {
  std::map<int, int> parents;
  DIR* proc = opendir("/proc");
  while (dirent* e = readdir(proc)) {
    int pid;
    if (!absl::SimpleAtoi(e->d_name, &pid)) continue;
    std::ifstream stat(absl::StrCat("/proc/", pid, "/stat"));
    std::string line;
    std::getline(stat, line);
    const size_t close = line.rfind(')');
    if (close == std::string::npos) continue;
    std::vector<std::string> fields = absl::StrSplit(line.substr(close + 2), ' ');
    int ppid;
    if (fields.size() > 1 && absl::SimpleAtoi(fields[1], &ppid)) parents[pid] = ppid;
  }
  closedir(proc);
  return parents;
}

// Sum of the "Pss:" lines of /proc/<pid>/<file> (KiB); with `only_mapping`, only of the
// mappings whose header line contains it (smaps).
long PssKib(int pid, const char* file, const std::string& only_mapping = "") {
  std::ifstream in(absl::StrCat("/proc/", pid, "/", file));
  std::string line;
  long total = 0;
  bool counted = only_mapping.empty();
  while (std::getline(in, line)) {
    std::vector<std::string> fields = absl::StrSplit(line, ' ', absl::SkipEmpty());
    if (fields.empty()) continue;
    if (!only_mapping.empty() && fields[0].find('-') != std::string::npos &&
        fields[0].back() != ':') {
      counted = line.find(only_mapping) != std::string::npos;  // a mapping's header line
      continue;
    }
    long value;
    if (counted && fields.size() >= 2 && fields[0] == "Pss:" &&
        absl::SimpleAtoi(fields[1], &value)) {
      total += value;
    }
  }
  return total;
}

std::string Comm(int pid) {
  std::ifstream in(absl::StrCat("/proc/", pid, "/comm"));
  std::string comm;
  std::getline(in, comm);
  return comm;
}

// Pss (KiB) of `root` and its descendants, by process name; kapsel-vmm's guest memory (the memfd
// it shares with virtiofsd) apart as "guest RAM".
std::map<std::string, long> TreePssKib(int root) {
  const std::map<int, int> parents = Parents();
  std::map<std::string, long> by_name;
  for (const auto& [pid, ppid] : parents) {
    bool in_tree = false;
    for (int p = pid; p > 1; p = parents.count(p) ? parents.at(p) : 0) {
      if (p == root) {
        in_tree = true;
        break;
      }
    }
    if (!in_tree) continue;
    const std::string comm = Comm(pid);
    long pss = PssKib(pid, "smaps_rollup");
    if (comm == "kapsel-vmm") {
      const long guest = PssKib(pid, "smaps", "kapsel-guest-ram");
      by_name["guest RAM"] += guest;
      pss -= guest;
    }
    by_name[comm] += pss;
  }
  return by_name;
}

long Total(const std::map<std::string, long>& by_name) {
  long total = 0;
  for (const auto& [name, kib] : by_name) total += kib;
  return total;
}

std::string Breakdown(const std::map<std::string, long>& by_name) {
  std::string out;
  for (const auto& [name, kib] : by_name) {
    absl::StrAppend(&out, out.empty() ? "" : ", ", name, " ",
                    absl::StrFormat("%.1f", kib / 1024.0));
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  std::map<std::string, double> latency_ms, pss_mib;
  std::map<std::string, std::string> pss_breakdown;
  for (const Runtime& rt : kRuntimes) {
    std::string runtime = absl::StrCat("--runtime ", rt.type);
    if (rt.config != nullptr) {
      const std::string path =
          absl::StrCat(std::filesystem::current_path().string(), "/", rt.name, ".toml");
      std::ofstream(path) << rt.config;
      absl::StrAppend(&runtime, " --runtime-config-path ", path);
    }
    const std::string tag = absl::StrReplaceAll(rt.name, {{"+", "-"}});  // for container ids
    std::vector<double> times;
    for (int i = 0; i < absl::GetFlag(FLAGS_runs); ++i) {
      const absl::Time start = absl::Now();
      auto r =
          Sh(absl::StrCat("ctr run --rm ", runtime, " ", kImage, " lat-", tag, "-", i, " true"));
      if (r.exit_code != 0) {
        std::fprintf(stderr, "%s: ctr run failed: %s\n", rt.name, r.err.c_str());
        return 1;
      }
      times.push_back(absl::ToDoubleMilliseconds(absl::Now() - start));
    }
    latency_ms[rt.name] = Median(times);

    // Idle for 10 s first: free page reporting starts 2 s after the guest's boot.
    const std::string id = absl::StrCat("mem-", tag);
    auto r = Sh(absl::StrCat("ctr run -d ", runtime, " ", kImage, " ", id,
                             " sleep 1000 && sleep 10 && pgrep -f -- '", rt.shim, ".*-id ", id,
                             "( |$)' | head -1"));
    int shim_pid = 0;
    if (r.exit_code != 0 || !absl::SimpleAtoi(absl::StripAsciiWhitespace(r.out), &shim_pid)) {
      std::fprintf(stderr, "%s: no shim for the idle sandbox: %s %s\n", rt.name, r.out.c_str(),
                   r.err.c_str());
      return 1;
    }
    const std::map<std::string, long> pss = TreePssKib(shim_pid);
    pss_mib[rt.name] = Total(pss) / 1024.0;
    pss_breakdown[rt.name] = Breakdown(pss);
    Sh(absl::StrCat("ctr task kill -s KILL ", id, "; sleep 1; ctr task delete ", id,
                    "; ctr container delete ", id));
  }
  std::printf(
      "ctr run --rm latency (median of %d): kapsel %.0f ms (%.0f with free page reporting), "
      "runc %.0f ms, ratio %.2f (goal <= 2 on hardware KVM)\n",
      absl::GetFlag(FLAGS_runs), latency_ms["kapsel"], latency_ms["kapsel+fpr"], latency_ms["runc"],
      latency_ms["kapsel"] / latency_ms["runc"]);
  std::printf(
      "idle busybox sandbox PSS (shim process tree): kapsel %.1f MiB (%.1f with free page "
      "reporting), runc %.1f MiB, ratio %.1f (goal: kapsel <= 16 MiB)\n",
      pss_mib["kapsel"], pss_mib["kapsel+fpr"], pss_mib["runc"],
      pss_mib["kapsel"] / pss_mib["runc"]);
  for (const Runtime& rt : kRuntimes) {
    std::printf("  %s PSS by process (MiB): %s\n", rt.name, pss_breakdown[rt.name].c_str());
  }
  return 0;
}
