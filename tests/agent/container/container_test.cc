// Containers built on this machine from OCI specs over a busybox rootfs: lifecycle, exit codes,
// signals, namespaces, exec, terminal. Needs root.
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <fstream>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/agent/container/container_fixture.h"

namespace kapsel::agent::testing {
namespace {

using ::testing::HasSubstr;

TEST_F(ContainerTest, EchoHelloThroughPipes) {
  absl::StatusOr<RunResult> result = Run(BaseSpec({"echo", "hello"}));
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->out, "hello\n");
  EXPECT_EQ(result->err, "");
  ASSERT_TRUE(WIFEXITED(result->status));
  EXPECT_EQ(WEXITSTATUS(result->status), 0);
}

TEST_F(ContainerTest, ExitCode) {
  absl::StatusOr<RunResult> result = Run(BaseSpec({"sh", "-c", "echo oops >&2; exit 3"}));
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->err, "oops\n");
  ASSERT_TRUE(WIFEXITED(result->status));
  EXPECT_EQ(WEXITSTATUS(result->status), 3);
}

TEST_F(ContainerTest, PidOneHostnameAndOwnProc) {
  absl::StatusOr<RunResult> result =
      Run(BaseSpec({"sh", "-c", "echo $$; hostname; ls /proc | grep -c '^[0-9][0-9]*$'"}));
  ASSERT_TRUE(result.ok()) << result.status();
  std::vector<std::string> lines = absl::StrSplit(result->out, '\n', absl::SkipEmpty());
  ASSERT_EQ(lines.size(), 3u) << result->out << result->err;
  EXPECT_EQ(lines[0], "1");
  EXPECT_EQ(lines[1], "kapsel-test");
  int count = std::stoi(lines[2]);
  EXPECT_GE(count, 1);
  EXPECT_LE(count, 4) << "/proc shows more than the container's processes";
}

TEST_F(ContainerTest, SignalKillsInitOfPidNamespace) {
  absl::StatusOr<std::unique_ptr<Container>> c =
      Container::Create("sig", BaseSpec({"sleep", "100"}), Options());
  ASSERT_TRUE(c.ok()) << c.status();
  ASSERT_TRUE((*c)->Start().ok());
  EXPECT_EQ((*c)->state(), ContainerState::kRunning);
  // As PID 1 of its namespace, sleep has no handler and ignores SIGTERM from outside; SIGKILL
  // works.
  ASSERT_TRUE((*c)->Signal(SIGKILL).ok());
  int status = WaitForExit((*c)->init_pid(), absl::Seconds(10));
  ASSERT_TRUE(WIFSIGNALED(status)) << status;
  EXPECT_EQ(WTERMSIG(status), SIGKILL);
  EXPECT_TRUE((*c)->OnExit((*c)->init_pid(), status));
  EXPECT_EQ((*c)->state(), ContainerState::kStopped);
  EXPECT_EQ((*c)->init_exit_status(), status);
  EXPECT_FALSE((*c)->Signal(SIGTERM).ok());
  EXPECT_TRUE((*c)->Destroy().ok());
}

TEST_F(ContainerTest, SigtermWithoutPidNamespace) {
  oci::v1::Spec spec = BaseSpec({"sleep", "100"});
  spec.mutable_linux()->mutable_namespaces()->DeleteSubrange(0, 1);  // no pid namespace
  absl::StatusOr<std::unique_ptr<Container>> c = Container::Create("sigterm", spec, Options());
  ASSERT_TRUE(c.ok()) << c.status();
  ASSERT_TRUE((*c)->Start().ok());
  ASSERT_TRUE((*c)->Signal(SIGTERM).ok());
  int status = WaitForExit((*c)->init_pid(), absl::Seconds(10));
  ASSERT_TRUE(WIFSIGNALED(status)) << status;
  EXPECT_EQ(WTERMSIG(status), SIGTERM);
  (*c)->OnExit((*c)->init_pid(), status);
}

TEST_F(ContainerTest, StartTwiceAndAfterDestroyFail) {
  absl::StatusOr<std::unique_ptr<Container>> c =
      Container::Create("twice", BaseSpec({"true"}), Options());
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ((*c)->state(), ContainerState::kCreated);
  ASSERT_TRUE((*c)->Start().ok());
  absl::Status again = (*c)->Start();
  EXPECT_EQ(again.code(), absl::StatusCode::kFailedPrecondition) << again;
  int status = WaitForExit((*c)->init_pid(), absl::Seconds(10));
  (*c)->OnExit((*c)->init_pid(), status);
  EXPECT_TRUE((*c)->Destroy().ok());
  EXPECT_TRUE((*c)->Destroy().ok()) << "Destroy is idempotent";
  EXPECT_FALSE((*c)->Start().ok());
}

