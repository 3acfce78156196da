// containerd runs containers through containerd-shim-kapsel-v2, each in its own microVM; the same
// scenarios run through runc (io.containerd.runc.v2) as the reference, in the same environment.
// Runs under tests/support/private-containerd (a private containerd with the busybox image
// imported; CONTAINERD_ADDRESS is set) inside tests/testhost/e2e. Every case checks afterwards
// that nothing is left: no task, no shim or VMM process, no mount or file under the state dir.
#include <signal.h>
#include <unistd.h>

#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/support/containerd_e2e.h"

namespace kapsel::shim {
namespace {

using testing::Describe;
using ::testing::HasSubstr;
using testing::ProcessResult;
using testing::Sh;

constexpr char kImage[] = "kapsel.test/busybox:latest";
constexpr char kKapselRuntime[] = "io.containerd.kapsel.v2";
constexpr char kRuncRuntime[] = "io.containerd.runc.v2";

class ShimE2eTest : public ::testing::TestWithParam<const char*> {
 protected:
  bool kapsel() const { return std::string(GetParam()) == kKapselRuntime; }

  // `ctr run --rm` with this runtime.
  std::string Run(const std::string& flags, const std::string& id, const std::string& command) {
    return absl::StrCat("ctr run --rm --runtime ", GetParam(), " ", flags, " ", kImage, " ", id,
                        " ", command);
  }
  std::string RunDetached(const std::string& id, const std::string& command) {
    return absl::StrCat("ctr run -d --runtime ", GetParam(), " ", kImage, " ", id, " ", command);
  }
  // Kills and removes a detached container.
  void Remove(const std::string& id) {
    Sh(absl::StrCat("ctr task kill -s KILL ", id, " 2>/dev/null; for i in $(seq 100); do ",
                    "ctr task ls -q | grep -qx ", id, " || break; ctr task delete ", id,
                    " >/dev/null 2>&1 && break; sleep 0.2; done; ctr container delete ", id,
                    " 2>/dev/null; true"));
  }

