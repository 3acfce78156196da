// Kubernetes pods through containerd's CRI plugin: a pod's containers run in one kapsel microVM and
// share the pod's namespaces, as they do with runc (io.containerd.runc.v2, the reference, same
// scenarios, same environment). Driven with kapsel-cri (tests/support/cri) under
// tests/support/private-containerd --cri (a CNI bridge in containerd's own network namespace),
// inside tests/testhost/e2e. Every case checks afterwards that nothing of kapsel is left.
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/strip.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/support/containerd_e2e.h"

namespace kapsel::shim {
namespace {

using testing::Describe;
using ::testing::HasSubstr;
using ::testing::Not;
using testing::ProcessResult;
using testing::Sh;

constexpr char kImage[] = "kapsel.test/busybox:latest";
constexpr char kPauseArgs[] = "sleep 2147483647";  // the pause image's command

class CriE2eTest : public ::testing::TestWithParam<const char*> {
 protected:
  bool kapsel() const { return std::string(GetParam()) == "kapsel"; }

  void SetUp() override {
    dir_ = absl::StrCat(
        std::filesystem::current_path().string(), "/cri-",
        absl::StrReplaceAll(::testing::UnitTest::GetInstance()->current_test_info()->name(),
                            {{"/", "-"}}));
    ASSERT_EQ(Sh(absl::StrCat("rm -rf ", dir_, " && mkdir -p ", dir_, "/logs")).exit_code, 0);
  }

  void TearDown() override {
    if (!node_server_pid_.empty()) Sh(absl::StrCat("kill ", node_server_pid_));
    for (const std::string& pod : pods_) {
      ProcessResult r = Sh(absl::StrCat(kCri, " stopp ", pod, " && ", kCri, " rmp ", pod));
      EXPECT_EQ(r.exit_code, 0) << "removing pod " << pod << ": " << Describe(r);
    }
    testing::ExpectNothingLeft("k8s.io");
  }

