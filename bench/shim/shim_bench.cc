// containerd end to end, kapsel beside runc in the same environment and run:
//   - `ctr run --rm <busybox> true` latency (median of --runs),
//   - host memory of an idle sandbox: the PSS of the shim's whole process tree (for kapsel: shim,
//     kapsel-vmm with the guest memory it touched, virtiofsd; for runc: shim and the container),
//     also by process, with the guest's RAM apart (its memfd, in kapsel-vmm and virtiofsd, and
//     the kernel text kapsel-vmm maps from the vmlinux file and the agent's root image, both
//     shared between VMs);
//   - the same at density: --density idle sandboxes running at once, the PSS of all their trees
//     divided by their number. With one sandbox, PSS charges it every page of the binaries and
//     libraries it touched; on a node running many, those pages are shared and PSS splits them.
// kapsel runs twice, each with a config of its own (not /etc/kapsel/config.toml): with the
// defaults ("kapsel": free page reporting, kernel text shared) and with each VM's own copy of the
// kernel text ("kapsel-private-text"). Prints every figure and the kapsel/runc ratios.
// Targets on hardware KVM: latency <= 2x runc, <= 16 MiB PSS per idle busybox sandbox. Runs under
// tests/support/private-containerd (scripts/bench), in the test host without hardware KVM, where
// TCG inflates every kapsel time. Every sandbox it starts is removed on every path.
#include <dirent.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "tests/support/subprocess.h"

ABSL_FLAG(int, runs, 5, "ctr run --rm repetitions per runtime");
ABSL_FLAG(int, density, 8, "idle sandboxes running at once for the density figure (0: none)");
ABSL_FLAG(int, settle_seconds, 10,
          "idle time between the (last) sandbox's start and the PSS measurement (free page "
          "reporting starts 2 s after the guest's boot)");

