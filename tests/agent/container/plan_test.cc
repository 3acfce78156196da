// The agent-side translations of the spec, without running containers: mount options, rlimits,
// capabilities, sysctls, namespaces, cgroup v2 values, seccomp and device programs.
#include <linux/bpf.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/resource.h>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "guest-agent/container/capabilities.h"
#include "guest-agent/container/cgroup_resources.h"
#include "guest-agent/container/device_filter.h"
#include "guest-agent/container/mount_options.h"
#include "guest-agent/container/namespaces.h"
#include "guest-agent/container/process_plan.h"
#include "guest-agent/container/rlimits.h"
#include "guest-agent/container/seccomp_filter.h"
#include "guest-agent/container/sysctl.h"

namespace kapsel::agent {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

google::protobuf::RepeatedPtrField<std::string> Strings(std::vector<std::string> values) {
  google::protobuf::RepeatedPtrField<std::string> field;
  for (std::string& v : values) *field.Add() = std::move(v);
  return field;
}

TEST(MountOptionsTest, FlagsPropagationAndData) {
  absl::StatusOr<MountOptions> options = ParseMountOptions(
      Strings({"nosuid", "ro", "rw", "noexec", "rslave", "mode=755", "size=1m", "relatime"}));
  ASSERT_TRUE(options.ok()) << options.status();
  EXPECT_EQ(options->flags, static_cast<unsigned long>(MS_NOSUID | MS_NOEXEC | MS_RELATIME));
  EXPECT_EQ(options->propagation, static_cast<unsigned long>(MS_SLAVE | MS_REC));
  EXPECT_EQ(options->data, "mode=755,size=1m");
  EXPECT_FALSE(options->bind);
  options = ParseMountOptions(Strings({"rbind", "private"}));
  ASSERT_TRUE(options.ok());
  EXPECT_TRUE(options->bind && options->recursive);
  EXPECT_EQ(options->propagation, static_cast<unsigned long>(MS_PRIVATE));
  EXPECT_FALSE(ParseMountOptions(Strings({"rro"})).ok());
  EXPECT_FALSE(ParseMountOptions(Strings({"idmap"})).ok());
  EXPECT_FALSE(ParsePropagation("sideways").ok());
}

TEST(RlimitsTest, NamesAndChecks) {
  google::protobuf::RepeatedPtrField<oci::v1::Rlimit> rlimits;
  oci::v1::Rlimit* r = rlimits.Add();
  r->set_type("RLIMIT_NOFILE");
  r->set_soft(10);
  r->set_hard(20);
  absl::StatusOr<std::vector<RlimitStep>> steps = RlimitSteps(rlimits);
  ASSERT_TRUE(steps.ok());
  ASSERT_EQ(steps->size(), 1u);
  EXPECT_EQ((*steps)[0].resource, RLIMIT_NOFILE);
  *rlimits.Add() = *r;
  EXPECT_THAT(RlimitSteps(rlimits).status().message(), HasSubstr("given twice"));
  rlimits.RemoveLast();
  r->set_soft(30);
  EXPECT_THAT(RlimitSteps(rlimits).status().message(), HasSubstr("exceeds hard"));
}

TEST(CapabilitiesTest, SetsAndNames) {
  EXPECT_EQ(*CapabilityNumber("CAP_SYS_ADMIN"), 21);
  EXPECT_EQ(*CapabilityNumber("CAP_CHECKPOINT_RESTORE"), 40);
  EXPECT_FALSE(CapabilityNumber("CAP_NOPE").ok());
  oci::v1::Capabilities caps;
  caps.add_bounding("CAP_KILL");
  caps.add_permitted("CAP_KILL");
  caps.add_effective("CAP_KILL");
  absl::StatusOr<CapabilitySets> sets = CapabilitySetsFromSpec(caps, 40);
  ASSERT_TRUE(sets.ok());
  EXPECT_EQ(sets->bounding, uint64_t{1} << 5);
  EXPECT_EQ(sets->inheritable, 0u);
  caps.add_ambient("CAP_KILL");  // not inheritable
  EXPECT_THAT(CapabilitySetsFromSpec(caps, 40).status().message(), HasSubstr("ambient"));
  // Capabilities the kernel does not know are left out.
  oci::v1::Capabilities newer;
  newer.add_bounding("CAP_BPF");
  EXPECT_EQ(CapabilitySetsFromSpec(newer, 38)->bounding, 0u);
}

TEST(SysctlTest, OnlyNamespacedOnes) {
  google::protobuf::Map<std::string, std::string> sysctls;
  sysctls["net.ipv4.ip_forward"] = "1";
  sysctls["fs.mqueue.msg_max"] = "20";
  absl::StatusOr<std::vector<SysctlStep>> steps = SysctlSteps(sysctls, CLONE_NEWNET | CLONE_NEWIPC);
  ASSERT_TRUE(steps.ok()) << steps.status();
  EXPECT_EQ((*steps)[0].proc_path, "/proc/sys/fs/mqueue/msg_max");
  EXPECT_EQ((*steps)[1].proc_path, "/proc/sys/net/ipv4/ip_forward");
  EXPECT_THAT(SysctlSteps(sysctls, CLONE_NEWIPC).status().message(),
              HasSubstr("network namespace"));
  google::protobuf::Map<std::string, std::string> bad;
  bad["net/../../x"] = "1";
  EXPECT_FALSE(SysctlSteps(bad, CLONE_NEWNET).ok());
  bad.clear();
  bad["kernel.hostname"] = "x";
  EXPECT_FALSE(SysctlSteps(bad, CLONE_NEWUTS).ok());
}

TEST(NamespacesTest, NewJoinedAndOrder) {
  google::protobuf::RepeatedPtrField<oci::v1::Namespace> list;
  list.Add()->set_type("mount");
  oci::v1::Namespace* net = list.Add();
  net->set_type("network");
  net->set_path("/proc/1/ns/net");
  oci::v1::Namespace* user = list.Add();
  user->set_type("user");
  user->set_path("/proc/1/ns/user");
  absl::StatusOr<NamespaceSet> set = ParseNamespaces(list);
  ASSERT_TRUE(set.ok());
  EXPECT_EQ(set->new_flags, static_cast<uint64_t>(CLONE_NEWNS));
  ASSERT_EQ(set->joins.size(), 2u);
  EXPECT_EQ(set->joins[0].clone_flag, CLONE_NEWUSER);  // the user namespace first
  list.Add()->set_type("mount");
  EXPECT_THAT(ParseNamespaces(list).status().message(), HasSubstr("twice"));
}

TEST(CgroupResourcesTest, Conversions) {
  EXPECT_EQ(CpuSharesToWeight(2), 1u);
  EXPECT_EQ(CpuSharesToWeight(1024), 39u);
  EXPECT_EQ(CpuSharesToWeight(262144), 10000u);
  EXPECT_EQ(BlkioWeightToIoWeight(10), 1u);
  EXPECT_EQ(BlkioWeightToIoWeight(1000), 10000u);

  oci::v1::Resources resources;
  resources.mutable_memory()->set_limit(100 << 20);
  resources.mutable_memory()->set_swap(150 << 20);
  resources.mutable_memory()->set_reservation(50 << 20);
  resources.mutable_cpu()->set_shares(1024);
  resources.mutable_cpu()->set_quota(50000);
  resources.mutable_cpu()->set_cpus("0-1");
  resources.mutable_pids()->set_limit(-1);
  oci::v1::ThrottleDevice* t = resources.mutable_block_io()->add_throttle_read_bps_device();
  t->set_major(8);
  t->set_minor(0);
  t->set_rate(1000);
  (*resources.mutable_unified())["memory.high"] = "200000000";
  absl::StatusOr<std::vector<CgroupWrite>> writes = CgroupWrites(resources);
  ASSERT_TRUE(writes.ok()) << writes.status();
  std::vector<std::string> lines;
  for (const CgroupWrite& w : *writes) lines.push_back(w.file + "=" + w.value);
  EXPECT_THAT(
      lines, ElementsAre("memory.max=104857600", "memory.low=52428800", "memory.swap.max=52428800",
                         "cpu.weight=39", "cpu.max=50000 100000", "cpuset.cpus=0-1", "pids.max=max",
                         "io.max=8:0 rbps=1000", "memory.high=200000000"));

  oci::v1::Resources swap_below;
  swap_below.mutable_memory()->set_limit(100);
  swap_below.mutable_memory()->set_swap(50);
  EXPECT_FALSE(CgroupWrites(swap_below).ok());
  oci::v1::Resources bad_key;
  (*bad_key.mutable_unified())["../memory.max"] = "1";
  EXPECT_FALSE(CgroupWrites(bad_key).ok());
  (*bad_key.mutable_unified()).clear();
  (*bad_key.mutable_unified())["cgroup.procs"] = "1";
  EXPECT_FALSE(CgroupWrites(bad_key).ok());
  oci::v1::Resources rt;
  rt.mutable_cpu()->set_realtime_runtime(1);
  EXPECT_THAT(CgroupWrites(rt).status().message(), HasSubstr("cpu.realtimeRuntime"));
}

TEST(SeccompTest, CompilesProfiles) {
  oci::v1::Seccomp seccomp;
  seccomp.set_default_action("SCMP_ACT_ERRNO");
  seccomp.set_default_errno_ret(38);
  seccomp.add_architectures("SCMP_ARCH_X86_64");
  seccomp.add_architectures("SCMP_ARCH_X86");
  seccomp.add_flags("SECCOMP_FILTER_FLAG_SPEC_ALLOW");
  const std::pair<const char*, const char*> actions[] = {
      {"SCMP_ACT_ALLOW", "getpid"},         {"SCMP_ACT_KILL", "gettid"},
      {"SCMP_ACT_KILL_PROCESS", "getppid"}, {"SCMP_ACT_KILL_THREAD", "getuid"},
      {"SCMP_ACT_TRAP", "getgid"},          {"SCMP_ACT_TRACE", "geteuid"},
      {"SCMP_ACT_LOG", "getegid"}};
  for (const auto& [action, name] : actions) {
    oci::v1::SeccompSyscall* rule = seccomp.add_syscalls();
    rule->add_names(name);
    rule->set_action(action);
  }
  oci::v1::SeccompSyscall* args = seccomp.add_syscalls();
  args->add_names("personality");
  args->set_action("SCMP_ACT_ALLOW");
  for (const char* op : {"SCMP_CMP_NE", "SCMP_CMP_LT", "SCMP_CMP_LE", "SCMP_CMP_EQ", "SCMP_CMP_GE",
                         "SCMP_CMP_GT", "SCMP_CMP_MASKED_EQ"}) {
    oci::v1::SeccompSyscall* rule = seccomp.add_syscalls();
    rule->add_names("socket");
    rule->set_action("SCMP_ACT_ALLOW");
    oci::v1::SeccompArg* arg = rule->add_args();
    arg->set_index(0);
    arg->set_value(1);
    arg->set_value_two(1);
    arg->set_op(op);
  }
  absl::StatusOr<SeccompProgram> program = CompileSeccomp(seccomp);
  ASSERT_TRUE(program.ok()) << program.status();
  EXPECT_GT(program->instructions.size(), 10u);
  EXPECT_NE(program->flags, 0u);

  oci::v1::Seccomp notify;
  notify.set_default_action("SCMP_ACT_NOTIFY");
  EXPECT_THAT(CompileSeccomp(notify).status().message(), HasSubstr("SCMP_ACT_NOTIFY"));
  oci::v1::Seccomp arch;
  arch.set_default_action("SCMP_ACT_ALLOW");
  arch.add_architectures("SCMP_ARCH_PDP11");
  EXPECT_THAT(CompileSeccomp(arch).status().message(), HasSubstr("SCMP_ARCH_PDP11"));
}

TEST(DeviceFilterTest, Programs) {
  DeviceRules rules;
  EXPECT_TRUE(CompileDeviceRules(rules)->empty());
  oci::v1::DeviceCgroup* deny = rules.Add();
  deny->set_access("rwm");
  oci::v1::DeviceCgroup* allow = rules.Add();
  allow->set_allow(true);
  allow->set_type("c");
  allow->set_major(1);
  allow->set_minor(3);
  allow->set_access("rw");
  absl::StatusOr<std::vector<BpfInstruction>> program = CompileDeviceRules(rules);
  ASSERT_TRUE(program.ok());
  // Ends with "allow" for an unmatched request; every rule block ends in exit.
  ASSERT_GE(program->size(), 8u);
  EXPECT_EQ(program->back().code, BPF_JMP | BPF_EXIT);
  allow->set_access("rwx");
  EXPECT_FALSE(CompileDeviceRules(rules).ok());
}

TEST(DeviceFilterTest, AllowAllEndsTheProgram) {
  // A privileged container's rules: deny all, then allow all. The last rule matches every request,
  // so it alone is the program after the context loads (no instruction the verifier could call
  // unreachable).
  DeviceRules rules;
  rules.Add()->set_access("rwm");
  oci::v1::DeviceCgroup* allow = rules.Add();
  allow->set_allow(true);
  allow->set_access("rwm");
  absl::StatusOr<std::vector<BpfInstruction>> program = CompileDeviceRules(rules);
  ASSERT_TRUE(program.ok());
  ASSERT_EQ(program->size(), 8u);
  EXPECT_EQ((*program)[6].code, BPF_ALU64 | BPF_MOV | BPF_K);
  EXPECT_EQ((*program)[6].imm, 1);
  EXPECT_EQ((*program)[7].code, BPF_JMP | BPF_EXIT);
}

TEST(ProcessPlanTest, ExecCandidatesAndChecks) {
  EXPECT_THAT(ExecCandidates("sh", {"PATH=/bin:/usr/bin"}), ElementsAre("/bin/sh", "/usr/bin/sh"));
  EXPECT_THAT(ExecCandidates("./x", {}), ElementsAre("./x"));
  EXPECT_EQ(ExecCandidates("ls", {}).size(), 6u);
  oci::v1::Process process;
  process.add_args("true");
  process.set_cwd("relative");
  EXPECT_THAT(BuildProcessPlan(process, std::nullopt, 40).status().message(),
              HasSubstr("process.cwd"));
  process.set_cwd("/");
  process.add_env("NOEQUALS");
  EXPECT_THAT(BuildProcessPlan(process, std::nullopt, 40).status().message(),
              HasSubstr("KEY=value"));
  process.clear_env();
  process.set_oom_score_adj(2000);
  EXPECT_FALSE(BuildProcessPlan(process, std::nullopt, 40).ok());
  process.set_oom_score_adj(500);
  absl::StatusOr<std::unique_ptr<ProcessPlan>> plan = BuildProcessPlan(process, std::nullopt, 40);
  ASSERT_TRUE(plan.ok());
  EXPECT_EQ((*plan)->oom_score_adj, "500");
  (*plan)->Finalize();
  EXPECT_STREQ((*plan)->argv[0], "true");
  EXPECT_EQ((*plan)->argv[1], nullptr);
}

}  // namespace
}  // namespace kapsel::agent