  // Writes the config of a pod whose pid and ipc namespaces are shared by its containers, on the
  // node's network (`network` "NODE") or the pod's own (CNI, "POD"), with `annotations` (a JSON
  // object's members, e.g. R"("a":"b")") and, unless empty, the cgroup parent kubelet would name;
  // returns the file.
  std::string WritePodConfig(const std::string& name, const std::string& network,
                             const std::string& annotations,
                             const std::string& cgroup_parent = "") {
    const std::string config = absl::StrCat(dir_, "/", name, ".json");
    WriteFile(
        config,
        absl::StrCat(
            R"({"metadata":{"name":")", name, R"(","uid":")", name,
            R"(-uid","namespace":"default"},)",
            // A hostname needs the pod's own UTS namespace, which a pod
            // on the node's network does not get.
            network == "POD" ? absl::StrCat(R"("hostname":")", name, R"(-host",)") : "",
            R"("logDirectory":")", dir_, R"(/logs","annotations":{)", annotations, R"(},"linux":{)",
            cgroup_parent.empty() ? ""
                                  : absl::StrCat(R"("cgroupParent":")", cgroup_parent, R"(",)"),
            R"("securityContext":{"namespaceOptions":)", PodNamespaces(network), "}}}"));
    return config;
  }
  static std::string PodNamespaces(const std::string& network) {
    return absl::StrCat(R"({"network":")", network, R"(","pid":"POD","ipc":"POD"})");
  }

  // Runs a pod (WritePodConfig). Returns the pod sandbox id ("" after a test failure).
  std::string RunPod(const std::string& name, const std::string& network = "NODE",
                     const std::string& annotations = "", const std::string& cgroup_parent = "") {
    const std::string config = WritePodConfig(name, network, annotations, cgroup_parent);
    const std::string namespaces = PodNamespaces(network);
    ProcessResult r = Sh(absl::StrCat(kCri, " runp ", config, " ", GetParam()), absl::Seconds(300));
    EXPECT_EQ(r.exit_code, 0) << "runp " << name << ": " << Describe(r);
    std::string id(absl::StripAsciiWhitespace(r.out));
    if (r.exit_code == 0 && !id.empty()) pods_.push_back(id);
    pod_configs_[id] = config;
    pod_namespaces_[id] = namespaces;
    return id;
  }

  // Creates and starts a container running `sh -c script` in `pod`; returns its id.
  std::string RunContainer(const std::string& pod, const std::string& name,
                           const std::string& script) {
    const std::string config = absl::StrCat(dir_, "/", name, ".json");
    WriteFile(config,
              absl::StrCat(R"({"metadata":{"name":")", name, R"("},"image":{"image":")", kImage,
                           R"("},"command":["/bin/sh","-c",")", script, R"("],"logPath":")", name,
                           R"(.log","linux":{"securityContext":{"namespaceOptions":)",
                           pod_namespaces_[pod], "}}}"));
    ProcessResult r = Sh(absl::StrCat("id=$(", kCri, " create ", pod, " ", config, " ",
                                      pod_configs_[pod], ") && ", kCri, " start $id && echo $id"),
                         absl::Seconds(300));
    EXPECT_EQ(r.exit_code, 0) << "create/start " << name << ": " << Describe(r);
    return std::string(absl::StripAsciiWhitespace(r.out));
  }

  ProcessResult Exec(const std::string& container, const std::string& script) {
    return Sh(absl::StrCat(kCri, " exec ", container, " /bin/sh -c '", script, "'"));
  }
  // The namespace link /proc/self/ns/<name> inside `container`, e.g. "ipc:[4026532203]".
  std::string Namespace(const std::string& container, const std::string& name) {
    ProcessResult r = Exec(container, absl::StrCat("readlink /proc/self/ns/", name));
    EXPECT_EQ(r.exit_code, 0) << Describe(r);
    return std::string(absl::StripAsciiWhitespace(r.out));
  }
  // The kernel's boot id as `container` sees it.
  std::string BootId(const std::string& container) {
    ProcessResult r = Exec(container, "cat /proc/sys/kernel/random/boot_id");
    EXPECT_EQ(r.exit_code, 0) << Describe(r);
    EXPECT_FALSE(r.out.empty());
    return r.out;
  }
  // How many kapsel-vmm processes run (-1 if pgrep failed).
  int VmmCount() {
    int count = -1;
    if (!absl::SimpleAtoi(absl::StripAsciiWhitespace(Sh("pgrep -c -f '[k]apsel-vmm'").out),
                          &count)) {
      return -1;
    }
    return count;
  }

  static void WriteFile(const std::string& path, const std::string& text) {
    std::ofstream(path) << text;
  }

  static constexpr char kCri[] = KAPSEL_CRI_BIN;
  std::string dir_;
  std::string node_server_pid_;  // a server a test started on the node's side
  std::vector<std::string> pods_;
  std::map<std::string, std::string> pod_configs_;     // pod id -> its config file
  std::map<std::string, std::string> pod_namespaces_;  // pod id -> its namespace options
};

