// containerd-shim-kapsel-v2 driven the way containerd drives it, with the test playing containerd:
// `start` in the bundle, the Task service over ttrpc, the events service at $TTRPC_ADDRESS. This
// reaches what a stock containerd 1.6 here cannot produce, such as the rootfs mounts of block
// snapshotters (devmapper: a block device; blockfile: an image file with `loop`), which kapsel
// hands to the VM as its virtio-blk disk. Runs inside tests/testhost/e2e.
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "absl/synchronization/mutex.h"
#include "common/status.h"
#include "common/ttrpc/address.h"
#include "common/ttrpc/client.h"
#include "common/ttrpc/server.h"
#include "gmock/gmock.h"
#include "google/protobuf/empty.pb.h"
#include "google/protobuf/util/json_util.h"
#include "gtest/gtest.h"
#include "shim/api/events_service.pb.h"
#include "shim/api/task.pb.h"
#include "tests/support/agent_session.h"
#include "tests/support/containerd_e2e.h"

namespace kapsel::shim {
namespace {

namespace task = containerd::task::v2;
using testing::Describe;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using testing::ProcessResult;
using testing::Sh;

constexpr char kTaskService[] = "containerd.task.v2.Task";
constexpr char kShim[] = KAPSEL_BIN_DIR "/containerd-shim-kapsel-v2";
constexpr char kNamespace[] = "direct";

std::string ReadAll(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// containerd's side: a scratch directory with the events service and bundles.
class ShimDirectTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // On a local filesystem: sockets cannot be bound on the test host's 9p output directories.
    char dir[] = "/tmp/kapsel-direct-XXXXXX";
    ASSERT_NE(mkdtemp(dir), nullptr);
    dir_ = dir;
    ASSERT_TRUE((events_.RegisterMethod<containerd::services::events::ttrpc::v1::ForwardRequest,
                                        google::protobuf::Empty>(
                     "containerd.services.events.ttrpc.v1.Events", "Forward",
                     [this](const containerd::services::events::ttrpc::v1::ForwardRequest& r,
                            const ttrpc::CallContext&) -> absl::StatusOr<google::protobuf::Empty> {
                       absl::MutexLock lock(&mu_);
                       topics_.push_back(r.envelope().topic());
                       return google::protobuf::Empty();
                     }))
                    .ok());
    absl::StatusOr<UniqueFd> listener = ttrpc::ListenUnix(EventsAddress());
    ASSERT_TRUE(listener.ok()) << listener.status();
    ASSERT_TRUE(events_.Start(*std::move(listener)).ok());
  }

  void TearDown() override {
    events_.Shutdown();
    testing::ExpectNoKapselLeft();
    std::filesystem::remove_all(dir_);
  }

  std::string EventsAddress() const { return absl::StrCat("unix://", dir_, "/events.sock"); }

  // A bundle running `args` with a busybox spec; returns its path.
  std::string MakeBundle(const std::string& id, const std::vector<std::string>& args) {
    const std::string bundle = absl::StrCat(dir_, "/", id);
    std::filesystem::create_directories(bundle + "/rootfs");
    absl::StatusOr<oci::v1::Spec> spec = testing::DefaultSpec(args);
    EXPECT_TRUE(spec.ok()) << spec.status();
    if (!spec.ok()) return bundle;
    spec->mutable_root()->set_path("rootfs");
    spec->mutable_root()->set_readonly(false);  // (runc spec's default is read-only)
    std::string json;
    EXPECT_TRUE(google::protobuf::util::MessageToJsonString(*spec, &json).ok());
    std::ofstream(bundle + "/config.json") << json;
    std::ofstream(bundle + "/log");  // a file, not containerd's fifo: read in failure messages
    return bundle;
  }

