// testhost_bench: figures of the test host (docs/testhost.md).
//
//   testhost_bench --runner tests/testhost/run --kvm-smoke build/tests/kvm_smoke [--boots N]
//   [--exits N]
//
// Prints:
//   - boot to COMMAND start: from starting the runner to the first byte COMMAND (`echo started`, an
//     outer binary read through 9p) writes, as it arrives on the runner's stdout; median/min/max of
//     N
//   - whole run: the same runs until the runner exits (boot + command + shutdown)
//   - peak RSS of QEMU: the largest ru_maxrss among the runner's descendants (wait4 reports it)
//   - KVM exit round trip inside the test host: kvm_smoke --loop N run through the runner, and
//     directly on this machine for comparison
// Exit 77 (skipped) when the test-host kernel is missing, 1 when a run fails.
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;

struct RunResult {
  int status = -1;             // exit status, or -1
  double first_output_s = -1;  // seconds from start to the first stdout byte
  double total_s = 0;          // seconds from start to exit
  long maxrss_kib = 0;         // largest RSS among the descendants
  std::string output;          // stdout
};

double Seconds(Clock::time_point from, Clock::time_point to) {
  return std::chrono::duration<double>(to - from).count();
}

RunResult Run(const std::vector<std::string>& argv) {
  RunResult r;
  int fds[2];
  if (pipe(fds) != 0) {
    std::perror("pipe");
    return r;
  }
  const auto start = Clock::now();
  pid_t pid = fork();
  if (pid < 0) {
    std::perror("fork");
    return r;
  }
  if (pid == 0) {
    dup2(fds[1], 1);
    close(fds[0]);
    close(fds[1]);
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    execvp(args[0], args.data());
    std::perror(args[0]);
    _exit(127);
  }
  close(fds[1]);
  char buf[4096];
  ssize_t n;
  while ((n = read(fds[0], buf, sizeof buf)) != 0) {
    if (n < 0) {
      if (errno == EINTR) continue;
      break;
    }
    if (r.first_output_s < 0) r.first_output_s = Seconds(start, Clock::now());
    r.output.append(buf, static_cast<size_t>(n));
  }
  close(fds[0]);
  int status = 0;
  rusage usage{};
  while (wait4(pid, &status, 0, &usage) < 0 && errno == EINTR) {
  }
  r.total_s = Seconds(start, Clock::now());
  r.maxrss_kib = usage.ru_maxrss;
  r.status = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

std::string ExitLine(const std::string& output) {
  const auto pos = output.find("port-I/O exits");
  if (pos == std::string::npos) return "(no figure)";
  const auto begin = output.rfind('\n', pos);
  const auto end = output.find('\n', pos);
  return output.substr(begin == std::string::npos ? 0 : begin + 1,
                       (end == std::string::npos ? output.size() : end) -
                           (begin == std::string::npos ? 0 : begin + 1));
}

}  // namespace

int main(int argc, char** argv) {
  std::string runner;
  std::string smoke;
  int boots = 5;
  long exits = 20000;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--runner" && i + 1 < argc) {
      runner = argv[++i];
    } else if (arg == "--kvm-smoke" && i + 1 < argc) {
      smoke = argv[++i];
    } else if (arg == "--boots" && i + 1 < argc) {
      boots = std::max(1, std::atoi(argv[++i]));
    } else if (arg == "--exits" && i + 1 < argc) {
      exits = std::max(1L, std::atol(argv[++i]));
    } else {
      std::fprintf(
          stderr,
          "usage: testhost_bench --runner RUN --kvm-smoke KVM_SMOKE [--boots N] [--exits N]\n");
      return 2;
    }
  }
  if (runner.empty() || smoke.empty()) {
    std::fprintf(stderr, "testhost_bench: --runner and --kvm-smoke are required\n");
    return 2;
  }
  const char* kernel_env = std::getenv("KAPSEL_TESTHOST_KERNEL");
  std::string kernel = kernel_env ? kernel_env : "";
  if (kernel.empty()) {
    // tests/testhost/run -> <repo>/build/testhost/bzImage, as the runner does
    const auto slash = runner.rfind("/tests/testhost/");
    kernel = (slash == std::string::npos ? std::string(".") : runner.substr(0, slash)) +
             "/build/testhost/bzImage";
  }
  struct stat st {};
  if (stat(kernel.c_str(), &st) != 0) {
    std::fprintf(stderr, "testhost_bench: skipped: no test-host kernel at %s\n", kernel.c_str());
    return 77;
  }

  // One untimed run first: builds the initramfs if needed and warms the outer page cache.
  Run({runner, "--timeout", "120", "--", "true"});

  std::vector<double> to_command, total;
  long maxrss = 0;
  for (int i = 0; i < boots; ++i) {
    RunResult r = Run({runner, "--timeout", "120", "--", "echo", "started"});
    if (r.status != 0 || r.output != "started\n") {
      std::fprintf(stderr, "testhost_bench: run %d failed (status %d, output '%s')\n", i, r.status,
                   r.output.c_str());
      return 1;
    }
    to_command.push_back(r.first_output_s);
    total.push_back(r.total_s);
    maxrss = std::max(maxrss, r.maxrss_kib);
  }
  std::printf(
      "test host: boot to COMMAND start   median %.2f s  min %.2f s  max %.2f s  (%d boots, goal "
      "<= 1.5 s)\n",
      Median(to_command), *std::min_element(to_command.begin(), to_command.end()),
      *std::max_element(to_command.begin(), to_command.end()), boots);
  std::printf("test host: whole run (echo)        median %.2f s\n", Median(total));
  std::printf("test host: peak RSS of QEMU        %.0f MiB\n", static_cast<double>(maxrss) / 1024);

  const std::string loops = std::to_string(exits);
  RunResult inside = Run({runner, "--timeout", "300", "--", smoke, "--loop", loops});
  std::printf("test host: KVM exit round trip     %s  (inside the test host)\n",
              ExitLine(inside.output).c_str());
  RunResult outside = Run({smoke, "--loop", loops});
  std::printf("this machine: KVM exit round trip  %s\n",
              outside.status == 0 ? ExitLine(outside.output).c_str() : "(no usable KVM)");
  std::printf("test host: peak RSS of QEMU with kvm_smoke  %.0f MiB\n",
              static_cast<double>(inside.maxrss_kib) / 1024);
  std::fflush(stdout);
  return inside.status == 0 ? 0 : 1;
}