TEST_P(CriE2eTest, PodContainersShareTheirPodsNamespaces) {
  const std::string pod = RunPod("pod");
  ASSERT_FALSE(pod.empty());
  const std::string c1 = RunContainer(pod, "c1", "echo hello from c1; exec sleep 1000");
  const std::string c2 = RunContainer(pod, "c2", "exec sleep 1001");
  ASSERT_FALSE(c1.empty());
  ASSERT_FALSE(c2.empty());
  if (kapsel()) {
    EXPECT_EQ(VmmCount(), 1) << "the pod's containers should share one microVM";
  }

  // The container's output reaches the CRI log.
  ProcessResult log = Sh(absl::StrCat("for i in $(seq 100); do grep -q 'stdout F hello from c1' ",
                                      dir_, "/logs/c1.log && exit 0; sleep 0.2; done; cat ", dir_,
                                      "/logs/c1.log; exit 1"));
  EXPECT_EQ(log.exit_code, 0) << Describe(log);

  // One pid namespace for the pod: c2 sees the pause process and c1's.
  ProcessResult ps = Exec(c2, "ps -o args");
  EXPECT_EQ(ps.exit_code, 0) << Describe(ps);
  EXPECT_THAT(ps.out, HasSubstr(kPauseArgs));
  EXPECT_THAT(ps.out, HasSubstr("sleep 1000"));
  EXPECT_THAT(ps.out, HasSubstr("sleep 1001"));
  for (const char* ns : {"pid", "ipc"}) {
    const std::string ns1 = Namespace(c1, ns);
    EXPECT_FALSE(ns1.empty());
    EXPECT_EQ(ns1, Namespace(c2, ns)) << ns;
  }
  // One kernel (kapsel: the pod's VM).
  EXPECT_EQ(BootId(c1), BootId(c2));
  // Each container keeps its own mount namespace.
  EXPECT_NE(Namespace(c1, "mnt"), Namespace(c2, "mnt"));

  // ExecSync: output and exit code.
  ProcessResult exec = Exec(c1, "echo out; echo err >&2; exit 4");
  EXPECT_EQ(exec.exit_code, 4) << Describe(exec);
  EXPECT_EQ(exec.out, "out\n") << Describe(exec);
  EXPECT_EQ(exec.err, "err\n") << Describe(exec);

  // StopContainer: SIGTERM ends `sleep` (not pid 1 in the shared namespace): 128 + 15.
  ProcessResult stop = Sh(absl::StrCat(kCri, " stop ", c1, " && ", kCri, " inspect ", c1));
  EXPECT_EQ(stop.exit_code, 0) << Describe(stop);
  EXPECT_THAT(stop.out, HasSubstr("\"state\": \"CONTAINER_EXITED\"")) << Describe(stop);
  EXPECT_THAT(stop.out, HasSubstr("\"exitCode\": 143")) << Describe(stop);
  // The pod's other container still runs.
  EXPECT_EQ(Exec(c2, "true").exit_code, 0);
}

TEST_P(CriE2eTest, PodNetworkIsSharedByItsContainers) {
  // A pod on a CNI network: its containers share one network namespace and reach each other on
  // localhost (in kapsel, inside the VM; the CNI interface stays on the host side).
  const std::string pod = RunPod("netpod", "POD");
  ASSERT_FALSE(pod.empty());
  const std::string server = RunContainer(
      pod, "server",
      "mkdir -p /www && echo served in the pod > /www/index && exec httpd -f -p 8080 -h /www");
  const std::string client = RunContainer(pod, "client", "exec sleep 1000");
  ASSERT_FALSE(server.empty());
  ASSERT_FALSE(client.empty());
  EXPECT_EQ(Namespace(server, "net"), Namespace(client, "net"));
  // The pod's hostname, which containerd puts in every container's spec.
  EXPECT_EQ(Exec(client, "hostname").out, "netpod-host\n");
  ProcessResult got = Exec(client,
                           "for i in $(seq 50); do wget -q -O - http://127.0.0.1:8080/index && "
                           "exit 0; sleep 0.2; done; exit 1");
  EXPECT_EQ(got.exit_code, 0) << Describe(got);
  EXPECT_EQ(got.out, "served in the pod\n") << Describe(got);
}

