// A fixture for container tests on the host: a busybox rootfs in a temp dir, a cgroup2 directory
// to create container cgroups under, the test process as child subreaper, and checks that a test
// leaves no mount, fd or cgroup behind.
#ifndef KAPSEL_TESTS_AGENT_CONTAINER_CONTAINER_FIXTURE_H_
#define KAPSEL_TESTS_AGENT_CONTAINER_CONTAINER_FIXTURE_H_

#include <sys/types.h>

#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/oci/spec.pb.h"
#include "gtest/gtest.h"
#include "guest-agent/container/container.h"

namespace kapsel::agent::testing {

struct RunResult {
  int status = -1;  // waitpid status
  std::string out;
  std::string err;
};

class ContainerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite();
  void SetUp() override;
  void TearDown() override;

  // A spec running args in the busybox rootfs: pid, mount, uts, ipc, network and cgroup
  // namespaces, /proc, /dev (tmpfs), /dev/pts, /dev/mqueue, /sys, /tmp (tmpfs).
  oci::v1::Spec BaseSpec(const std::vector<std::string>& args) const;
  ContainerOptions Options() const;

  // Create + Start + collect stdout/stderr + wait for the init + Destroy.
  absl::StatusOr<RunResult> Run(const oci::v1::Spec& spec, const std::string& id = "run");

  std::string dir_;          // the test's temp dir
  std::string rootfs_;       // dir_/rootfs
  std::string cgroup_root_;  // a cgroup2 directory without controllers
  std::string next_id_ = "c";

 private:
  std::set<std::string> mounts_before_;
  std::set<std::string> fds_before_;
};

// Waits for pid (a child of this process) to exit; its waitpid status, or -1 after timeout.
int WaitForExit(pid_t pid, absl::Duration timeout);
// Reads fd until EOF (or EIO, the end of a pty) or the timeout.
std::string ReadAll(int fd, absl::Duration timeout);
// The host's mount points, without those that tests running alongside make (and unmount), except
// below `own_dir`.
std::set<std::string> MountPoints(const std::string& own_dir);
std::set<std::string> OpenFds();

}  // namespace kapsel::agent::testing

#endif  // KAPSEL_TESTS_AGENT_CONTAINER_CONTAINER_FIXTURE_H_
