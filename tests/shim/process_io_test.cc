// ProcessIo between containerd-style fifos and a real kapsel-agent serving on a Unix socket
// (`--listen unix:PATH`), with a busybox container: what the shim does for every process.
#include "shim/process_io.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <string>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "tests/support/agent_session.h"
#include "tests/support/subprocess.h"

namespace kapsel::shim {
namespace {

// Reads a fifo until every writer closed it.
std::string ReadFifo(int fd, absl::Duration timeout) {
  std::string data;
  const absl::Time deadline = absl::Now() + timeout;
  char buffer[65536];
  while (absl::Now() < deadline) {
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, 100) <= 0) continue;
    const ssize_t n = read(fd, buffer, sizeof(buffer));
    if (n == 0 && (p.revents & POLLHUP)) break;
    if (n > 0) data.append(buffer, static_cast<size_t>(n));
  }
  return data;
}

class ProcessIoTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "containers need root";
    char dir[] = "/tmp/kapsel-process-io-XXXXXX";
    ASSERT_NE(mkdtemp(dir), nullptr);
    dir_ = dir;
    auto agent =
        testing::Subprocess::Start({KAPSEL_BIN_DIR "/kapsel-agent", "--listen",
                                    "unix:" + dir_ + "/agent.sock", "--cgroup-root", CgroupRoot()});
    ASSERT_TRUE(agent.ok()) << agent.status();
    agent_ = *std::move(agent);
    ASSERT_TRUE(agent_->WaitForOutput("serving on", absl::Seconds(10)));
    auto session =
        testing::AgentSession::Connect("unix:" + dir_ + "/agent.sock", absl::Seconds(10));
    ASSERT_TRUE(session.ok()) << session.status();
    session_ = *std::move(session);
    auto made = testing::RunProcess(
        {KAPSEL_SOURCE_DIR "/tests/support/make-test-rootfs", dir_ + "/rootfs"}, absl::Seconds(60));
    ASSERT_TRUE(made.ok() && made->exit_code == 0);
    for (const char* f : {"/in", "/out", "/err"}) ASSERT_EQ(mkfifo((dir_ + f).c_str(), 0600), 0);
  }

  void TearDown() override {
    session_.reset();
    if (agent_) {
      agent_->Signal(SIGTERM);
      agent_->Wait(absl::Seconds(10));
    }
    if (!dir_.empty()) testing::RunProcess({"rm", "-rf", dir_}, absl::Seconds(30)).IgnoreError();
    rmdir(CgroupRoot().c_str());
  }

  static std::string CgroupRoot() {
    struct stat st;
    const std::string base = stat("/sys/fs/cgroup/unified/cgroup.procs", &st) == 0
                                 ? "/sys/fs/cgroup/unified"
                                 : "/sys/fs/cgroup";
    const std::string root = absl::StrCat(base, "/kapsel-process-io-test-", getpid());
    mkdir(root.c_str(), 0755);
    return root;
  }

  // Creates a container running `script`, with stdin when `with_stdin`.
  void Create(const std::string& id, const std::string& script, bool with_stdin) {
    absl::StatusOr<oci::v1::Spec> spec = testing::DefaultSpec({"sh", "-c", script});
    ASSERT_TRUE(spec.ok()) << spec.status();
    agent::v1::CreateContainerRequest create;
    create.set_container_id(id);
    *create.mutable_spec() = *spec;
    create.mutable_rootfs()->mutable_guest_path()->set_path(dir_ + "/rootfs");
    create.set_stdin(with_stdin);
    agent::v1::CreateContainerResponse created;
    ASSERT_TRUE(session_->Call("CreateContainer", create, &created).ok());
  }

  void Start(const std::string& id) {
    agent::v1::Empty empty;
    agent::v1::ContainerRequest start;
    start.set_container_id(id);
    ASSERT_TRUE(session_->Call("StartContainer", start, &empty).ok());
  }

  void WaitAndRemove(const std::string& id) {
    agent::v1::Empty empty;
    agent::v1::ProcessRequest wait;
    wait.set_container_id(id);
    agent::v1::WaitProcessResponse waited;
    ASSERT_TRUE(session_->Call("WaitProcess", wait, &waited).ok());
    agent::v1::RemoveContainerRequest remove;
    remove.set_container_id(id);
    ASSERT_TRUE(session_->Call("RemoveContainer", remove, &empty).ok());
  }

  std::string dir_;
  std::unique_ptr<testing::Subprocess> agent_;
  std::unique_ptr<testing::AgentSession> session_;
};

TEST_F(ProcessIoTest, StdinToStdoutAndStderrThenEofOnTheFifos) {
  // containerd's side: it holds the output fifos' read ends before the task is created.
  UniqueFd out(open((dir_ + "/out").c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC));
  UniqueFd err(open((dir_ + "/err").c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC));
  auto io = ProcessIo::Open({dir_ + "/in", dir_ + "/out", dir_ + "/err", false});
  ASSERT_TRUE(io.ok()) << io.status();
  EXPECT_TRUE((*io)->has_stdin());
  Create("c1", "cat; echo to-stderr >&2", true);
  ASSERT_TRUE((*io)->Attach("unix:" + dir_ + "/agent.sock", "c1", "").ok());
  Start("c1");
  {
    UniqueFd in(open((dir_ + "/in").c_str(), O_WRONLY | O_CLOEXEC));
    ASSERT_TRUE(in.valid());
    ASSERT_EQ(write(in.get(), "typed line\n", 11), 11);
  }  // containerd closes its end, then sends CloseIO
  (*io)->CloseStdin();
  EXPECT_EQ(ReadFifo(out.get(), absl::Seconds(20)), "typed line\n");
  EXPECT_EQ(ReadFifo(err.get(), absl::Seconds(20)), "to-stderr\n");
  EXPECT_TRUE((*io)->WaitOutput(absl::Seconds(10)));
  WaitAndRemove("c1");
}

TEST_F(ProcessIoTest, WithoutStdinOutputStillEndsAndFilesWork) {
  auto io = ProcessIo::Open({"", "file://" + dir_ + "/out.log", dir_ + "/err.log", false});
  ASSERT_TRUE(io.ok()) << io.status();
  EXPECT_FALSE((*io)->has_stdin());
  Create("c2", "seq 1 20000; echo e >&2", false);
  ASSERT_TRUE((*io)->Attach("unix:" + dir_ + "/agent.sock", "c2", "").ok());
  Start("c2");
  EXPECT_TRUE((*io)->WaitOutput(absl::Seconds(20)));
  WaitAndRemove("c2");
  auto seq = testing::RunProcess({"sh", "-c", "seq 1 20000 | cmp - " + dir_ + "/out.log"},
                                 absl::Seconds(10));
  EXPECT_TRUE(seq.ok() && seq->exit_code == 0) << "out.log differs";
}

TEST_F(ProcessIoTest, UnsupportedUrisAreRejected) {
  auto io = ProcessIo::Open({"", "binary:///usr/bin/logger?x=1", "", false});
  EXPECT_TRUE(absl::IsUnimplemented(io.status())) << io.status();
  EXPECT_NE(io.status().message().find("binary://"), std::string::npos);
}

}  // namespace
}  // namespace kapsel::shim
