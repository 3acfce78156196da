// virtio-fs end to end: Debian's virtiofsd shares a busybox root filesystem, kapsel-vmm boots the
// guest kernel with the agent initramfs and `--fs rootfs,SOCKET`, and the agent runs containers
// whose root is that virtio-fs tag: files cross both ways, a 17 MiB file reads back exactly, and
// a virtiofsd that dies stops the VM with a clear message. Needs root (virtiofsd) and a KVM that
// boots Linux: ctest runs it through tests/testhost/e2e.
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/support/agent_session.h"
#include "tests/support/e2e_guest.h"
#include "tests/support/subprocess.h"

namespace kapsel {
namespace {

using ::kapsel::testing::AgentSession;
using ::kapsel::testing::ContainerRun;
using ::kapsel::testing::Subprocess;
using ::testing::HasSubstr;

constexpr char kVirtiofsd[] = "/usr/lib/qemu/virtiofsd";
constexpr char kTag[] = "rootfs";
constexpr uint64_t kBigSize = (17 << 20) + 12345;  // over 16 MiB, not a multiple of a page

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// sha256sum's hex digest of `path` (host side).
std::string Sha256(const std::string& path) {
  auto r = testing::RunProcess({"sha256sum", path}, absl::Seconds(120));
  if (!r.ok() || r->exit_code != 0) return "sha256sum failed";
  return r->out.substr(0, 64);
}

// Writes `size` bytes of an xorshift stream: no page looks like another.
void WritePattern(const std::string& path, uint64_t size) {
  std::ofstream out(path, std::ios::binary);
  uint64_t x = 0x9e3779b97f4a7c15;
  std::vector<char> block(1 << 20);
  for (uint64_t done = 0; done < size;) {
    for (size_t i = 0; i < block.size(); i += 8) {
      x ^= x << 13;
      x ^= x >> 7;
      x ^= x << 17;
      std::memcpy(block.data() + i, &x, 8);
    }
    const uint64_t n = std::min<uint64_t>(block.size(), size - done);
    out.write(block.data(), static_cast<std::streamsize>(n));
    done += n;
  }
}

// One virtiofsd + kapsel-vmm + agent session; everything is torn down in reverse order, and the
// temporary directory (share, sockets) removed, on every path.
class Sandbox {
 public:
  ~Sandbox() { Stop(); }

  // Copies the busybox rootfs into a fresh share, starts virtiofsd on it, then the VM.
  void Start() {
    char dir[] = "/tmp/kapsel-virtiofs-XXXXXX";
    ASSERT_NE(mkdtemp(dir), nullptr);
    dir_ = dir;
    share_ = dir_ + "/share";
    ASSERT_EQ(mkdir(share_.c_str(), 0755), 0);
    auto copy = testing::RunProcess({"cp", "-a", KAPSEL_ROOTFS_DIR, share_ + "/rootfs"},
                                    absl::Seconds(120));
    ASSERT_TRUE(copy.ok() && copy->exit_code == 0) << (copy.ok() ? copy->err : "");
    const std::string socket = dir_ + "/virtiofsd.sock";
    auto virtiofsd = Subprocess::Start(
        {kVirtiofsd, "--socket-path=" + socket, "-o", "source=" + share_, "-o", "cache=none"});
    ASSERT_TRUE(virtiofsd.ok()) << virtiofsd.status();
    virtiofsd_ = *std::move(virtiofsd);
    // virtiofsd says this once it listens (the socket file exists a moment before).
    ASSERT_TRUE(
        virtiofsd_->WaitForOutput("Waiting for vhost-user socket connection", absl::Seconds(60)))
        << virtiofsd_->Wait(absl::Seconds(1)).err;

    auto vmm = Subprocess::Start(
        {KAPSEL_BIN_DIR "/kapsel-vmm", "--kernel", KAPSEL_GUEST_DIR "/vmlinux", "--initrd",
         KAPSEL_AGENT_INITRAMFS, "--mem", "512", "--vcpus", testing::E2eGuestVcpus(), "--fs",
         absl::StrCat(kTag, ",", socket), "--vsock", absl::StrCat("3,", dir_, "/vsock.sock"),
         "--cmdline", "console=ttyS0 reboot=k panic=-1 quiet"});
    ASSERT_TRUE(vmm.ok()) << vmm.status();
    vmm_ = *std::move(vmm);
    auto session = AgentSession::Connect(absl::StrCat("hvsock:", dir_, "/vsock.sock:1024"),
                                         absl::Seconds(120));
    ASSERT_TRUE(session.ok()) << session.status() << "\n" << Diagnostics();
    session_ = *std::move(session);
  }