TEST_F(ContainerTest, DestroyBeforeStartKillsTheWaitingInit) {
  absl::StatusOr<std::unique_ptr<Container>> c =
      Container::Create("unstarted", BaseSpec({"true"}), Options());
  ASSERT_TRUE(c.ok()) << c.status();
  pid_t pid = (*c)->init_pid();
  std::string cgroup = (*c)->cgroup_path();
  c->reset();  // the destructor destroys
  int status = WaitForExit(pid, absl::Seconds(10));
  ASSERT_TRUE(WIFSIGNALED(status)) << status;
  EXPECT_EQ(WTERMSIG(status), SIGKILL);
  struct stat st;
  EXPECT_NE(stat(cgroup.c_str(), &st), 0) << cgroup << " still exists";
}

TEST_F(ContainerTest, ExecIntoRunningContainer) {
  absl::StatusOr<std::unique_ptr<Container>> c =
      Container::Create("exec", BaseSpec({"sleep", "100"}), Options());
  ASSERT_TRUE(c.ok()) << c.status();
  ASSERT_TRUE((*c)->Start().ok());

  int out[2];
  ASSERT_EQ(pipe2(out, O_CLOEXEC), 0);
  UniqueFd out_read(out[0]), out_write(out[1]);
  oci::v1::Process process;
  process.add_args("sh");
  process.add_args("-c");
  process.add_args("cat /proc/1/cmdline | tr '\\0' ' '; echo; echo $$; hostname; exit 5");
  process.add_env("PATH=/bin");
  process.set_cwd("/tmp");
  absl::StatusOr<ExecResult> exec = (*c)->Exec(process, {-1, out_write.get(), -1});
  out_write.reset();
  ASSERT_TRUE(exec.ok()) << exec.status();
  EXPECT_NE(exec->pid, (*c)->init_pid());
  absl::StatusOr<std::vector<pid_t>> pids = (*c)->Pids();
  ASSERT_TRUE(pids.ok()) << pids.status();
  EXPECT_THAT(*pids, ::testing::Contains((*c)->init_pid()));
  std::string text = ReadAll(out_read.get(), absl::Seconds(10));
  int status = WaitForExit(exec->pid, absl::Seconds(10));
  EXPECT_TRUE((*c)->OnExit(exec->pid, status));
  ASSERT_TRUE(WIFEXITED(status)) << status;
  EXPECT_EQ(WEXITSTATUS(status), 5);
  std::vector<std::string> lines = absl::StrSplit(text, '\n', absl::SkipEmpty());
  ASSERT_EQ(lines.size(), 3u) << text;
  EXPECT_EQ(lines[0], "sleep 100 ");
  EXPECT_NE(lines[1], "1");  // in the container's pid namespace, not its init
  EXPECT_LT(std::stoi(lines[1]), 100);
  EXPECT_EQ(lines[2], "kapsel-test");

  // A signal to an exec'd process by pid.
  oci::v1::Process sleeper;
  sleeper.add_args("sleep");
  sleeper.add_args("100");
  absl::StatusOr<ExecResult> sleeping = (*c)->Exec(sleeper, {});
  ASSERT_TRUE(sleeping.ok()) << sleeping.status();
  ASSERT_TRUE((*c)->SignalProcess(sleeping->pid, SIGTERM).ok());
  status = WaitForExit(sleeping->pid, absl::Seconds(10));
  ASSERT_TRUE(WIFSIGNALED(status)) << status;
  EXPECT_EQ(WTERMSIG(status), SIGTERM);
  EXPECT_TRUE((*c)->OnExit(sleeping->pid, status));
  EXPECT_EQ((*c)->SignalProcess(sleeping->pid, SIGTERM).code(), absl::StatusCode::kNotFound);

  // A missing executable is an error of Exec.
  oci::v1::Process missing;
  missing.add_args("/no/such/program");
  absl::StatusOr<ExecResult> failed = (*c)->Exec(missing, {});
  EXPECT_FALSE(failed.ok());
  EXPECT_THAT(failed.status().message(), HasSubstr("/no/such/program"));

  // The failed exec's process is left for the reaper (WaitForExit reaps every child); a pid
  // namespace's init only finishes exiting once every process of the namespace is reaped.
  ASSERT_TRUE((*c)->Signal(SIGKILL).ok());
  status = WaitForExit((*c)->init_pid(), absl::Seconds(10));
  ASSERT_TRUE(WIFSIGNALED(status)) << status;
  (*c)->OnExit((*c)->init_pid(), status);
  EXPECT_TRUE((*c)->Destroy().ok());
}