  void TearDown() override { testing::ExpectNothingLeft("kapsel"); }
};

TEST_P(ShimE2eTest, EchoOutput) {
  ProcessResult r = Sh(Run("", "echo", "echo hello from a microVM"));
  EXPECT_EQ(r.exit_code, 0) << Describe(r);
  EXPECT_EQ(r.out, "hello from a microVM\n") << Describe(r);
}

TEST_P(ShimE2eTest, HostnameIsTheHostsWhenTheSpecHasNone) {
  // ctr 1.6 names none; runc's container then sees the host's (its UTS namespace starts as a
  // copy). A named one (a CRI pod's) is in cri_e2e.
  char host[256] = {};
  ASSERT_EQ(gethostname(host, sizeof(host) - 1), 0);
  ProcessResult r = Sh(Run("", "hostname", "hostname"));
  EXPECT_EQ(r.exit_code, 0) << Describe(r);
  EXPECT_EQ(r.out, absl::StrCat(host, "\n")) << Describe(r);
}

TEST_P(ShimE2eTest, MissingWorkingDirectoryIsCreated) {
  // runc makes the init's cwd when the image lacks it (docker run -w, Kubernetes workingDir).
  ProcessResult r = Sh(Run("--cwd /made/for/me", "cwd", "pwd"));
  EXPECT_EQ(r.exit_code, 0) << Describe(r);
  EXPECT_EQ(r.out, "/made/for/me\n") << Describe(r);
}

TEST_P(ShimE2eTest, ExitCodes) {
  // (137, killed by SIGKILL, is in KillTermAndKill: PID 1 cannot kill itself.)
  for (const auto& [command, code] : std::vector<std::pair<std::string, int>>{
           {"true", 0}, {"sh -c 'exit 3'", 3}, {"sh -c 'exit 255'", 255}}) {
    ProcessResult r = Sh(Run("", "exitcode", command));
    EXPECT_EQ(r.exit_code, code) << command << ": " << Describe(r);
  }
}

TEST_P(ShimE2eTest, Stdin) {
  // ctr 1.6 forwards its stdin but never closes it (no CloseIO), so with runc a process reading
  // to EOF would wait forever: read two lines.
  ProcessResult r = Sh(absl::StrCat("printf 'line one\\nline two\\n' | ",
                                    Run("", "stdin", "sh -c 'read a; read b; echo \"$b / $a\"'")));
  EXPECT_EQ(r.exit_code, 0) << Describe(r);
  EXPECT_EQ(r.out, "line two / line one\n") << Describe(r);
}

TEST_P(ShimE2eTest, Terminal) {
  // ctr -t needs a terminal of its own: script(1) gives it a pty.
  ProcessResult r = Sh(absl::StrCat(
      "script -qec \"", Run("-t", "tty", "sh -c 'test -t 0 && test -t 1 && echo is a tty'"),
      "\" /dev/null < /dev/null"));
  EXPECT_EQ(r.exit_code, 0) << Describe(r);
  EXPECT_THAT(r.out, HasSubstr("is a tty")) << Describe(r);
}

TEST_P(ShimE2eTest, ExecPsMetricsPauseResume) {
  ProcessResult r = Sh(RunDetached("busy", "sleep 1000"));
  ASSERT_EQ(r.exit_code, 0) << Describe(r);

  r = Sh("ctr task exec --exec-id e1 busy /bin/sh -c 'echo from exec; exit 5'");
  EXPECT_EQ(r.exit_code, 5) << Describe(r);
  EXPECT_EQ(r.out, "from exec\n") << Describe(r);
  r = Sh("echo piped | ctr task exec --exec-id e2 busy /bin/cat");
  EXPECT_EQ(r.out, "piped\n") << Describe(r);
  // containerd deleted e1 after its exit, so its id is free again (Kubernetes exec probes reuse
  // nothing, but they add up: the guest must forget them too).
  r = Sh("timeout 60 ctr task exec --exec-id e1 busy /bin/echo again");
  EXPECT_EQ(r.exit_code, 0) << Describe(r);
  EXPECT_EQ(r.out, "again\n") << Describe(r);
  // An exec that cannot start is an error at once, naming the program, and frees its id.
  r = Sh("timeout 60 ctr task exec --exec-id bad busy /no/such/program");
  EXPECT_NE(r.exit_code, 0) << Describe(r);
  EXPECT_NE(r.exit_code, 124) << "ctr waited for a process that never started: " << Describe(r);
  EXPECT_THAT(r.err, HasSubstr("/no/such/program")) << Describe(r);
  r = Sh("timeout 60 ctr task exec --exec-id bad busy /bin/echo fine");
  EXPECT_EQ(r.out, "fine\n") << Describe(r);

  r = Sh("ctr task ps busy");
  EXPECT_EQ(r.exit_code, 0) << Describe(r);
  std::vector<std::string> lines = absl::StrSplit(absl::StripAsciiWhitespace(r.out), '\n');
  EXPECT_GE(lines.size(), 2u) << "a header and the sleep: " << Describe(r);

  if (kapsel()) {  // the reference host here has cgroup v1, so runc's metrics differ in form
    r = Sh("ctr task metrics busy");
    EXPECT_EQ(r.exit_code, 0) << Describe(r);
    // cgroup v2 metrics as ctr prints them, from the guest's cgroup of the container.
    EXPECT_THAT(r.out, HasSubstr("memory.usage")) << Describe(r);
    EXPECT_THAT(r.out, HasSubstr("cpu.usage_usec")) << Describe(r);
  }

  r = Sh("ctr task pause busy && ctr task ls | grep busy");
  EXPECT_THAT(r.out, HasSubstr("PAUSED")) << Describe(r);
  r = Sh("ctr task resume busy && ctr task ls | grep busy");
  EXPECT_THAT(r.out, HasSubstr("RUNNING")) << Describe(r);
  r = Sh("ctr task exec --exec-id e3 busy /bin/echo alive");
  EXPECT_EQ(r.out, "alive\n") << Describe(r);
  Remove("busy");
}

TEST_P(ShimE2eTest, KillTermAndKill) {
  // PID 1 of a container ignores signals it has no handler for: trap TERM.
  ProcessResult r = Sh(absl::StrCat(
      "(",
      Run("", "term", "sh -c 'trap \"exit 7\" TERM; echo ready; while true; do sleep 0.1; done'"),
      ") > /tmp/term.out 2>&1 & pid=$!; for i in $(seq 600); do grep -q ready /tmp/term.out && "
      "break; sleep 0.1; done; ctr task kill -s TERM term; wait $pid; echo \"rc=$?\"; cat "
      "/tmp/term.out"));
  EXPECT_THAT(r.out, HasSubstr("rc=7")) << Describe(r);

  r = Sh(absl::StrCat("(", Run("", "kill", "sh -c 'echo ready; sleep 1000'"),
                      ") > /tmp/kill.out 2>&1 & pid=$!; for i in $(seq 600); do grep -q ready "
                      "/tmp/kill.out && break; sleep 0.1; done; ctr task kill -s KILL kill; wait "
                      "$pid; echo \"rc=$?\""));
  EXPECT_THAT(r.out, HasSubstr("rc=137")) << Describe(r);
}

TEST_P(ShimE2eTest, BigOutputLosesNothing) {
  // 64 MiB of random bytes; the container prints their checksum on stderr.
  ProcessResult r = Sh(absl::StrCat(
      Run("", "big",
          "sh -c 'head -c 67108864 /dev/urandom > /tmp/data; cat /tmp/data; md5sum < /tmp/data "
          ">&2'"),
      " 2>/tmp/big.err | md5sum; cat /tmp/big.err"));
  EXPECT_EQ(r.exit_code, 0) << Describe(r);
  std::vector<std::string> sums = absl::StrSplit(r.out, '\n', absl::SkipEmpty());
  ASSERT_EQ(sums.size(), 2u) << Describe(r);
  EXPECT_EQ(sums[0].substr(0, 32), sums[1].substr(0, 32)) << "output changed on the way";
}

TEST_P(ShimE2eTest, PrivilegedContainer) {
  // --privileged: every capability and a device cgroup rule allowing every device; in kapsel the
  // devices are the guest's. mknod of a device the default rules would deny must work.
  ProcessResult r = Sh(Run("--privileged", "priv",
                           "sh -c 'mknod /dev/kmsg2 c 1 11 && echo mknod-ok; "
                           "grep CapEff /proc/self/status'"));
  EXPECT_EQ(r.exit_code, 0) << Describe(r);
  EXPECT_THAT(r.out, HasSubstr("mknod-ok")) << Describe(r);
  EXPECT_THAT(r.out, HasSubstr("CapEff:\t000001ffffffffff")) << Describe(r);
}

TEST_P(ShimE2eTest, BadSpecIsAClearError) {
  ProcessResult r = Sh(Run("", "bad", "/no/such/program"));
  EXPECT_NE(r.exit_code, 0) << Describe(r);
  EXPECT_THAT(r.err, HasSubstr("/no/such/program")) << Describe(r);
  Remove("bad");
}

TEST_P(ShimE2eTest, SequentialAndConcurrentRuns) {
  for (int i = 0; i < 20; ++i) {
    ProcessResult r = Sh(Run("", absl::StrCat("seq", i), absl::StrCat("echo run ", i)));
    ASSERT_EQ(r.out, absl::StrCat("run ", i, "\n")) << Describe(r);
  }
  ProcessResult r = Sh(absl::StrCat("for i in 1 2 3 4 5; do (", Run("", "conc$i", "echo c$i"),
                                    " > /tmp/conc$i.out 2>&1) & done; wait; cat /tmp/conc*.out | "
                                    "sort"),
                       absl::Seconds(400));
  EXPECT_EQ(r.out, "c1\nc2\nc3\nc4\nc5\n") << Describe(r);
}

TEST(ShimKapselOnly, MemoryLimitSizesTheVm) {
  // A container alone in its VM brings its limit: the VM gets the default 256 MiB plus 512 MiB
  // (the guest kernel keeps a few MiB of that for itself).
  ProcessResult r =
      Sh(absl::StrCat("ctr run --rm --runtime ", kKapselRuntime, " --memory-limit 536870912 ",
                      kImage, " sized grep MemTotal /proc/meminfo"));
  ASSERT_EQ(r.exit_code, 0) << Describe(r);
  std::vector<std::string> fields = absl::StrSplit(r.out, ' ', absl::SkipWhitespace());
  int64_t kib = 0;
  ASSERT_TRUE(fields.size() == 3 && absl::SimpleAtoi(fields[1], &kib)) << Describe(r);
  EXPECT_GT(kib, 700 * 1024) << "the guest should have about 768 MiB: " << r.out;
  EXPECT_LE(kib, 768 * 1024) << r.out;
}

TEST(ShimKapselOnly, VmmIsJailed) {
  // kapsel-vmm runs with --jail (the default): no capabilities, its own mount and network
  // namespaces, and a root holding only the path to its vsock socket's directory. An exec still
  // reaches the guest through that socket.
  ProcessResult r = Sh(absl::StrCat(
      "ctr run -d --runtime ", kKapselRuntime, " ", kImage, " jailed sleep 1000 >/dev/null && ",
      "vmm=$(pgrep -f '[k]apsel-vmm.*/jailed/') && ",
      "sock=$(tr '\\0' '\\n' < /proc/$vmm/cmdline | grep -A1 -x -- --vsock | tail -n1 | "
      "cut -d, -f2) && ",
      "grep -E '^Cap(Prm|Eff|Bnd):' /proc/$vmm/status && ",
      "for ns in mnt net; do [ $(readlink /proc/$vmm/ns/$ns) != $(readlink /proc/self/ns/$ns) ] ",
      "&& echo own $ns; done; ", "echo \"root: $(ls -A /proc/$vmm/root)\"; ",
      "echo \"first: $(echo $sock | cut -d/ -f2)\"; ",
      "echo \"vm dir: $(ls -A /proc/$vmm/root$(dirname $sock))\"; ",
      "ctr task exec --exec-id e1 jailed echo exec works; ",
      "ctr task kill -s KILL jailed; sleep 1; ctr task delete jailed; ctr container delete "
      "jailed"));
  EXPECT_THAT(r.out, HasSubstr("CapPrm:\t0000000000000000\n")) << Describe(r);
  EXPECT_THAT(r.out, HasSubstr("CapEff:\t0000000000000000\n")) << Describe(r);
  EXPECT_THAT(r.out, HasSubstr("CapBnd:\t0000000000000000\n")) << Describe(r);
  EXPECT_THAT(r.out, HasSubstr("own mnt\nown net\n")) << Describe(r);
  EXPECT_THAT(r.out, HasSubstr("vm dir: sock\n")) << Describe(r);
  EXPECT_THAT(r.out, HasSubstr("exec works\n")) << Describe(r);
  std::vector<std::string> lines = absl::StrSplit(r.out, '\n');
  std::string root, first;
  for (const std::string& line : lines) {
    if (absl::StartsWith(line, "root: ")) root = line.substr(6);
    if (absl::StartsWith(line, "first: ")) first = line.substr(7);
  }
  EXPECT_FALSE(first.empty()) << Describe(r);
  EXPECT_EQ(root, first) << Describe(r);
  testing::ExpectNothingLeft("kapsel");
}

TEST(ShimKapselOnly, VmRunsInTheContainersCgroup) {
  // kapsel-vmm and virtiofsd start in the host cgroup the spec names (ctr --cgroup), where runc
  // puts the container, so the guest's memory is charged there; the cgroup goes with the task.
  ProcessResult r = Sh(absl::StrCat(
      "ctr run -d --runtime ", kKapselRuntime, " --cgroup /kapsel-e2e/cg ", kImage,
      " cg sleep 1000 >/dev/null && sleep 2; ",
      "for p in $(pgrep -f '[k]apsel-vmm.*/cg/') $(pgrep -f '[v]irtiofsd.*/cg/'); do ",
      "echo \"$(cat /proc/$p/comm) $(grep 0:: /proc/$p/cgroup)\"; done; ",
      "echo \"memory.current $(cat /sys/fs/cgroup/kapsel-e2e/cg/memory.current)\"; ",
      "ctr task kill -s KILL cg; sleep 1; ctr task delete cg >/dev/null; ctr container delete cg; ",
      "[ -e /sys/fs/cgroup/kapsel-e2e/cg ] && echo cgroup left || echo cgroup gone; ",
      "rmdir /sys/fs/cgroup/kapsel-e2e"));
  EXPECT_THAT(r.out, HasSubstr("kapsel-vmm 0::/kapsel-e2e/cg\n")) << Describe(r);
  EXPECT_THAT(r.out, HasSubstr("virtiofsd 0::/kapsel-e2e/cg\n")) << Describe(r);
  EXPECT_THAT(r.out, HasSubstr("cgroup gone\n")) << Describe(r);
  int64_t bytes = 0;
  const size_t at = r.out.find("memory.current ");
  ASSERT_NE(at, std::string::npos) << Describe(r);
  std::string value = r.out.substr(at + 15);
  value = value.substr(0, value.find('\n'));
  ASSERT_TRUE(absl::SimpleAtoi(value, &bytes)) << Describe(r);
  EXPECT_GT(bytes, 8 << 20) << "the guest's memory should be charged to the cgroup: " << r.out;
  testing::ExpectNothingLeft("kapsel");
}

TEST(ShimKapselOnly, KilledShimLeavesNothingBehind) {
  // A shim killed with SIGKILL: kapsel-vmm and virtiofsd die with it (PR_SET_PDEATHSIG), and
  // containerd's `delete` of the dead shim removes the rest, the sandbox's cgroup included.
  ProcessResult r = Sh(absl::StrCat(
      "ctr run -d --runtime ", kKapselRuntime, " --cgroup /kapsel-e2e/dead ", kImage,
      " dead sleep 1000 >/dev/null && sleep 2; ",
      "pkill -KILL -f '[c]ontainerd-shim-kapsel-v2.* -id dead'; ",
      "for i in $(seq 100); do ctr task ls | grep -q 'dead.*RUNNING' || break; sleep 0.2; done; ",
      "ctr task ls | grep dead; ctr task delete dead >/dev/null 2>&1; ctr container delete dead; ",
      "for i in $(seq 50); do [ -e /sys/fs/cgroup/kapsel-e2e/dead ] || break; sleep 0.2; done; ",
      "[ -e /sys/fs/cgroup/kapsel-e2e/dead ] && echo cgroup left || echo cgroup gone; ",
      "rmdir /sys/fs/cgroup/kapsel-e2e"));
  EXPECT_THAT(r.out, HasSubstr("cgroup gone\n")) << Describe(r);
  EXPECT_THAT(r.out, ::testing::Not(HasSubstr("RUNNING"))) << Describe(r);
  testing::ExpectNothingLeft("kapsel");
}

TEST(ShimKapselOnly, KilledVmmBecomesAnExit) {
  ProcessResult r = Sh(absl::StrCat(
      "(ctr run --rm --runtime ", kKapselRuntime, " ", kImage,
      " victim sh -c 'echo ready; sleep 1000') > /tmp/victim.out 2>&1 & pid=$!; for i in $(seq "
      "600); do grep -q ready /tmp/victim.out && break; sleep 0.1; done; pkill -KILL -f "
      "'[k]apsel-vmm.*/victim/'; wait $pid; echo \"rc=$?\""));
  EXPECT_THAT(r.out, HasSubstr("rc=137")) << Describe(r);
}

INSTANTIATE_TEST_SUITE_P(Runtimes, ShimE2eTest, ::testing::Values(kKapselRuntime, kRuncRuntime),
                         [](const ::testing::TestParamInfo<const char*>& info) {
                           return std::string(info.param) == kKapselRuntime ? "kapsel" : "runc";
                         });

}  // namespace
}  // namespace kapsel::shim
