// How a container's namespace paths are mapped into its sandbox VM (a pod's containers join the
// pause container's namespaces; host namespaces are refused or replaced).
#include "shim/guest_spec.h"

#include <string>
#include <utility>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace kapsel::shim {
namespace {

using ::testing::HasSubstr;

oci::v1::Spec SpecWith(const std::vector<std::pair<std::string, std::string>>& namespaces) {
  oci::v1::Spec spec;
  for (const auto& [type, path] : namespaces) {
    oci::v1::Namespace* ns = spec.mutable_linux()->add_namespaces();
    ns->set_type(type);
    ns->set_path(path);
  }
  return spec;
}

std::string PathOf(const oci::v1::Spec& spec, const std::string& type) {
  for (const oci::v1::Namespace& ns : spec.linux().namespaces()) {
    if (ns.type() == type) return ns.path();
  }
  return "<absent>";
}

TEST(MapNamespacesIntoVmTest, NewNamespacesStayNew) {
  oci::v1::Spec spec = SpecWith({{"pid", ""}, {"ipc", ""}, {"mount", ""}, {"network", ""}});
  ASSERT_TRUE(MapNamespacesIntoVm(SandboxNamespaces(), &spec).ok());
  for (const char* type : {"pid", "ipc", "mount", "network"}) EXPECT_EQ(PathOf(spec, type), "");
}

TEST(MapNamespacesIntoVmTest, PodContainerJoinsThePauseContainer) {
  // What containerd's CRI writes for a pod's container: the pause container's pid (42 here, as
  // the shim reported it) and the pod's CNI network namespace on the host.
  oci::v1::Spec spec = SpecWith({{"pid", "/proc/42/ns/pid"},
                                 {"ipc", "/proc/42/ns/ipc"},
                                 {"uts", "/proc/42/ns/uts"},
                                 {"network", "/var/run/netns/cni-1234"},
                                 {"mount", ""}});
  SandboxNamespaces sandbox;
  sandbox.container_inits = {42, 57};
  sandbox.sandbox_init = 42;
  ASSERT_TRUE(MapNamespacesIntoVm(sandbox, &spec).ok());
  EXPECT_EQ(PathOf(spec, "pid"), "/proc/42/ns/pid");
  EXPECT_EQ(PathOf(spec, "ipc"), "/proc/42/ns/ipc");
  EXPECT_EQ(PathOf(spec, "uts"), "/proc/42/ns/uts");
  EXPECT_EQ(PathOf(spec, "network"), "/proc/42/ns/net");
  EXPECT_EQ(PathOf(spec, "mount"), "");
}

TEST(MapNamespacesIntoVmTest, TheSandboxContainerGetsANetworkOfTheVm) {
  oci::v1::Spec spec = SpecWith({{"network", "/var/run/netns/cni-1234"}, {"cgroup", "/x/cg"}});
  ASSERT_TRUE(MapNamespacesIntoVm(SandboxNamespaces(), &spec).ok());
  EXPECT_EQ(PathOf(spec, "network"), "");
  EXPECT_EQ(PathOf(spec, "cgroup"), "");
}

TEST(MapNamespacesIntoVmTest, WithThePodNetworkInTheVmEveryContainerSharesTheVmsNetwork) {
  // The pod's interfaces were moved into the VM's own namespace: the sandbox container and the
  // pod's later containers run there (no network namespace entry), a container's namespace that
  // the pod's containers share stays as it is.
  SandboxNamespaces sandbox;
  sandbox.network_in_vm = true;
  oci::v1::Spec pause = SpecWith({{"pid", ""}, {"network", "/var/run/netns/cni-1234"}});
  ASSERT_TRUE(MapNamespacesIntoVm(sandbox, &pause).ok());
  EXPECT_EQ(PathOf(pause, "network"), "<absent>");
  EXPECT_EQ(PathOf(pause, "pid"), "");
  sandbox.container_inits = {42};
  sandbox.sandbox_init = 42;
  oci::v1::Spec app =
      SpecWith({{"network", "/var/run/netns/cni-1234"}, {"pid", "/proc/42/ns/pid"}});
  ASSERT_TRUE(MapNamespacesIntoVm(sandbox, &app).ok());
  EXPECT_EQ(PathOf(app, "network"), "<absent>");
  EXPECT_EQ(PathOf(app, "pid"), "/proc/42/ns/pid");
  ASSERT_EQ(app.linux().namespaces_size(), 1);
}

TEST(MapNamespacesIntoVmTest, HostNamespacesAreRefused) {
  SandboxNamespaces sandbox;
  sandbox.container_inits = {42};
  sandbox.sandbox_init = 42;
  for (const auto& [type, path] : std::vector<std::pair<std::string, std::string>>{
           {"pid", "/proc/1/ns/pid"},     // a host process, not a container of this sandbox
           {"ipc", "/proc/43/ns/ipc"},    // not running here
           {"uts", "/run/some-uts-ns"},   // a bind-mounted host namespace
           {"ipc", "/proc/42/ns/../ns"},  // not a plain /proc/<pid>/ns/<name> path
           {"mount", "/proc/x/ns/mnt"}}) {
    oci::v1::Spec spec = SpecWith({{type, path}});
    absl::Status status = MapNamespacesIntoVm(sandbox, &spec);
    EXPECT_TRUE(absl::IsUnimplemented(status)) << type << " " << path << ": " << status;
    EXPECT_THAT(status.message(), HasSubstr(path));
  }
}

}  // namespace
}  // namespace kapsel::shim