TEST_P(CriE2eTest, PodIsReachableOnItsIpAndReachesOut) {
  // The pod's CNI address is the VM's (kapsel moves the interface in): a server in the pod
  // answers on it from the node's side of the bridge (containerd's network namespace), and the
  // pod reaches a server on the node through its default route.
  const char* node_netns = std::getenv("KAPSEL_CONTAINERD_NETNS");
  ASSERT_NE(node_netns, nullptr) << "run under tests/support/private-containerd --cri";
  const std::string in_node = absl::StrCat("nsenter --net=", node_netns, " ");
  // The node's server, on an address of its own (not the bridge's subnet: the pod reaches it
  // through its gateway). Debian's busybox wget crashes with -T, hence `timeout`.
  ASSERT_EQ(Sh(absl::StrCat("mkdir -p ", dir_, "/node-www && echo served on the node > ", dir_,
                            "/node-www/index && ", in_node, "ip addr replace 192.0.2.1/32 dev lo"))
                .exit_code,
            0);
  node_server_pid_ = Sh(absl::StrCat(in_node, "busybox httpd -f -p 192.0.2.1:8081 -h ", dir_,
                                     "/node-www >/dev/null 2>&1 & echo $!"))
                         .out;

  const std::string pod = RunPod("webpod", "POD");
  ASSERT_FALSE(pod.empty());
  ProcessResult podip = Sh(absl::StrCat(kCri, " podip ", pod));
  ASSERT_EQ(podip.exit_code, 0) << Describe(podip);
  const std::string ip(absl::StripAsciiWhitespace(podip.out));
  ASSERT_TRUE(absl::StartsWith(ip, "10.88.0.")) << ip;

  const std::string server = RunContainer(
      pod, "server",
      "mkdir -p /www && echo served in the pod > /www/index && exec httpd -f -p 8080 -h /www");
  ASSERT_FALSE(server.empty());
  ProcessResult in =
      Sh(absl::StrCat("for i in $(seq 100); do ", in_node, "timeout 5 busybox wget -q -O - http://",
                      ip, ":8080/index && exit 0; sleep 0.2; done; exit 1"));
  EXPECT_EQ(in.exit_code, 0) << Describe(in);
  EXPECT_EQ(in.out, "served in the pod\n") << Describe(in);

  // The container sees the pod's address on its interface.
  ProcessResult addr = Exec(server, "ip -4 addr show");
  EXPECT_THAT(addr.out, HasSubstr(absl::StrCat("inet ", ip, "/24"))) << Describe(addr);

  ProcessResult out =
      Exec(server,
           "for i in $(seq 50); do timeout 5 wget -q -O - http://192.0.2.1:8081/index "
           "&& exit 0; sleep 0.2; done; exit 1");
  EXPECT_EQ(out.exit_code, 0) << Describe(out);
  EXPECT_EQ(out.out, "served on the node\n") << Describe(out);
}

TEST_P(CriE2eTest, PodsAreIsolatedFromEachOther) {
  const std::string a = RunPod("a");
  const std::string b = RunPod("b");
  ASSERT_FALSE(a.empty());
  ASSERT_FALSE(b.empty());
  const std::string in_a = RunContainer(a, "in-a", "exec sleep 1000");
  const std::string in_b = RunContainer(b, "in-b", "exec sleep 1002");
  ASSERT_FALSE(in_a.empty());
  ASSERT_FALSE(in_b.empty());
  if (kapsel()) {
    EXPECT_EQ(VmmCount(), 2) << "each pod should get its own microVM";
  }
  ProcessResult ps = Exec(in_b, "ps -o args");
  EXPECT_EQ(ps.exit_code, 0) << Describe(ps);
  EXPECT_THAT(ps.out, HasSubstr("sleep 1002"));
  EXPECT_THAT(ps.out, Not(HasSubstr("sleep 1000")));
  if (kapsel()) {
    // Two kernels: namespace numbers from identical boots may coincide, boot ids do not.
    EXPECT_NE(BootId(in_a), BootId(in_b));
  } else {
    for (const char* ns : {"pid", "ipc"}) {
      EXPECT_NE(Namespace(in_a, ns), Namespace(in_b, ns)) << ns;
    }
  }
}

TEST_P(CriE2eTest, PodAnnotationsSizeTheVm) {
  if (!kapsel()) GTEST_SKIP() << "the io.kapsel.vm.* annotations size kapsel's VM";
  const std::string pod =
      RunPod("bigpod", "NODE", R"("io.kapsel.vm.memory_mib":"384","io.kapsel.vm.vcpus":"2")");
  ASSERT_FALSE(pod.empty());
  const std::string c = RunContainer(pod, "sized", "exec sleep 1000");
  ASSERT_FALSE(c.empty());

  // MemTotal is the VM's memory less what the kernel keeps (the default VM has 256 MiB).
  ProcessResult meminfo = Exec(c, "cat /proc/meminfo");
  ASSERT_EQ(meminfo.exit_code, 0) << Describe(meminfo);
  const size_t at = meminfo.out.find("MemTotal:");
  ASSERT_NE(at, std::string::npos) << meminfo.out;
  const std::string line = meminfo.out.substr(at + 9, meminfo.out.find('\n', at) - at - 9);
  int64_t mem_kib = 0;
  ASSERT_TRUE(
      absl::SimpleAtoi(absl::StripSuffix(absl::StripAsciiWhitespace(line), " kB"), &mem_kib))
      << meminfo.out;
  EXPECT_GE(mem_kib / 1024, 330) << meminfo.out;
  EXPECT_LE(mem_kib / 1024, 384) << meminfo.out;

  ProcessResult cpus = Exec(c, "nproc; grep -c ^processor /proc/cpuinfo");
  EXPECT_EQ(cpus.exit_code, 0) << Describe(cpus);
  EXPECT_EQ(cpus.out, "2\n2\n") << Describe(cpus);
}

