// kapsel-agent served on a Unix socket (`--listen unix:PATH`), driven through its ttrpc API and
// stdio streams exactly as the shim drives it over vsock.
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <iterator>
#include <string>
#include <thread>

#include "absl/strings/str_cat.h"
#include "common/agent/agent.pb.h"
#include "common/agent/dialer.h"
#include "common/ttrpc/address.h"
#include "common/ttrpc/client.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/support/agent_session.h"
#include "tests/support/subprocess.h"

namespace kapsel::agent {
namespace {

using ::testing::HasSubstr;

const std::string kAgent = KAPSEL_BIN_DIR "/kapsel-agent";
constexpr char kService[] = "kapsel.agent.v1.Agent";

// This machine's cgroup2 hierarchy (controller-less on a v1 host, where limits cannot be tested).
std::string Cgroup2Mount() {
  for (const char* path : {"/sys/fs/cgroup/unified", "/sys/fs/cgroup"}) {
    struct stat st;
    if (stat(absl::StrCat(path, "/cgroup.procs").c_str(), &st) == 0) return path;
  }
  return "/sys/fs/cgroup";
}

class AgentApiTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char dir[] = "/tmp/kapsel-agent-test-XXXXXX";
    ASSERT_NE(mkdtemp(dir), nullptr);
    dir_ = dir;
    socket_ = dir_ + "/agent.sock";
    cgroup_root_ = absl::StrCat(Cgroup2Mount(), "/kapsel-agent-test-", getpid());
    ASSERT_EQ(mkdir(cgroup_root_.c_str(), 0755), 0) << cgroup_root_;
    auto agent = testing::Subprocess::Start(
        {kAgent, "--listen", "unix:" + socket_, "--cgroup-root", cgroup_root_});
    ASSERT_TRUE(agent.ok()) << agent.status();
    agent_ = *std::move(agent);
    ASSERT_TRUE(agent_->WaitForOutput("serving on", absl::Seconds(10)));
    auto client = ttrpc::Client::Dial("unix:" + socket_);
    ASSERT_TRUE(client.ok()) << client.status();
    client_ = *std::move(client);
  }

  void TearDown() override {
    client_.reset();
    if (agent_) {
      agent_->Signal(SIGTERM);
      testing::ProcessResult r = agent_->Wait(absl::Seconds(10));
      EXPECT_EQ(r.exit_code, 0) << r.err;
    }
    // The agent removes its sockets when it stops.
    struct stat st;
    EXPECT_NE(stat(socket_.c_str(), &st), 0);
    EXPECT_NE(stat((socket_ + ".stdio").c_str(), &st), 0);
    if (!rootfs_.empty())
      testing::RunProcess({"rm", "-rf", rootfs_}, absl::Seconds(30)).IgnoreError();
    rmdir(dir_.c_str());
    // Every container cgroup was removed.
    EXPECT_EQ(rmdir(cgroup_root_.c_str()), 0) << cgroup_root_ << " is not empty";
  }

  // A busybox root filesystem for containers (made on first use).
  v1::Rootfs Rootfs() {
    if (rootfs_.empty()) {
      rootfs_ = dir_ + "/rootfs";
      auto made = testing::RunProcess(
          {KAPSEL_SOURCE_DIR "/tests/support/make-test-rootfs", rootfs_}, absl::Seconds(60));
      EXPECT_TRUE(made.ok() && made->exit_code == 0);
    }
    v1::Rootfs rootfs;
    rootfs.mutable_guest_path()->set_path(rootfs_);
    return rootfs;
  }

  absl::StatusOr<testing::ContainerRun> Run(const std::string& id, std::vector<std::string> args,
                                            std::optional<std::string> input = std::nullopt) {
    absl::StatusOr<oci::v1::Spec> spec = testing::DefaultSpec(args);
    if (!spec.ok()) return spec.status();
    auto session = testing::AgentSession::Connect("unix:" + socket_, absl::Seconds(10));
    if (!session.ok()) return session.status();
    return (*session)->RunContainer(id, *spec, Rootfs(), input);
  }

  std::string dir_;
  std::string socket_;
  std::string cgroup_root_;
  std::string rootfs_;
  std::unique_ptr<testing::Subprocess> agent_;
  std::unique_ptr<ttrpc::Client> client_;
};