namespace {

constexpr char kImage[] = "kapsel.test/busybox:latest";
constexpr char kIdleCommand[] = "sleep 3600";

struct Runtime {
  const char* name;
  const char* type;
  const char* shim;    // the shim binary's name, to find its process
  const char* config;  // a kapsel config (TOML) to run with, or null
};
// Each kapsel run spells out its memory settings, so that neither the shim's defaults nor a
// /etc/kapsel/config.toml (which the shim reads when the runtime names no config) changes them.
constexpr Runtime kRuntimes[] = {
    {"kapsel", "io.containerd.kapsel.v2", "containerd-shim-kapsel-v2",
     "[vm]\nfree_page_reporting = true\nshare_kernel_text = true\n"},
    {"kapsel-private-text", "io.containerd.kapsel.v2", "containerd-shim-kapsel-v2",
     "[vm]\nfree_page_reporting = true\nshare_kernel_text = false\n"},
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

double SecondsSince(absl::Time start) { return absl::ToDoubleSeconds(absl::Now() - start); }

std::vector<int> Pids() {
  std::vector<int> pids;
  DIR* proc = opendir("/proc");
  while (dirent* e = readdir(proc)) {
    int pid;
    if (absl::SimpleAtoi(e->d_name, &pid)) pids.push_back(pid);
  }
  closedir(proc);
  return pids;
}

// A process's arguments.
std::vector<std::string> Argv(int pid) {
  std::ifstream in(absl::StrCat("/proc/", pid, "/cmdline"));
  std::stringstream text;
  text << in.rdbuf();
  return absl::StrSplit(text.str(), '\0', absl::SkipEmpty());
}

// pid → parent pid of every process.
std::map<int, int> Parents() {
  std::map<int, int> parents;
  for (int pid : Pids()) {
    std::ifstream stat(absl::StrCat("/proc/", pid, "/stat"));
    std::string line;
    std::getline(stat, line);
    const size_t close = line.rfind(')');
    if (close == std::string::npos) continue;
    std::vector<std::string> fields = absl::StrSplit(line.substr(close + 2), ' ');
    int ppid;
    if (fields.size() > 1 && absl::SimpleAtoi(fields[1], &ppid)) parents[pid] = ppid;
  }
  return parents;
}

// The serving shim of sandbox `id` (argv[0] names `shim`, "-id <id>" among the flags, not the
// short-lived `start` or `delete`), or 0.
int FindShim(const std::string& shim, const std::string& id) {
  for (int pid : Pids()) {
    const std::vector<std::string> argv = Argv(pid);
    if (argv.empty() || !absl::EndsWith(argv[0], shim)) continue;
    if (argv.back() == "start" || argv.back() == "delete") continue;
    for (size_t i = 1; i + 1 < argv.size(); ++i) {
      if (argv[i] == "-id" && argv[i + 1] == id) return pid;
    }
  }
  return 0;
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

// The kernel file a kapsel-vmm runs (its --kernel, resolved as smaps shows it), or "".
// The canonical path of the file a kapsel-vmm process was given with `flag` (--kernel, --pmem;
// a ",root" after the --pmem file is dropped), or "".
std::string VmmFile(int pid, const std::string& flag) {
  const std::vector<std::string> argv = Argv(pid);
  for (size_t i = 0; i + 1 < argv.size(); ++i) {
    if (argv[i] != flag) continue;
    const std::string file = argv[i + 1].substr(0, argv[i + 1].find(','));
    std::error_code error;
    const std::filesystem::path path = std::filesystem::canonical(
        std::filesystem::path(absl::StrCat("/proc/", pid, "/cwd")) / file, error);
    return error ? "" : path.string();
  }
  return "";
}

std::string Comm(int pid) {
  std::ifstream in(absl::StrCat("/proc/", pid, "/comm"));
  std::string comm;
  std::getline(in, comm);
  return comm;
}

// The test host's (or machine's) memory in use, MemTotal - MemAvailable, and MemTotal (KiB).
std::pair<long, long> MemInUseKib() {
  std::ifstream in("/proc/meminfo");
  std::string line;
  long total = 0, available = 0;
  while (std::getline(in, line)) {
    std::vector<std::string> fields = absl::StrSplit(line, ' ', absl::SkipEmpty());
    if (fields.size() < 2) continue;
    if (fields[0] == "MemTotal:") (void)absl::SimpleAtoi(fields[1], &total);
    if (fields[0] == "MemAvailable:") (void)absl::SimpleAtoi(fields[1], &available);
  }
  return {total - available, total};
}

// Pss (KiB) of the processes in the trees under `roots` (the shims), summed over the trees, by
// process name; the guest memory apart: "guest RAM" (kapsel-vmm's memfd, which virtiofsd maps
// too), "guest text" (the kernel text kapsel-vmm maps from its vmlinux, shared by every VM
// booting it) and "agent image" (the agent's root image, --pmem, shared the same way). One
// snapshot of the process list for all of them.
std::map<std::string, long> TreesPssKib(const std::set<int>& roots) {
  const std::map<int, int> parents = Parents();
  std::map<std::string, long> by_name;
  for (const auto& [pid, ppid] : parents) {
    bool in_tree = false;
    for (int p = pid; p > 1; p = parents.count(p) ? parents.at(p) : 0) {
      if (roots.count(p)) {
        in_tree = true;
        break;
      }
    }
    if (!in_tree) continue;
    long pss = PssKib(pid, "smaps_rollup");
    const long guest = PssKib(pid, "smaps", "kapsel-guest-ram");
    if (guest > 0) {
      by_name["guest RAM"] += guest;
      pss -= guest;
    }
    const std::string kernel = VmmFile(pid, "--kernel");
    const long text = kernel.empty() ? 0 : PssKib(pid, "smaps", kernel);
    if (text > 0) {
      by_name["guest text"] += text;
      pss -= text;
    }
    const std::string image = VmmFile(pid, "--pmem");
    const long agent = image.empty() ? 0 : PssKib(pid, "smaps", image);
    if (agent > 0) {
      by_name["agent image"] += agent;
      pss -= agent;
    }
    by_name[Comm(pid)] += pss;
  }
  return by_name;
}

long Total(const std::map<std::string, long>& by_name) {
  long total = 0;
  for (const auto& [name, kib] : by_name) total += kib;
  return total;
}

std::string Breakdown(const std::map<std::string, long>& by_name, int divisor) {
  std::string out;
  for (const auto& [name, kib] : by_name) {
    absl::StrAppend(&out, out.empty() ? "" : ", ", name, " ",
                    absl::StrFormat("%.1f", kib / 1024.0 / divisor));
  }
  return out;
}

// Sandboxes (containers and their tasks) of one runtime that the bench started. Remove takes away
// what is left of them; the destructor does it on the paths that return early.
class Sandboxes {
 public:
  explicit Sandboxes(const Runtime& rt) : rt_(rt) {}
  Sandboxes(const Sandboxes&) = delete;
  Sandboxes& operator=(const Sandboxes&) = delete;
  ~Sandboxes() { Remove(); }

  // Tracks `id` before anything starts it.
  void Track(const std::string& id) { ids_.push_back(id); }

  // Starts an idle sandbox `id` (`what` names it in errors); its serving shim's pid, or 0 after
  // saying why on stderr.
  int StartIdle(const std::string& runtime_args, const std::string& id, const std::string& what) {
    Track(id);
    auto r = Sh(absl::StrCat("ctr run -d ", runtime_args, " ", kImage, " ", id, " ", kIdleCommand));
    if (r.exit_code != 0) {
      std::fprintf(stderr, "%s: %s: ctr run -d failed (exit %d): %s%s\n", rt_.name, what.c_str(),
                   r.exit_code, r.out.c_str(), r.err.c_str());
      return 0;
    }
    const int pid = FindShim(rt_.shim, id);
    if (pid == 0) {
      std::fprintf(stderr, "%s: %s: running, but no %s process with -id %s\n", rt_.name,
                   what.c_str(), rt_.shim, id.c_str());
    }
    return pid;
  }

  // Deletes every tracked sandbox still there (task killed and deleted, container deleted) and
  // waits until their shims (and with kapsel's, the VMs) are gone. False, after naming what is
  // left on stderr, when some are still there after 60 s.
  bool Remove() {
    if (ids_.empty()) return true;
    const std::set<std::string> listed = Containers();
    std::map<std::string, std::string> errors;
    for (const std::string& id : ids_) {
      if (!listed.count(id)) continue;
      auto r = Sh(
          absl::StrCat("ctr task delete -f ", id, " >/dev/null 2>&1; ctr container delete ", id));
      if (r.exit_code != 0) errors[id] = absl::StrCat(r.out, r.err);
    }
    std::vector<std::string> left;
    for (const absl::Time deadline = absl::Now() + absl::Seconds(60);;) {
      left.clear();
      const std::set<std::string> still = Containers();
      for (const std::string& id : ids_) {
        if (still.count(id) || FindShim(rt_.shim, id) != 0) left.push_back(id);
      }
      if (left.empty() || absl::Now() > deadline) break;
      absl::SleepFor(absl::Milliseconds(200));
    }
    for (const std::string& id : left) {
      std::fprintf(stderr, "%s: sandbox %s not removed (container or shim still there) %s\n",
                   rt_.name, id.c_str(), errors.count(id) ? errors[id].c_str() : "");
    }
    ids_.clear();
    return left.empty();
  }

 private:
  static std::set<std::string> Containers() {
    auto r = Sh("ctr container ls -q");
    std::set<std::string> ids;
    for (absl::string_view id : absl::StrSplit(r.out, '\n', absl::SkipWhitespace())) {
      ids.insert(std::string(absl::StripAsciiWhitespace(id)));
    }
    return ids;
  }

  const Runtime& rt_;
  std::vector<std::string> ids_;
};

// Memory of `sandboxes` idle sandboxes running at once.
struct Memory {
  std::map<std::string, long> kib;  // PSS over all their trees, by process (TreesPssKib)
  int sandboxes = 0;
  long host_before_kib = 0;  // MemInUseKib before they started
  long host_kib = 0;         // and when measured
  double PerSandboxMib() const { return Total(kib) / 1024.0 / sandboxes; }
};

// Starts `count` idle sandboxes, lets them settle, measures, removes them. False after saying why.
bool MeasureIdle(const Runtime& rt, const std::string& runtime_args, const std::string& prefix,
                 int count, Memory* memory) {
  Sandboxes sandboxes(rt);
  memory->sandboxes = count;
  memory->host_before_kib = MemInUseKib().first;
  const absl::Time start = absl::Now();
  std::set<int> shims;
  for (int i = 0; i < count; ++i) {
    const std::string id = count == 1 ? prefix : absl::StrCat(prefix, "-", i);
    const std::string what =
        count == 1 ? absl::StrCat("sandbox ", id)
                   : absl::StrFormat("sandbox %s (%d of %d)", id.c_str(), i + 1, count);
    const int shim = sandboxes.StartIdle(runtime_args, id, what);
    if (shim == 0) return false;
    shims.insert(shim);
  }
  const double started_s = SecondsSince(start);
  absl::SleepFor(absl::Seconds(absl::GetFlag(FLAGS_settle_seconds)));
  memory->kib = TreesPssKib(shims);
  memory->host_kib = MemInUseKib().first;
  const absl::Time removing = absl::Now();
  if (!sandboxes.Remove()) return false;
  std::fprintf(stderr, "shim_bench: %s: %d idle sandbox(es) started in %.1f s, removed in %.1f s\n",
               rt.name, count, started_s, SecondsSince(removing));
  return true;
}

struct Result {
  double latency_ms = -1;
  Memory single;
  Memory density;
};

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  const absl::Time bench_start = absl::Now();
  const int runs = absl::GetFlag(FLAGS_runs);
  const int density = absl::GetFlag(FLAGS_density);
  std::map<std::string, Result> results;
  for (const Runtime& rt : kRuntimes) {
    Result& result = results[rt.name];
    std::string runtime = absl::StrCat("--runtime ", rt.type);
    if (rt.config != nullptr) {
      const std::string path =
          absl::StrCat(std::filesystem::current_path().string(), "/", rt.name, ".toml");
      std::ofstream(path) << rt.config;
      absl::StrAppend(&runtime, " --runtime-config-path ", path);
    }
    const std::string tag = absl::StrReplaceAll(rt.name, {{"+", "-"}});  // for container ids
    {
      Sandboxes latency_runs(rt);
      std::vector<double> times;
      for (int i = 0; i < runs; ++i) {
        const std::string id = absl::StrCat("lat-", tag, "-", i);
        latency_runs.Track(id);
        const absl::Time start = absl::Now();
        auto r = Sh(absl::StrCat("ctr run --rm ", runtime, " ", kImage, " ", id, " true"));
        if (r.exit_code != 0) {
          std::fprintf(stderr, "%s: sandbox %s (run %d of %d): ctr run --rm failed: %s%s\n",
                       rt.name, id.c_str(), i + 1, runs, r.out.c_str(), r.err.c_str());
          return 1;
        }
        times.push_back(absl::ToDoubleMilliseconds(absl::Now() - start));
      }
      if (!latency_runs.Remove()) return 1;  // waits for the last shim's exit too
      result.latency_ms = Median(times);
    }
    if (!MeasureIdle(rt, runtime, absl::StrCat("mem-", tag), 1, &result.single)) return 1;
    if (density > 0 &&
        !MeasureIdle(rt, runtime, absl::StrCat("den-", tag), density, &result.density)) {
      return 1;
    }
  }

  std::fprintf(stderr, "shim_bench: done in %.0f s\n", SecondsSince(bench_start));
  const Result& runc = results["runc"];
  for (const Runtime& rt : kRuntimes) {
    if (&results[rt.name] == &runc) continue;
    const Result& r = results[rt.name];
    std::printf(
        "%s: ctr run --rm latency (median of %d) %.0f ms, runc %.0f ms, ratio %.2f (goal <= 2 on "
        "hardware KVM)\n",
        rt.name, runs, r.latency_ms, runc.latency_ms, r.latency_ms / runc.latency_ms);
    std::printf(
        "%s: idle busybox sandbox PSS, alone (shim process tree) %.2f MiB, runc %.2f MiB, ratio "
        "%.1f (goal: kapsel <= 16 MiB)\n",
        rt.name, r.single.PerSandboxMib(), runc.single.PerSandboxMib(),
        r.single.PerSandboxMib() / runc.single.PerSandboxMib());
    if (density > 0) {
      std::printf(
          "%s: idle busybox sandbox PSS at density %d (%d running at once, total / %d: binaries, "
          "libraries and kernel text shared) %.2f MiB, runc %.2f MiB, ratio %.1f (goal: kapsel <= "
          "16 MiB)\n",
          rt.name, density, density, density, r.density.PerSandboxMib(),
          runc.density.PerSandboxMib(), r.density.PerSandboxMib() / runc.density.PerSandboxMib());
    }
  }
  for (const Runtime& rt : kRuntimes) {
    std::printf("  %s PSS by process, alone (MiB): %s\n", rt.name,
                Breakdown(results[rt.name].single.kib, 1).c_str());
  }
  if (density > 0) {
    for (const Runtime& rt : kRuntimes) {
      std::printf("  %s PSS by process at density %d, per sandbox (MiB): %s\n", rt.name, density,
                  Breakdown(results[rt.name].density.kib, density).c_str());
    }
    std::string host;
    for (const Runtime& rt : kRuntimes) {
      const Memory& m = results[rt.name].density;
      absl::StrAppend(
          &host, host.empty() ? "" : ", ", rt.name,
          absl::StrFormat(" %.0f -> %.0f", m.host_before_kib / 1024.0, m.host_kib / 1024.0));
    }
    std::printf(
        "  memory in use (MemTotal - MemAvailable, of %.0f MiB) before -> at density %d: %s MiB\n",
        MemInUseKib().second / 1024.0, density, host.c_str());
  }
  return 0;
}