TEST_P(CriE2eTest, PodRunsInItsCgroup) {
  // kubelet names the pod's cgroup (cgroupfs driver: /kubepods/<qos>/pod<uid>); containerd puts
  // the sandbox at <parent>/<pod id>, where runc runs the pause process and kapsel the VM
  // (kapsel-vmm and virtiofsd): the pod's cgroup accounts for the VM. It goes with the pod.
  const std::string parent = "/kapsel-e2e-pods/pod-cg";
  const std::string pod = RunPod("cgpod", "NODE", "", parent);
  ASSERT_FALSE(pod.empty());
  const std::string c = RunContainer(pod, "app", "exec sleep 1000");
  ASSERT_FALSE(c.empty());
  const std::string sandbox_cgroup = absl::StrCat(parent, "/", pod);
  ProcessResult r = Sh(absl::StrCat(
      "for p in ",
      kapsel() ? absl::StrCat("$(pgrep -f '[k]apsel-vmm.*/", pod, "/')")
               : absl::StrCat("$(ctr -n k8s.io task ls | awk '$1 == \"", pod, "\" {print $2}')"),
      "; do ", "grep 0:: /proc/$p/cgroup; done | sort -u; ",
      "echo \"memory.current $(cat /sys/fs/cgroup", sandbox_cgroup, "/memory.current)\""));
  EXPECT_THAT(r.out, HasSubstr(absl::StrCat("0::", sandbox_cgroup, "\n"))) << Describe(r);
  const size_t at = r.out.find("memory.current ");
  int64_t bytes = 0;
  ASSERT_NE(at, std::string::npos) << Describe(r);
  ASSERT_TRUE(absl::SimpleAtoi(absl::StripAsciiWhitespace(r.out.substr(at + 15)), &bytes))
      << Describe(r);
  if (kapsel()) {
    EXPECT_GT(bytes, 8 << 20) << "the VM's memory is charged to the pod: " << r.out;
  }
  ProcessResult removed =
      Sh(absl::StrCat(kCri, " stopp ", pod, " && ", kCri, " rmp ", pod, " && [ ! -e /sys/fs/cgroup",
                      sandbox_cgroup, " ] && echo gone; rmdir /sys/fs/cgroup", parent,
                      " /sys/fs/cgroup/kapsel-e2e-pods 2>/dev/null"));
  pods_.clear();
  EXPECT_EQ(removed.out, "gone\n") << Describe(removed);
}

TEST_P(CriE2eTest, BadSizeAnnotationFailsThePod) {
  if (!kapsel()) GTEST_SKIP() << "the io.kapsel.vm.* annotations size kapsel's VM";
  const std::string config = WritePodConfig("badpod", "NODE", R"("io.kapsel.vm.memory_mib":"abc")");
  ProcessResult r = Sh(absl::StrCat(kCri, " runp ", config, " ", GetParam()), absl::Seconds(300));
  EXPECT_NE(r.exit_code, 0) << Describe(r);
  EXPECT_THAT(r.err, HasSubstr(R"(io.kapsel.vm.memory_mib="abc")")) << Describe(r);
  if (r.exit_code == 0) pods_.push_back(std::string(absl::StripAsciiWhitespace(r.out)));
  // TearDown: nothing of the pod is left (no shim, VM, virtiofsd, mount or state).
}

INSTANTIATE_TEST_SUITE_P(Runtimes, CriE2eTest, ::testing::Values("kapsel", "runc"),
                         [](const ::testing::TestParamInfo<const char*>& info) {
                           return std::string(info.param);
                         });

}  // namespace
}  // namespace kapsel::shim