  // Powers the VM off through the agent and checks it exits 0; then stops virtiofsd.
  void Stop() {
    if (session_) {
      v1Empty empty;
      (void)session_->Call("DestroySandbox", agent::v1::DestroySandboxRequest(), &empty);
      session_.reset();
    }
    if (vmm_) {
      testing::ProcessResult r = vmm_->Wait(absl::Seconds(60));
      vmm_result_ = r;
      vmm_.reset();
    }
    if (virtiofsd_) {
      virtiofsd_->Signal(SIGTERM);
      virtiofsd_result_ = virtiofsd_->Wait(absl::Seconds(10));
      virtiofsd_.reset();
    }
    if (!dir_.empty()) {
      std::error_code ignored;
      std::filesystem::remove_all(dir_, ignored);
      dir_.clear();
    }
  }

  std::string Diagnostics() {
    std::string text;
    if (vmm_) {
      testing::ProcessResult r = vmm_->Wait(absl::Seconds(1));
      text += "--- kapsel-vmm (console and messages):\n" + r.out + r.err;
    }
    if (virtiofsd_) text += "--- virtiofsd:\n" + virtiofsd_->Wait(absl::Seconds(1)).err;
    return text;
  }

  ContainerRun Run(const std::string& id, const std::vector<std::string>& args) {
    absl::StatusOr<oci::v1::Spec> spec = testing::DefaultSpec(args);
    EXPECT_TRUE(spec.ok()) << spec.status();
    spec->mutable_root()->set_readonly(false);
    agent::v1::Rootfs rootfs;
    rootfs.mutable_virtio_fs()->set_tag(kTag);
    rootfs.mutable_virtio_fs()->set_subdir("rootfs");
    absl::StatusOr<ContainerRun> run = session_->RunContainer(id, *spec, rootfs);
    EXPECT_TRUE(run.ok()) << run.status();
    return run.ok() ? *run : ContainerRun();
  }

  using v1Empty = agent::v1::Empty;
  std::string host_path(const std::string& in_rootfs) const {
    return share_ + "/rootfs" + in_rootfs;
  }
  Subprocess* vmm() { return vmm_.get(); }
  Subprocess* virtiofsd() { return virtiofsd_.get(); }
  std::unique_ptr<Subprocess> TakeVmm() { return std::move(vmm_); }
  void DropSession() { session_.reset(); }
  const testing::ProcessResult& vmm_result() const { return vmm_result_; }

 private:
  std::string dir_, share_;
  std::unique_ptr<Subprocess> virtiofsd_;
  std::unique_ptr<Subprocess> vmm_;
  std::unique_ptr<AgentSession> session_;
  testing::ProcessResult vmm_result_, virtiofsd_result_;
};

class VirtiofsTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (geteuid() != 0) return;  // each test skips
    sandbox_ = new Sandbox();
    sandbox_->Start();
  }
  static void TearDownTestSuite() {
    if (sandbox_ == nullptr) return;
    sandbox_->Stop();
    EXPECT_EQ(sandbox_->vmm_result().exit_code, 0) << "the VM did not power off cleanly";
    if (sandbox_->vmm_result().exit_code != 0 ||
        ::testing::UnitTest::GetInstance()->failed_test_count() > 0) {
      std::cerr << "--- the microVM's console and kapsel-vmm's messages:\n"
                << sandbox_->vmm_result().out << sandbox_->vmm_result().err;
    }
    delete sandbox_;
    sandbox_ = nullptr;
  }
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "virtiofsd needs root";
    ASSERT_NE(sandbox_->vmm(), nullptr) << "the sandbox did not start";
  }

  static Sandbox* sandbox_;
};

