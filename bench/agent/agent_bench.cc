// Figures for kapsel-agent in a real microVM, driven over hybrid vsock like the shim drives it:
// ttrpc round trip (Health), stdio throughput (a container writing to stdout), and container
// create + start + wait latency. Needs a KVM that boots Linux: scripts/bench runs it through
// tests/testhost/e2e. Prints medians; the ttrpc goal is <= 30 us on hardware KVM. Also prints the
// size of the agent binary and of the initramfs it is in (tests/agent/size keeps the budget).
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "tests/support/agent_session.h"
#include "tests/support/subprocess.h"

ABSL_FLAG(int, round_trips, 2000, "Health calls");
ABSL_FLAG(int, containers, 10, "containers created, started and waited for");
ABSL_FLAG(int, stdout_mib, 256, "MiB a container writes to stdout");

namespace {

using kapsel::agent::v1::Rootfs;
using kapsel::testing::AgentSession;

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? -1 : v[v.size() / 2];
}

// A file's size in bytes, -1 if it cannot be read.
long long FileSize(const char* path) {
  struct stat st;
  return stat(path, &st) == 0 ? static_cast<long long>(st.st_size) : -1;
}

int Run() {
  const long long agent_bytes = FileSize(KAPSEL_BIN_DIR "/kapsel-agent");
  std::printf("kapsel-agent binary (static, stripped)  %8.2f MiB (%lld bytes; goal <= 2 MiB)\n",
              agent_bytes / 1048576.0, agent_bytes);
  const long long initramfs_bytes = FileSize(KAPSEL_AGENT_INITRAMFS);
  std::printf("agent initramfs                         %8.2f MiB (%lld bytes)\n",
              initramfs_bytes / 1048576.0, initramfs_bytes);

  char dir[] = "/tmp/kapsel-agent-bench-XXXXXX";
  if (mkdtemp(dir) == nullptr) return 1;
  const std::string socket = absl::StrCat(dir, "/vsock.sock");
  auto vmm = kapsel::testing::Subprocess::Start(
      {KAPSEL_BIN_DIR "/kapsel-vmm", "--kernel", KAPSEL_GUEST_DIR "/vmlinux", "--initrd",
       KAPSEL_AGENT_INITRAMFS, "--mem", "512", "--vcpus", "2", "--disk",
       absl::StrCat(KAPSEL_ROOTFS_IMAGE, ",ro"), "--vsock", absl::StrCat("3,", socket), "--console",
       "off"});
  if (!vmm.ok()) {
    std::fprintf(stderr, "%s\n", std::string(vmm.status().message()).c_str());
    return 1;
  }
  auto session =
      AgentSession::Connect(absl::StrCat("hvsock:", socket, ":1024"), absl::Seconds(120));
  if (!session.ok()) {
    std::fprintf(stderr, "%s\n", std::string(session.status().message()).c_str());
    return 1;
  }

  // ttrpc round trip over vsock.
  std::vector<double> rtt;
  for (int i = 0; i < absl::GetFlag(FLAGS_round_trips); ++i) {
    kapsel::agent::v1::HealthResponse health;
    const absl::Time start = absl::Now();
    if (!(*session)->Call("Health", kapsel::agent::v1::HealthRequest(), &health).ok()) return 1;
    rtt.push_back(absl::ToDoubleMicroseconds(absl::Now() - start));
  }
  std::printf(
      "ttrpc round trip over vsock (Health)   median %8.1f us  (%zu calls; goal <= 30 us "
      "on hardware KVM)\n",
      Median(rtt), rtt.size());

  Rootfs rootfs;
  rootfs.mutable_block()->set_device("/dev/vda");
  rootfs.mutable_block()->set_fs_type("ext4");
  rootfs.mutable_block()->add_options("ro");

  // Container create + start + wait (+ output and remove).
  std::vector<double> lifecycle;
  for (int i = 0; i < absl::GetFlag(FLAGS_containers); ++i) {
    auto spec = kapsel::testing::DefaultSpec({"true"});
    if (!spec.ok()) return 1;
    const absl::Time start = absl::Now();
    auto run = (*session)->RunContainer(absl::StrCat("c", i), *spec, rootfs);
    if (!run.ok() || run->exit_status != 0) {
      std::fprintf(stderr, "container run failed: %s\n",
                   run.ok() ? run->err.c_str() : std::string(run.status().message()).c_str());
      return 1;
    }
    lifecycle.push_back(absl::ToDoubleMilliseconds(absl::Now() - start));
  }
  std::printf("container create+start+wait+remove     median %8.1f ms  (%zu containers)\n",
              Median(lifecycle), lifecycle.size());

  // stdout throughput through the agent's spliced stdio stream.
  const int mib = absl::GetFlag(FLAGS_stdout_mib);
  auto spec = kapsel::testing::DefaultSpec({"head", "-c", absl::StrCat(mib, "m"), "/dev/zero"});
  if (!spec.ok()) return 1;
  kapsel::agent::v1::CreateContainerRequest create;
  create.set_container_id("stdout");
  *create.mutable_spec() = *spec;
  *create.mutable_rootfs() = rootfs;
  kapsel::agent::v1::CreateContainerResponse created;
  if (!(*session)->Call("CreateContainer", create, &created).ok()) return 1;
  auto out = (*session)->Stdio("stdout", "", kapsel::agent::v1::StdioHello::STDOUT);
  if (!out.ok()) return 1;
  kapsel::agent::v1::ContainerRequest id;
  id.set_container_id("stdout");
  kapsel::agent::v1::Empty empty;
  const absl::Time start = absl::Now();
  if (!(*session)->Call("StartContainer", id, &empty).ok()) return 1;
  uint64_t total = 0;
  char buffer[1 << 16];
  for (ssize_t n; (n = read(out->get(), buffer, sizeof(buffer))) > 0;) total += n;
  const double seconds = absl::ToDoubleSeconds(absl::Now() - start);
  std::printf("container stdout through the agent      %8.1f MiB/s (%llu bytes)\n",
              total / seconds / (1 << 20), static_cast<unsigned long long>(total));
  kapsel::agent::v1::RemoveContainerRequest remove;
  remove.set_container_id("stdout");
  remove.set_force(true);
  (void)(*session)->Call("RemoveContainer", remove, &empty);

  (void)(*session)->Call("DestroySandbox", kapsel::agent::v1::DestroySandboxRequest(), &empty);
  (*vmm)->Wait(absl::Seconds(60));
  rmdir(dir);
  return total == static_cast<uint64_t>(mib) << 20 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  return Run();
}
