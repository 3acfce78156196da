// kapsel-agent as /init of a real microVM: kapsel-vmm boots the guest kernel with the agent
// initramfs, a vsock device and a busybox root filesystem on a virtio disk; the test drives the
// agent through hybrid vsock exactly as the shim will, including cgroup v2 limits inside the guest.
// Needs a KVM that boots Linux: ctest runs it through tests/testhost/e2e.
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <iostream>
#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/support/agent_session.h"
#include "tests/support/e2e_guest.h"
#include "tests/support/subprocess.h"

namespace kapsel::agent {
namespace {

using testing::AgentSession;
using testing::ContainerRun;
using ::testing::HasSubstr;

class AgentVmTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    char dir[] = "/tmp/kapsel-agent-vm-XXXXXX";
    ASSERT_NE(mkdtemp(dir), nullptr);
    dir_ = new std::string(dir);
    // Read-only: the image is shared by every container (each mounts it read-only).
    const std::string disk = absl::StrCat(KAPSEL_ROOTFS_IMAGE, ",ro");
    auto vmm = testing::Subprocess::Start(
        {KAPSEL_BIN_DIR "/kapsel-vmm", "--kernel", KAPSEL_GUEST_DIR "/vmlinux", "--initrd",
         KAPSEL_AGENT_INITRAMFS, "--mem", "512", "--vcpus", testing::E2eGuestVcpus(), "--disk",
         disk, "--vsock", absl::StrCat("3,", *dir_, "/vsock.sock"), "--cmdline",
         "console=ttyS0 reboot=k panic=-1 quiet"});
    ASSERT_TRUE(vmm.ok()) << vmm.status();
    vmm_ = vmm->release();
    auto session = AgentSession::Connect(absl::StrCat("hvsock:", *dir_, "/vsock.sock:1024"),
                                         absl::Seconds(120));
    ASSERT_TRUE(session.ok()) << session.status();
    session_ = session->release();
  }

  static void TearDownTestSuite() {
    if (session_ != nullptr) {
      Empty empty;
      EXPECT_TRUE(session_->Call("DestroySandbox", v1::DestroySandboxRequest(), &empty).ok());
      delete session_;
      session_ = nullptr;
    }
    if (vmm_ != nullptr) {
      testing::ProcessResult r = vmm_->Wait(absl::Seconds(60));
      EXPECT_EQ(r.exit_code, 0) << "the VM did not power off cleanly";
      if (r.exit_code != 0 || ::testing::UnitTest::GetInstance()->failed_test_count() > 0) {
        std::cerr << "--- the microVM's console and kapsel-vmm's messages:\n" << r.out << r.err;
      }
      delete vmm_;
      vmm_ = nullptr;
    }
    if (dir_ != nullptr) {
      rmdir(dir_->c_str());
      delete dir_;
      dir_ = nullptr;
    }
  }

  using Empty = v1::Empty;

  static v1::Rootfs DiskRootfs() {
    v1::Rootfs rootfs;
    rootfs.mutable_block()->set_device("/dev/vda");
    rootfs.mutable_block()->set_fs_type("ext4");
    rootfs.mutable_block()->add_options("ro");
    return rootfs;
  }

  static oci::v1::Spec Spec(const std::vector<std::string>& args) {
    absl::StatusOr<oci::v1::Spec> spec = testing::DefaultSpec(args);
    EXPECT_TRUE(spec.ok()) << spec.status();
    return spec.ok() ? *spec : oci::v1::Spec();
  }

  static ContainerRun Run(const std::string& id, const oci::v1::Spec& spec,
                          std::optional<std::string> input = std::nullopt) {
    absl::StatusOr<ContainerRun> run = session_->RunContainer(id, spec, DiskRootfs(), input);
    EXPECT_TRUE(run.ok()) << run.status();
    return run.ok() ? *run : ContainerRun();
  }

  static std::string* dir_;
  static testing::Subprocess* vmm_;
  static AgentSession* session_;
};

std::string* AgentVmTest::dir_ = nullptr;
testing::Subprocess* AgentVmTest::vmm_ = nullptr;
AgentSession* AgentVmTest::session_ = nullptr;

TEST_F(AgentVmTest, EchoAndExitCodes) {
  ContainerRun hello = Run("hello", Spec({"echo", "hello from a microVM"}));
  EXPECT_EQ(hello.out, "hello from a microVM\n");
  EXPECT_EQ(hello.exit_status, 0) << hello.err;
  ContainerRun three = Run("three", Spec({"sh", "-c", "echo to stderr >&2; exit 3"}));
  EXPECT_EQ(three.exit_status, 3);
  EXPECT_EQ(three.err, "to stderr\n");
}

TEST_F(AgentVmTest, StdinPidNamespaceAndHostname) {
  oci::v1::Spec spec = Spec({"sh", "-c", "cat; echo pid=$$; hostname"});
  spec.set_hostname("kapsel-guest-ctr");
  ContainerRun run = Run("stdin", spec, "piped through vsock\n");
  EXPECT_EQ(run.out, "piped through vsock\npid=1\nkapsel-guest-ctr\n") << run.err;
  EXPECT_EQ(run.exit_status, 0);
}