Sandbox* VirtiofsTest::sandbox_ = nullptr;

TEST_F(VirtiofsTest, ContainerSeesHostFilesAndHostSeesContainerWrites) {
  std::ofstream(sandbox_->host_path("/from-host.txt")) << "written on the host\n";
  ContainerRun run = sandbox_->Run("rw", {"sh", "-c",
                                          "cat /from-host.txt; echo written in the guest > "
                                          "/from-guest.txt; mkdir -p /made/here; ls /etc/motd"});
  EXPECT_EQ(run.exit_status, 0) << run.err;
  EXPECT_EQ(run.out, "written on the host\n/etc/motd\n");
  EXPECT_EQ(ReadFile(sandbox_->host_path("/from-guest.txt")), "written in the guest\n");
  struct stat st;
  EXPECT_EQ(stat(sandbox_->host_path("/made/here").c_str(), &st), 0);
  EXPECT_TRUE(S_ISDIR(st.st_mode));
}

TEST_F(VirtiofsTest, SixteenMebibytesAndMoreReadAndWriteExactly) {
  const std::string big = sandbox_->host_path("/big.bin");
  WritePattern(big, kBigSize);
  const std::string want = Sha256(big);
  ASSERT_EQ(want.size(), 64u);

  const absl::Time start = absl::Now();
  ContainerRun read = sandbox_->Run("read", {"sh", "-c", "sha256sum /big.bin; wc -c < /big.bin"});
  const absl::Duration took = absl::Now() - start;
  EXPECT_EQ(read.exit_status, 0) << read.err;
  EXPECT_EQ(read.out, absl::StrCat(want, "  /big.bin\n", kBigSize, "\n"));

  // Throughput as the guest sees it (cache=none: every read goes to virtiofsd).
  ContainerRun dd =
      sandbox_->Run("dd", {"sh", "-c", "dd if=/big.bin of=/dev/null bs=1M 2>&1 | tail -1"});
  std::cerr << "figure: container start + sha256sum + wc of " << kBigSize << " bytes: " << took
            << "; dd read: " << dd.out;

  ContainerRun write = sandbox_->Run(
      "write", {"sh", "-c",
                "dd if=/dev/urandom of=/out.bin bs=1M count=17 2>/dev/null && sync && "
                "sha256sum /out.bin"});
  EXPECT_EQ(write.exit_status, 0) << write.err;
  const std::string out_bin = sandbox_->host_path("/out.bin");
  struct stat st;
  ASSERT_EQ(stat(out_bin.c_str(), &st), 0);
  EXPECT_EQ(st.st_size, 17 << 20);
  EXPECT_EQ(write.out, absl::StrCat(Sha256(out_bin), "  /out.bin\n"));
}

// A separate VM: virtiofsd killed under a running guest stops kapsel-vmm with exit 1 and a
// message naming the device, and leaves nothing behind.
TEST(VirtiofsBackendDeathTest, KillingVirtiofsdStopsTheVm) {
  if (geteuid() != 0) GTEST_SKIP() << "virtiofsd needs root";
  Sandbox sandbox;
  sandbox.Start();
  ASSERT_NE(sandbox.vmm(), nullptr);
  // The guest's virtio-fs driver is up (it probed at boot); make it use the device once.
  ContainerRun run = sandbox.Run("before", {"cat", "/etc/motd"});
  EXPECT_EQ(run.out, "kapsel test rootfs\n");
  sandbox.DropSession();
  sandbox.virtiofsd()->Signal(SIGKILL);
  std::unique_ptr<Subprocess> vmm = sandbox.TakeVmm();
  testing::ProcessResult r = vmm->Wait(absl::Seconds(60));
  EXPECT_FALSE(r.timed_out);
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_THAT(r.err, HasSubstr("virtio-fs(rootfs)"));
  EXPECT_THAT(r.err, HasSubstr("closed the connection"));
}

}  // namespace
}  // namespace kapsel