TEST_F(ContainerTest, TerminalMode) {
  oci::v1::Spec spec = BaseSpec({"sh", "-c", "tty; stty size"});
  spec.mutable_process()->set_terminal(true);
  spec.mutable_process()->mutable_console_size()->set_height(40);
  spec.mutable_process()->mutable_console_size()->set_width(120);
  absl::StatusOr<std::unique_ptr<Container>> c = Container::Create("tty", spec, Options());
  ASSERT_TRUE(c.ok()) << c.status();
  UniqueFd console = (*c)->TakeConsole();
  ASSERT_TRUE(console.valid());
  ASSERT_TRUE((*c)->Start().ok());
  std::string text = ReadAll(console.get(), absl::Seconds(10));
  int status = WaitForExit((*c)->init_pid(), absl::Seconds(10));
  (*c)->OnExit((*c)->init_pid(), status);
  EXPECT_EQ(text, "/dev/pts/0\r\n40 120\r\n");
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
  EXPECT_TRUE((*c)->Destroy().ok());
}

TEST_F(ContainerTest, ExecWithTerminal) {
  absl::StatusOr<std::unique_ptr<Container>> c =
      Container::Create("exectty", BaseSpec({"sleep", "100"}), Options());
  ASSERT_TRUE(c.ok()) << c.status();
  ASSERT_TRUE((*c)->Start().ok());
  oci::v1::Process process;
  process.add_args("sh");
  process.add_args("-c");
  process.add_args("tty; stty size");
  process.set_terminal(true);
  process.mutable_console_size()->set_height(25);
  process.mutable_console_size()->set_width(80);
  absl::StatusOr<ExecResult> exec = (*c)->Exec(process, {});
  ASSERT_TRUE(exec.ok()) << exec.status();
  ASSERT_TRUE(exec->console.valid());
  std::string text = ReadAll(exec->console.get(), absl::Seconds(10));
  int status = WaitForExit(exec->pid, absl::Seconds(10));
  (*c)->OnExit(exec->pid, status);
  EXPECT_EQ(text, "/dev/pts/0\r\n25 80\r\n");
  ASSERT_TRUE((*c)->Signal(SIGKILL).ok());
  status = WaitForExit((*c)->init_pid(), absl::Seconds(10));
  (*c)->OnExit((*c)->init_pid(), status);
  EXPECT_TRUE((*c)->Destroy().ok());
}

TEST_F(ContainerTest, PauseResumeAndDestroy) {
  absl::StatusOr<std::unique_ptr<Container>> c =
      Container::Create("pause", BaseSpec({"sh", "-c", "while true; do sleep 1; done"}), Options());
  ASSERT_TRUE(c.ok()) << c.status();
  ASSERT_TRUE((*c)->Start().ok());
  std::string cgroup = (*c)->cgroup_path();
  EXPECT_EQ(cgroup, cgroup_root_ + "/kapsel/pause");
  ASSERT_TRUE((*c)->Pause().ok());
  EXPECT_EQ((*c)->state(), ContainerState::kPaused);
  std::ifstream events(cgroup + "/cgroup.events");
  std::string all((std::istreambuf_iterator<char>(events)), std::istreambuf_iterator<char>());
  EXPECT_THAT(all, HasSubstr("frozen 1"));
  oci::v1::Process process;
  process.add_args("true");
  EXPECT_EQ((*c)->Exec(process, {}).status().code(), absl::StatusCode::kFailedPrecondition);
  ASSERT_TRUE((*c)->Resume().ok());
  EXPECT_EQ((*c)->state(), ContainerState::kRunning);

  absl::StatusOr<CgroupStats> stats = (*c)->Stats();
  ASSERT_TRUE(stats.ok()) << stats.status();
  EXPECT_TRUE(stats->cpu_usage_usec.has_value());
  EXPECT_FALSE(stats->memory_current.has_value());  // no memory controller here

  pid_t pid = (*c)->init_pid();
  ASSERT_TRUE((*c)->Destroy().ok());
  int status = WaitForExit(pid, absl::Seconds(10));
  ASSERT_TRUE(WIFSIGNALED(status)) << status;
  EXPECT_EQ(WTERMSIG(status), SIGKILL);
  struct stat st;
  EXPECT_NE(stat(cgroup.c_str(), &st), 0) << cgroup << " still exists";
  EXPECT_NE(stat((cgroup_root_ + "/kapsel").c_str(), &st), 0);
  EXPECT_FALSE((*c)->Pids().ok());
}