TEST_F(AgentVmTest, MemoryLimitOomKillIsReported) {
  oci::v1::Spec spec = Spec({"tail", "/dev/zero"});  // holds an endless line in memory
  spec.mutable_linux()->mutable_resources()->mutable_memory()->set_limit(32 << 20);
  v1::CreateContainerRequest create;
  create.set_container_id("oom");
  *create.mutable_spec() = spec;
  *create.mutable_rootfs() = DiskRootfs();
  v1::CreateContainerResponse created;
  ASSERT_TRUE(session_->Call("CreateContainer", create, &created).ok());
  v1::ContainerRequest id;
  id.set_container_id("oom");
  Empty empty;
  auto err = session_->Stdio("oom", "", v1::StdioHello::STDERR);
  ASSERT_TRUE(err.ok()) << err.status();
  ASSERT_TRUE(session_->Call("StartContainer", id, &empty).ok());
  const std::string errors = testing::ReadToEof(err->get(), absl::Seconds(120));
  v1::ProcessRequest wait;
  wait.set_container_id("oom");
  v1::WaitProcessResponse waited;
  ASSERT_TRUE(session_->Call("WaitProcess", wait, &waited, absl::Seconds(120)).ok());
  EXPECT_EQ(waited.exit_status(), 128 + SIGKILL) << errors;
  v1::StatsContainerResponse stats;
  ASSERT_TRUE(session_->Call("StatsContainer", id, &stats).ok());
  EXPECT_GE(stats.memory_events_oom_kill(), 1u);
  EXPECT_EQ(stats.memory_max(), 32u << 20);
  v1::OomEvent event;
  ASSERT_TRUE(session_->Call("GetOomEvent", v1::GetOomEventRequest(), &event).ok());
  EXPECT_EQ(event.container_id(), "oom");
  v1::RemoveContainerRequest remove;
  remove.set_container_id("oom");
  EXPECT_TRUE(session_->Call("RemoveContainer", remove, &empty).ok());
}

TEST_F(AgentVmTest, PidsLimitStopsForks) {
  oci::v1::Spec spec =
      Spec({"sh", "-c", "for i in 1 2 3 4 5 6 7 8 9 10; do sleep 3 & done 2>&1; wait; echo done"});
  spec.mutable_linux()->mutable_resources()->mutable_pids()->set_limit(4);
  ContainerRun run = Run("pids", spec);
  EXPECT_THAT(run.out + run.err, HasSubstr("fork"));
}

TEST_F(AgentVmTest, ExecAndSignals) {
  v1::CreateContainerRequest create;
  create.set_container_id("sleeper");
  *create.mutable_spec() = Spec({"sleep", "300"});
  *create.mutable_rootfs() = DiskRootfs();
  v1::CreateContainerResponse created;
  ASSERT_TRUE(session_->Call("CreateContainer", create, &created).ok());
  v1::ContainerRequest id;
  id.set_container_id("sleeper");
  Empty empty;
  ASSERT_TRUE(session_->Call("StartContainer", id, &empty).ok());

  v1::ExecProcessRequest exec;
  exec.set_container_id("sleeper");
  exec.set_exec_id("look");
  *exec.mutable_process() =
      Spec({"sh", "-c", "cat /proc/1/cmdline | tr '\\0' ' '; exit 7"}).process();
  v1::ExecProcessResponse exec_started;
  ASSERT_TRUE(session_->Call("ExecProcess", exec, &exec_started).ok());
  auto out = session_->Stdio("sleeper", "look", v1::StdioHello::STDOUT);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(testing::ReadToEof(out->get(), absl::Seconds(60)), "sleep 300 ");
  v1::ProcessRequest wait_exec;
  wait_exec.set_container_id("sleeper");
  wait_exec.set_exec_id("look");
  v1::WaitProcessResponse exec_waited;
  ASSERT_TRUE(session_->Call("WaitProcess", wait_exec, &exec_waited).ok());
  EXPECT_EQ(exec_waited.exit_status(), 7);

  v1::ListProcessesResponse processes;
  ASSERT_TRUE(session_->Call("ListProcesses", id, &processes).ok());
  EXPECT_EQ(processes.pids_size(), 1);

  v1::SignalProcessRequest kill_init;
  kill_init.set_container_id("sleeper");
  kill_init.set_signal(SIGTERM);
  ASSERT_TRUE(session_->Call("SignalProcess", kill_init, &empty).ok());
  v1::ProcessRequest wait;
  wait.set_container_id("sleeper");
  v1::WaitProcessResponse waited;
  // sleep as PID 1 of its namespace has no SIGTERM handler, so the kernel drops SIGTERM (it does
  // not end it: WaitProcess does not return); SIGKILL from the agent's namespace always ends it.
  EXPECT_FALSE(session_->Call("WaitProcess", wait, &waited, absl::Seconds(5)).ok());
  kill_init.set_signal(SIGKILL);
  ASSERT_TRUE(session_->Call("SignalProcess", kill_init, &empty).ok());
  ASSERT_TRUE(session_->Call("WaitProcess", wait, &waited).ok());
  EXPECT_EQ(waited.exit_status(), 128 + SIGKILL);
  v1::RemoveContainerRequest remove;
  remove.set_container_id("sleeper");
  EXPECT_TRUE(session_->Call("RemoveContainer", remove, &empty).ok());
}

TEST_F(AgentVmTest, BadSpecIsAClearErrorAndTheAgentKeepsServing) {
  oci::v1::Spec spec = Spec({"true"});
  spec.mutable_process()->set_apparmor_profile("docker-default");
  v1::CreateContainerRequest create;
  create.set_container_id("bad");
  *create.mutable_spec() = spec;
  *create.mutable_rootfs() = DiskRootfs();
  v1::CreateContainerResponse created;
  absl::Status status = session_->Call("CreateContainer", create, &created);
  EXPECT_FALSE(status.ok());
  EXPECT_THAT(std::string(status.message()), HasSubstr("apparmor"));
  ContainerRun after = Run("after-bad", Spec({"echo", "still serving"}));
  EXPECT_EQ(after.out, "still serving\n");
}

}  // namespace
}  // namespace kapsel::agent