  // `start` as containerd runs it; returns a client of the serving shim (nullptr on failure).
  std::unique_ptr<ttrpc::Client> StartShim(const std::string& id, const std::string& bundle) {
    ProcessResult r = Sh(absl::StrCat("cd ", bundle, " && TTRPC_ADDRESS=", dir_, "/events.sock ",
                                      kShim, " -namespace ", kNamespace, " -address ", dir_,
                                      "/containerd.sock -publish-binary ", "/bin/false -id ", id,
                                      " start < /dev/null"));
    EXPECT_EQ(r.exit_code, 0) << Describe(r);
    absl::StatusOr<UniqueFd> fd = ttrpc::DialUnix(std::string(absl::StripAsciiWhitespace(r.out)));
    EXPECT_TRUE(fd.ok()) << fd.status() << ": " << Describe(r);
    if (!fd.ok()) return nullptr;
    return std::make_unique<ttrpc::Client>(*std::move(fd));
  }

  template <typename Request, typename Response>
  absl::Status Call(ttrpc::Client& shim, const char* method, const Request& request,
                    Response* response, absl::Duration timeout = absl::Seconds(240)) {
    return shim.Call(kTaskService, method, request, response,
                     ttrpc::CallOptions::WithTimeout(timeout));
  }

  // containerd's Shutdown: the shim stops the VM before it answers, then exits (TearDown's
  // leftovers check gives it a moment).
  void ShutDown(ttrpc::Client& shim) {
    task::ShutdownRequest request;
    google::protobuf::Empty empty;
    EXPECT_TRUE(Call(shim, "Shutdown", request, &empty).ok());
  }

  std::vector<std::string> Topics() {
    // Events are published on the shim's own thread: wait for the last one.
    for (int i = 0; i < 100; ++i) {
      {
        absl::MutexLock lock(&mu_);
        if (!topics_.empty() && topics_.back() == "/tasks/delete") break;
      }
      absl::SleepFor(absl::Milliseconds(50));
    }
    absl::MutexLock lock(&mu_);
    return topics_;
  }