TEST_F(ContainerTest, DestroyWhilePaused) {
  absl::StatusOr<std::unique_ptr<Container>> c =
      Container::Create("frozen", BaseSpec({"sleep", "100"}), Options());
  ASSERT_TRUE(c.ok()) << c.status();
  ASSERT_TRUE((*c)->Start().ok());
  oci::v1::Process process;
  process.add_args("sleep");
  process.add_args("100");
  absl::StatusOr<ExecResult> exec = (*c)->Exec(process, {});
  ASSERT_TRUE(exec.ok()) << exec.status();
  absl::StatusOr<std::vector<pid_t>> pids = (*c)->Pids();
  ASSERT_TRUE(pids.ok());
  EXPECT_THAT(*pids, ::testing::UnorderedElementsAre((*c)->init_pid(), exec->pid));
  ASSERT_TRUE((*c)->Pause().ok());
  ASSERT_TRUE((*c)->Destroy().ok());
  for (pid_t pid : {exec->pid, (*c)->init_pid()}) {
    int status = WaitForExit(pid, absl::Seconds(10));
    ASSERT_TRUE(WIFSIGNALED(status)) << pid << ": " << status;
    EXPECT_EQ(WTERMSIG(status), SIGKILL);
  }
}

TEST_F(ContainerTest, MemoryLimitNeedsTheController) {
  oci::v1::Spec spec = BaseSpec({"true"});
  spec.mutable_linux()->mutable_resources()->mutable_memory()->set_limit(64 << 20);
  absl::StatusOr<std::unique_ptr<Container>> c = Container::Create("mem", spec, Options());
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), absl::StatusCode::kFailedPrecondition) << c.status();
  EXPECT_THAT(c.status().message(), HasSubstr("\"memory\" controller"));
  EXPECT_THAT(c.status().message(), HasSubstr("memory.limit"));
  struct stat st;
  EXPECT_NE(stat((cgroup_root_ + "/kapsel").c_str(), &st), 0);
}

TEST_F(ContainerTest, UpdateMemoryLimitNeedsTheController) {
  absl::StatusOr<std::unique_ptr<Container>> c =
      Container::Create("update", BaseSpec({"true"}), Options());
  ASSERT_TRUE(c.ok()) << c.status();
  oci::v1::Resources resources;
  resources.mutable_pids()->set_limit(10);
  absl::Status updated = (*c)->Update(resources);
  EXPECT_EQ(updated.code(), absl::StatusCode::kFailedPrecondition) << updated;
  EXPECT_THAT(updated.message(), HasSubstr("\"pids\" controller"));
  EXPECT_TRUE((*c)->Destroy().ok());
  WaitForExit((*c)->init_pid(), absl::Seconds(10));
}

TEST_F(ContainerTest, JoinsNamespaceByPath) {
  absl::StatusOr<std::unique_ptr<Container>> a =
      Container::Create("a", BaseSpec({"sleep", "100"}), Options());
  ASSERT_TRUE(a.ok()) << a.status();
  ASSERT_TRUE((*a)->Start().ok());
  oci::v1::Spec spec = BaseSpec({"hostname"});
  spec.clear_hostname();
  for (oci::v1::Namespace& ns : *spec.mutable_linux()->mutable_namespaces()) {
    if (ns.type() == "uts") ns.set_path(absl::StrCat("/proc/", (*a)->init_pid(), "/ns/uts"));
  }
  absl::StatusOr<RunResult> result = Run(spec, "b");
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->out, "kapsel-test\n");
  ASSERT_TRUE((*a)->Destroy().ok());
  WaitForExit((*a)->init_pid(), absl::Seconds(10));
}

}  // namespace
}  // namespace kapsel::agent::testing