TEST_F(AgentApiTest, HealthReportsTheApiVersion) {
  v1::HealthResponse health;
  ASSERT_TRUE(client_->Call(kService, "Health", v1::HealthRequest(), &health).ok());
  EXPECT_EQ(health.api_version(), 2u);
  EXPECT_FALSE(health.version().empty());
}

TEST_F(AgentApiTest, UnknownProcessesAreNotFound) {
  v1::ProcessRequest request;
  request.set_container_id("nope");
  v1::WaitProcessResponse wait;
  absl::Status status = client_->Call(kService, "WaitProcess", request, &wait);
  EXPECT_EQ(status.code(), absl::StatusCode::kNotFound) << status;
  v1::SignalProcessRequest signal;
  signal.set_container_id("nope");
  signal.set_signal(SIGTERM);
  v1::Empty empty;
  EXPECT_EQ(client_->Call(kService, "SignalProcess", signal, &empty).code(),
            absl::StatusCode::kNotFound);
  signal.set_signal(0);
  EXPECT_EQ(client_->Call(kService, "SignalProcess", signal, &empty).code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(AgentApiTest, SandboxChangesNeedInitButAnEmptySandboxIsFine) {
  v1::Empty empty;
  EXPECT_TRUE(client_->Call(kService, "CreateSandbox", v1::CreateSandboxRequest(), &empty).ok());
  v1::CreateSandboxRequest request;
  request.set_hostname("elsewhere");
  absl::Status status = client_->Call(kService, "CreateSandbox", request, &empty);
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition) << status;
}

TEST_F(AgentApiTest, GarbageRequestsGetErrorsAndTheAgentKeepsServing) {
  absl::StatusOr<std::string> garbage =
      client_->CallRaw(kService, "Health", std::string("\xff\xff\xff\xff", 4));
  EXPECT_EQ(garbage.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(client_->CallRaw(kService, "NoSuchMethod", "").status().code(),
            absl::StatusCode::kUnimplemented);
  v1::HealthResponse health;
  EXPECT_TRUE(client_->Call(kService, "Health", v1::HealthRequest(), &health).ok());
}

TEST_F(AgentApiTest, RunsContainersWithOutputExitCodesAndStdin) {
  auto hello = Run("hello", {"echo", "hello from kapsel-agent"});
  ASSERT_TRUE(hello.ok()) << hello.status();
  EXPECT_EQ(hello->out, "hello from kapsel-agent\n");
  EXPECT_EQ(hello->exit_status, 0) << hello->err;
  auto three = Run("three", {"sh", "-c", "echo oops >&2; exit 3"});
  ASSERT_TRUE(three.ok()) << three.status();
  EXPECT_EQ(three->exit_status, 3);
  EXPECT_EQ(three->err, "oops\n");
  auto piped = Run("piped", {"sh", "-c", "cat; echo pid=$$"}, "through stdin\n");
  ASSERT_TRUE(piped.ok()) << piped.status();
  EXPECT_EQ(piped->out, "through stdin\npid=1\n");
}

// As the shim does for `ctr run` without -i: a stdin stream is attached but nothing is ever
// written to it or closed; the exit must still be reported (WaitProcess with no deadline).
TEST_F(AgentApiTest, ExitIsReportedWhileStdinStaysOpen) {
  absl::StatusOr<oci::v1::Spec> spec = testing::DefaultSpec({"echo", "bye"});
  ASSERT_TRUE(spec.ok()) << spec.status();
  auto session = testing::AgentSession::Connect("unix:" + socket_, absl::Seconds(10));
  ASSERT_TRUE(session.ok()) << session.status();
  v1::CreateContainerRequest create;
  create.set_container_id("open-stdin");
  *create.mutable_spec() = *spec;
  *create.mutable_rootfs() = Rootfs();
  create.set_stdin(true);
  v1::CreateContainerResponse created;
  ASSERT_TRUE((*session)->Call("CreateContainer", create, &created).ok());
  auto out = (*session)->Stdio("open-stdin", "", v1::StdioHello::STDOUT);
  auto err = (*session)->Stdio("open-stdin", "", v1::StdioHello::STDERR);
  auto in = (*session)->Stdio("open-stdin", "", v1::StdioHello::STDIN);
  ASSERT_TRUE(out.ok() && err.ok() && in.ok());
  v1::ContainerRequest start;
  start.set_container_id("open-stdin");
  v1::Empty empty;
  ASSERT_TRUE((*session)->Call("StartContainer", start, &empty).ok());
  EXPECT_EQ(testing::ReadToEof(out->get(), absl::Seconds(20)), "bye\n");
  v1::ProcessRequest wait;
  wait.set_container_id("open-stdin");
  v1::WaitProcessResponse waited;
  absl::Status status = (*session)->client().Call(
      kService, "WaitProcess", wait, &waited, ttrpc::CallOptions::WithTimeout(absl::Seconds(60)));
  ASSERT_TRUE(status.ok()) << status;
  EXPECT_EQ(waited.exit_status(), 0);
  v1::RemoveContainerRequest remove;
  remove.set_container_id("open-stdin");
  EXPECT_TRUE((*session)->Call("RemoveContainer", remove, &empty).ok());
}

TEST_F(AgentApiTest, TerminalExecSignalsPauseAndResume) {
  auto session = testing::AgentSession::Connect("unix:" + socket_, absl::Seconds(10));
  ASSERT_TRUE(session.ok()) << session.status();
  v1::Empty empty;

  // A terminal: the pty's slave is the process's terminal, its size the spec's consoleSize.
  absl::StatusOr<oci::v1::Spec> tty_spec = testing::DefaultSpec({"sh", "-c", "tty; stty size"});
  ASSERT_TRUE(tty_spec.ok()) << tty_spec.status();
  tty_spec->mutable_process()->set_terminal(true);
  tty_spec->mutable_process()->mutable_console_size()->set_height(33);
  tty_spec->mutable_process()->mutable_console_size()->set_width(101);
  v1::CreateContainerRequest create;
  create.set_container_id("tty");
  *create.mutable_spec() = *tty_spec;
  *create.mutable_rootfs() = Rootfs();
  v1::CreateContainerResponse created;
  ASSERT_TRUE((*session)->Call("CreateContainer", create, &created).ok());
  auto terminal = (*session)->Stdio("tty", "", v1::StdioHello::TERMINAL);
  ASSERT_TRUE(terminal.ok()) << terminal.status();
  v1::ContainerRequest tty_id;
  tty_id.set_container_id("tty");
  ASSERT_TRUE((*session)->Call("StartContainer", tty_id, &empty).ok());
  const std::string screen = testing::ReadToEof(terminal->get(), absl::Seconds(30));
  EXPECT_THAT(screen, HasSubstr("/dev/pts/0"));
  EXPECT_THAT(screen, HasSubstr("33 101"));
  v1::ProcessRequest tty_wait;
  tty_wait.set_container_id("tty");
  v1::WaitProcessResponse tty_waited;
  ASSERT_TRUE((*session)->Call("WaitProcess", tty_wait, &tty_waited).ok());
  EXPECT_EQ(tty_waited.exit_status(), 0);
  v1::RemoveContainerRequest remove;
  remove.set_container_id("tty");
  ASSERT_TRUE((*session)->Call("RemoveContainer", remove, &empty).ok());

  // A long-running container: exec into it, pause and resume it, kill it.
  absl::StatusOr<oci::v1::Spec> spec = testing::DefaultSpec({"sleep", "300"});
  ASSERT_TRUE(spec.ok());
  create.set_container_id("long");
  *create.mutable_spec() = *spec;
  ASSERT_TRUE((*session)->Call("CreateContainer", create, &created).ok());
  v1::ContainerRequest id;
  id.set_container_id("long");
  ASSERT_TRUE((*session)->Call("StartContainer", id, &empty).ok());
  // Removing a running container needs force.
  remove.set_container_id("long");
  EXPECT_EQ((*session)->Call("RemoveContainer", remove, &empty).code(),
            absl::StatusCode::kFailedPrecondition);

  v1::ExecProcessRequest exec;
  exec.set_container_id("long");
  exec.set_exec_id("peek");
  *exec.mutable_process() =
      testing::DefaultSpec({"sh", "-c", "echo exec sees pid 1: $(cat /proc/1/comm); exit 4"})
          ->process();
  v1::ExecProcessResponse exec_started;
  ASSERT_TRUE((*session)->Call("ExecProcess", exec, &exec_started).ok());
  auto out = (*session)->Stdio("long", "peek", v1::StdioHello::STDOUT);
  ASSERT_TRUE(out.ok());
  EXPECT_EQ(testing::ReadToEof(out->get(), absl::Seconds(30)), "exec sees pid 1: sleep\n");
  v1::ProcessRequest exec_wait;
  exec_wait.set_container_id("long");
  exec_wait.set_exec_id("peek");
  v1::WaitProcessResponse exec_waited;
  ASSERT_TRUE((*session)->Call("WaitProcess", exec_wait, &exec_waited).ok());
  EXPECT_EQ(exec_waited.exit_status(), 4);

  v1::ListProcessesResponse processes;
  ASSERT_TRUE((*session)->Call("ListProcesses", id, &processes).ok());
  ASSERT_EQ(processes.pids_size(), 1);
  EXPECT_EQ(static_cast<pid_t>(processes.pids(0)), static_cast<pid_t>(created.pid()));

  // Pause and resume freeze and thaw the container's cgroup (cgroup_root/kapsel/<id>).
  auto events = [this] {
    std::ifstream in(cgroup_root_ + "/kapsel/long/cgroup.events");
    return std::string((std::istreambuf_iterator<char>(in)), {});
  };
  EXPECT_THAT(events(), HasSubstr("frozen 0"));
  ASSERT_TRUE((*session)->Call("PauseContainer", id, &empty).ok());
  EXPECT_THAT(events(), HasSubstr("frozen 1"));
  ASSERT_TRUE((*session)->Call("ResumeContainer", id, &empty).ok());
  EXPECT_THAT(events(), HasSubstr("frozen 0"));

  v1::SignalProcessRequest kill_it;
  kill_it.set_container_id("long");
  kill_it.set_signal(SIGKILL);
  ASSERT_TRUE((*session)->Call("SignalProcess", kill_it, &empty).ok());
  v1::ProcessRequest wait;
  wait.set_container_id("long");
  v1::WaitProcessResponse waited;
  ASSERT_TRUE((*session)->Call("WaitProcess", wait, &waited).ok());
  EXPECT_EQ(waited.exit_status(), 128 + SIGKILL);
  ASSERT_TRUE((*session)->Call("RemoveContainer", remove, &empty).ok());
  EXPECT_EQ((*session)->Call("StartContainer", id, &empty).code(), absl::StatusCode::kNotFound);
}

// containerd deletes an exec after its exit and may then use its id again (ctr task exec
// --exec-id): RemoveProcess forgets an exec that ended, and only that.
TEST_F(AgentApiTest, RemoveProcessFreesAnEndedExecsId) {
  auto session = testing::AgentSession::Connect("unix:" + socket_, absl::Seconds(10));
  ASSERT_TRUE(session.ok()) << session.status();
  v1::Empty empty;
  absl::StatusOr<oci::v1::Spec> spec = testing::DefaultSpec({"sleep", "300"});
  ASSERT_TRUE(spec.ok());
  v1::CreateContainerRequest create;
  create.set_container_id("host");
  *create.mutable_spec() = *spec;
  *create.mutable_rootfs() = Rootfs();
  v1::CreateContainerResponse created;
  ASSERT_TRUE((*session)->Call("CreateContainer", create, &created).ok());
  v1::ContainerRequest id;
  id.set_container_id("host");
  ASSERT_TRUE((*session)->Call("StartContainer", id, &empty).ok());

  // Runs exec `exec_id` with `argv`: its output, or the ExecProcess error.
  auto exec = [&](const std::string& exec_id,
                  std::vector<std::string> argv) -> absl::StatusOr<std::string> {
    v1::ExecProcessRequest request;
    request.set_container_id("host");
    request.set_exec_id(exec_id);
    *request.mutable_process() = testing::DefaultSpec(std::move(argv))->process();
    v1::ExecProcessResponse started;
    if (absl::Status s = (*session)->Call("ExecProcess", request, &started); !s.ok()) return s;
    auto out = (*session)->Stdio("host", exec_id, v1::StdioHello::STDOUT);
    if (!out.ok()) return out.status();
    return testing::ReadToEof(out->get(), absl::Seconds(30));
  };
  v1::ProcessRequest process;
  process.set_container_id("host");
  process.set_exec_id("probe");
  v1::WaitProcessResponse waited;

  absl::StatusOr<std::string> out = exec("probe", {"echo", "one"});
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(*out, "one\n");
  ASSERT_TRUE((*session)->Call("WaitProcess", process, &waited).ok());
  EXPECT_EQ(exec("probe", {"echo", "two"}).status().code(), absl::StatusCode::kAlreadyExists);
  ASSERT_TRUE((*session)->Call("RemoveProcess", process, &empty).ok());
  EXPECT_EQ((*session)->Call("RemoveProcess", process, &empty).code(), absl::StatusCode::kNotFound);
  EXPECT_EQ((*session)->Call("WaitProcess", process, &waited).code(), absl::StatusCode::kNotFound);
  out = exec("probe", {"echo", "two"});
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(*out, "two\n");

  // Not while it runs (its output ends at once, the process does not); never the init.
  out = exec("nap", {"sh", "-c", "exec sleep 300 >/dev/null"});
  ASSERT_TRUE(out.ok()) << out.status();
  process.set_exec_id("nap");
  EXPECT_EQ((*session)->Call("RemoveProcess", process, &empty).code(),
            absl::StatusCode::kFailedPrecondition);
  process.set_exec_id("");
  EXPECT_EQ((*session)->Call("RemoveProcess", process, &empty).code(),
            absl::StatusCode::kInvalidArgument);

  v1::RemoveContainerRequest remove;
  remove.set_container_id("host");
  remove.set_force(true);
  ASSERT_TRUE((*session)->Call("RemoveContainer", remove, &empty).ok());
}

TEST_F(AgentApiTest, DestroySandboxStopsTheAgent) {
  v1::Empty empty;
  ASSERT_TRUE(client_->Call(kService, "DestroySandbox", v1::DestroySandboxRequest(), &empty).ok());
  testing::ProcessResult r = agent_->Wait(absl::Seconds(10));
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.err, HasSubstr("shutting down"));
  agent_.reset();
}

// A hybrid vsock CONNECT that the VMM answers with ERR: the dial fails with the VMM's reason,
// however long (up to 256 bytes), and an OK answer gives the connection.
TEST(DialHybridVsockTest, ErrAnswersCarryTheReason) {
  char dir[] = "/tmp/kapsel-dial-XXXXXX";
  ASSERT_NE(mkdtemp(dir), nullptr);
  const std::string path = absl::StrCat(dir, "/vm.sock");
  absl::StatusOr<UniqueFd> listener = ttrpc::ListenUnix(absl::StrCat("unix://", path));
  ASSERT_TRUE(listener.ok()) << listener.status();
  const std::string reason = "a malformed guest packet: " + std::string(150, 'x');
  std::thread vmm([&] {
    for (const std::string& answer : {"ERR " + reason + "\n", std::string("OK 1073741824\n")}) {
      UniqueFd client(accept4(listener->get(), nullptr, nullptr, SOCK_CLOEXEC));
      char line[32] = {};
      (void)read(client.get(), line, sizeof(line) - 1);  // "CONNECT 1025\n"
      (void)write(client.get(), answer.data(), answer.size());
    }
  });
  absl::StatusOr<UniqueFd> refused = DialHybridVsock(path, 1025, absl::Seconds(5));
  EXPECT_TRUE(absl::IsUnavailable(refused.status())) << refused.status();
  EXPECT_THAT(std::string(refused.status().message()), ::testing::HasSubstr(reason));
  absl::StatusOr<UniqueFd> accepted = DialHybridVsock(path, 1025, absl::Seconds(5));
  EXPECT_TRUE(accepted.ok()) << accepted.status();
  vmm.join();
  unlink(path.c_str());
  rmdir(dir);
}

}  // namespace
}  // namespace kapsel::agent