  std::string dir_;
  ttrpc::Server events_;
  absl::Mutex mu_;
  std::vector<std::string> topics_ ABSL_GUARDED_BY(mu_);
};

TEST_F(ShimDirectTest, ImageFileRootfsBecomesTheVmDisk) {
  // What a blockfile snapshotter gives: an ext4 image file, mounted with `loop`.
  const std::string image = dir_ + "/rootfs.ext4";
  ProcessResult made =
      Sh(absl::StrCat(KAPSEL_SOURCE_DIR, "/tests/support/make-test-rootfs --ext4 ", image));
  ASSERT_EQ(made.exit_code, 0) << Describe(made);
  const std::string bundle = MakeBundle(
      "blk", {"/bin/sh", "-c", "grep ' / ' /proc/mounts; echo written > /marker; cat /marker"});
  std::unique_ptr<ttrpc::Client> shim = StartShim("blk", bundle);
  ASSERT_NE(shim, nullptr);

  task::CreateTaskRequest create;
  create.set_id("blk");
  create.set_bundle(bundle);
  create.set_stdout(dir_ + "/blk.out");
  create.set_stderr(dir_ + "/blk.err");
  containerd::types::Mount* mount = create.add_rootfs();
  mount->set_type("ext4");
  mount->set_source(image);
  mount->add_options("loop");
  mount->add_options("rw");
  task::CreateTaskResponse created;
  absl::Status status = Call(*shim, "Create", create, &created);
  ASSERT_TRUE(status.ok()) << status << "\nshim log:\n" << ReadAll(bundle + "/log");
  EXPECT_GT(created.pid(), 0u);

  // A second container in the same sandbox (a pod's) cannot get an image as its disk: the VM
  // runs already.
  task::CreateTaskRequest second = create;
  second.set_id("blk2");
  second.set_bundle(MakeBundle("blk2", {"/bin/true"}));
  second.clear_stdout();
  second.clear_stderr();
  task::CreateTaskResponse not_created;
  status = Call(*shim, "Create", second, &not_created);
  EXPECT_TRUE(absl::IsUnimplemented(status)) << status;
  EXPECT_THAT(status.message(), HasSubstr("only a sandbox's first container"));

  task::StartRequest start;
  start.set_id("blk");
  task::StartResponse started;
  ASSERT_TRUE(Call(*shim, "Start", start, &started).ok());
  task::WaitRequest wait;
  wait.set_id("blk");
  task::WaitResponse waited;
  ASSERT_TRUE(Call(*shim, "Wait", wait, &waited).ok());
  EXPECT_EQ(waited.exit_status(), 0u) << ReadAll(dir_ + "/blk.err");
  // The container's root is the VM's first disk, writable.
  EXPECT_THAT(ReadAll(dir_ + "/blk.out"), HasSubstr("/dev/vda / ext4 rw"));
  EXPECT_THAT(ReadAll(dir_ + "/blk.out"), HasSubstr("written\n"));

  task::DeleteRequest del;
  del.set_id("blk");
  task::DeleteResponse deleted;
  EXPECT_TRUE(Call(*shim, "Delete", del, &deleted).ok());
  ShutDown(*shim);
  EXPECT_THAT(Topics(),
              ElementsAre("/tasks/create", "/tasks/start", "/tasks/exit", "/tasks/delete"));
  // The write reached the image: the guest's filesystem is the host's file.
  ProcessResult marker = Sh(absl::StrCat("debugfs -R 'cat /marker' ", image, " 2>/dev/null"));
  EXPECT_EQ(marker.out, "written\n") << Describe(marker);
}

TEST_F(ShimDirectTest, DeadVmIsNamedInTheShimLog) {
  // kapsel-vmm killed under a running container: the container exits 137 (the VM is gone), and
  // the shim's log says that the VM stopped, with kapsel-vmm's and the guest console's last lines,
  // not only that the agent's connection closed.
  const std::string victim = MakeBundle("victim", {"/bin/sleep", "1000"});
  ProcessResult made =
      Sh(absl::StrCat(KAPSEL_SOURCE_DIR, "/tests/support/make-test-rootfs ", victim, "/rootfs"));
  ASSERT_EQ(made.exit_code, 0) << Describe(made);
  std::unique_ptr<ttrpc::Client> shim = StartShim("victim", victim);
  ASSERT_NE(shim, nullptr);
  task::CreateTaskRequest create;
  create.set_id("victim");
  create.set_bundle(victim);
  task::CreateTaskResponse created;
  absl::Status status = Call(*shim, "Create", create, &created);
  ASSERT_TRUE(status.ok()) << status << "\nshim log:\n" << ReadAll(victim + "/log");
  task::StartRequest start;
  start.set_id("victim");
  task::StartResponse started;
  ASSERT_TRUE(Call(*shim, "Start", start, &started).ok());

  const std::string pid = ReadAll(absl::StrCat("/run/kapsel/", kNamespace, "/victim/vmm.pid"));
  ASSERT_FALSE(pid.empty());
  ASSERT_EQ(kill(std::stoi(pid), SIGKILL), 0);
  task::WaitRequest wait;
  wait.set_id("victim");
  task::WaitResponse waited;
  ASSERT_TRUE(Call(*shim, "Wait", wait, &waited).ok());
  EXPECT_EQ(waited.exit_status(), 137u);
  EXPECT_THAT(ReadAll(victim + "/log"), HasSubstr("the VM stopped (kapsel-vmm: "))
      << ReadAll(victim + "/log");

  task::DeleteRequest del;
  del.set_id("victim");
  task::DeleteResponse deleted;
  EXPECT_TRUE(Call(*shim, "Delete", del, &deleted).ok());
  ShutDown(*shim);
}

TEST_F(ShimDirectTest, MissingBlockRootfsIsAClearError) {
  const std::string bundle = MakeBundle("missing", {"/bin/true"});
  std::unique_ptr<ttrpc::Client> shim = StartShim("missing", bundle);
  ASSERT_NE(shim, nullptr);
  task::CreateTaskRequest create;
  create.set_id("missing");
  create.set_bundle(bundle);
  containerd::types::Mount* mount = create.add_rootfs();
  mount->set_type("ext4");
  mount->set_source(dir_ + "/no-such-image");
  mount->add_options("loop");
  task::CreateTaskResponse created;
  absl::Status status = Call(*shim, "Create", create, &created);
  EXPECT_FALSE(status.ok());
  EXPECT_THAT(status.message(), HasSubstr(dir_ + "/no-such-image"));
  ShutDown(*shim);
}

}  // namespace
}  // namespace kapsel::shim
