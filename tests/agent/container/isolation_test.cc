// What a container may do: capabilities, no_new_privs, seccomp, rlimits, user and groups,
// masked/read-only paths, read-only root, bind mounts, user namespaces, symlinks that try to
// leave the rootfs, device rules, sysctls, and specs kapsel refuses. Needs root.
#include <fcntl.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
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

void SetCaps(oci::v1::Spec& spec, const std::vector<std::string>& caps, bool ambient = false) {
  oci::v1::Capabilities* c = spec.mutable_process()->mutable_capabilities();
  for (const std::string& cap : caps) {
    c->add_bounding(cap);
    c->add_effective(cap);
    c->add_permitted(cap);
    c->add_inheritable(cap);
    if (ambient) c->add_ambient(cap);
  }
}

void WriteFile(const std::string& path, const std::string& text) {
  std::ofstream out(path);
  out << text;
}

class IsolationTest : public ContainerTest {
 protected:
  // Runs the spec; expects exit 0 unless told otherwise.
  RunResult MustRun(const oci::v1::Spec& spec, int exit_code = 0) {
    absl::StatusOr<RunResult> result = Run(spec);
    EXPECT_TRUE(result.ok()) << result.status();
    if (!result.ok()) return {};
    EXPECT_TRUE(WIFEXITED(result->status)) << result->status;
    EXPECT_EQ(WEXITSTATUS(result->status), exit_code) << result->out << result->err;
    return *result;
  }
  absl::Status CreateError(const oci::v1::Spec& spec) {
    absl::StatusOr<std::unique_ptr<Container>> c = Container::Create("bad", spec, Options());
    if (c.ok()) return absl::InternalError("Create succeeded");
    struct stat st;
    EXPECT_NE(stat((cgroup_root_ + "/kapsel").c_str(), &st), 0) << "cgroup left behind";
    return c.status();
  }
};

TEST_F(IsolationTest, CapabilitiesOfRoot) {
  oci::v1::Spec spec = BaseSpec({"grep", "^Cap", "/proc/self/status"});
  SetCaps(spec, {"CAP_CHOWN", "CAP_KILL", "CAP_NET_BIND_SERVICE"});
  RunResult result = MustRun(spec);
  // bits 0, 5 and 10
  EXPECT_THAT(result.out, HasSubstr("CapEff:\t0000000000000421"));
  EXPECT_THAT(result.out, HasSubstr("CapPrm:\t0000000000000421"));
  EXPECT_THAT(result.out, HasSubstr("CapBnd:\t0000000000000421"));
}

TEST_F(IsolationTest, AmbientCapabilitiesOfAnotherUser) {
  oci::v1::Spec spec = BaseSpec({"grep", "^Cap", "/proc/self/status"});
  spec.mutable_process()->mutable_user()->set_uid(1000);
  spec.mutable_process()->mutable_user()->set_gid(1000);
  SetCaps(spec, {"CAP_NET_BIND_SERVICE"}, /*ambient=*/true);
  RunResult result = MustRun(spec);
  EXPECT_THAT(result.out, HasSubstr("CapEff:\t0000000000000400"));
  EXPECT_THAT(result.out, HasSubstr("CapAmb:\t0000000000000400"));
  EXPECT_THAT(result.out, HasSubstr("CapBnd:\t0000000000000400"));
}

TEST_F(IsolationTest, NoCapabilitiesForAnotherUser) {
  oci::v1::Spec spec = BaseSpec({"grep", "^Cap", "/proc/self/status"});
  spec.mutable_process()->mutable_user()->set_uid(1000);
  SetCaps(spec, {"CAP_CHOWN"});
  RunResult result = MustRun(spec);
  EXPECT_THAT(result.out, HasSubstr("CapEff:\t0000000000000000"));
  EXPECT_THAT(result.out, HasSubstr("CapBnd:\t0000000000000001"));
}

TEST_F(IsolationTest, NoNewPrivileges) {
  oci::v1::Spec spec = BaseSpec({"grep", "NoNewPrivs", "/proc/self/status"});
  spec.mutable_process()->set_no_new_privileges(true);
  EXPECT_EQ(MustRun(spec).out, "NoNewPrivs:\t1\n");
  spec.mutable_process()->set_no_new_privileges(false);
  EXPECT_EQ(MustRun(spec).out, "NoNewPrivs:\t0\n");
}

oci::v1::Seccomp DenyMkdirProfile() {
  oci::v1::Seccomp seccomp;
  seccomp.set_default_action("SCMP_ACT_ALLOW");
  seccomp.add_architectures("SCMP_ARCH_X86_64");
  seccomp.add_architectures("SCMP_ARCH_X86");
  seccomp.add_architectures("SCMP_ARCH_X32");
  oci::v1::SeccompSyscall* rule = seccomp.add_syscalls();
  rule->add_names("mkdir");
  rule->add_names("mkdirat");
  rule->add_names("no_such_syscall_in_any_kernel");  // skipped
  rule->set_action("SCMP_ACT_ERRNO");
  rule->set_errno_ret(1);  // EPERM
  // kill(pid, SIGUSR1) is refused; other signals are not.
  oci::v1::SeccompSyscall* kill = seccomp.add_syscalls();
  kill->add_names("kill");
  kill->set_action("SCMP_ACT_ERRNO");
  oci::v1::SeccompArg* arg = kill->add_args();
  arg->set_index(1);
  arg->set_value(10);
  arg->set_op("SCMP_CMP_EQ");
  return seccomp;
}

TEST_F(IsolationTest, SeccompDeniesWhatTheProfileDenies) {
  oci::v1::Spec spec = BaseSpec(
      {"sh", "-c",
       "mkdir /tmp/x; echo mkdir=$?; touch /tmp/y && echo touched; kill -USR1 $$; echo kill=$?; "
       "kill -0 $$; echo kill0=$?; grep Seccomp: /proc/self/status"});
  *spec.mutable_linux()->mutable_seccomp() = DenyMkdirProfile();
  spec.mutable_process()->set_no_new_privileges(true);
  RunResult result = MustRun(spec);
  EXPECT_THAT(result.err, HasSubstr("Operation not permitted"));
  EXPECT_EQ(result.out, "mkdir=1\ntouched\nkill=1\nkill0=0\nSeccomp:\t2\n");
}

TEST_F(IsolationTest, SeccompWithoutNoNewPrivilegesAndWithoutSysAdmin) {
  // The filter is loaded while CAP_SYS_ADMIN is still effective, then it is dropped.
  oci::v1::Spec spec = BaseSpec(
      {"sh", "-c", "mkdir /tmp/x; echo mkdir=$?; grep -E 'CapEff|NoNewPrivs' /proc/self/status"});
  *spec.mutable_linux()->mutable_seccomp() = DenyMkdirProfile();
  SetCaps(spec, {"CAP_CHOWN", "CAP_KILL"});
  RunResult result = MustRun(spec);
  EXPECT_EQ(result.out, "mkdir=1\nCapEff:\t0000000000000021\nNoNewPrivs:\t0\n");
}

TEST_F(IsolationTest, SeccompErrnoRet) {
  oci::v1::Spec spec = BaseSpec({"sh", "-c", "echo hi; mkdir /tmp/x"});
  oci::v1::Seccomp* seccomp = spec.mutable_linux()->mutable_seccomp();
  seccomp->set_default_action("SCMP_ACT_ALLOW");
  oci::v1::SeccompSyscall* rule = seccomp->add_syscalls();
  rule->add_names("mkdir");
  rule->add_names("mkdirat");
  rule->set_action("SCMP_ACT_ERRNO");
  rule->set_errno_ret(13);  // EACCES
  spec.mutable_process()->set_no_new_privileges(true);
  RunResult result = MustRun(spec, 1);
  EXPECT_EQ(result.out, "hi\n");
  EXPECT_THAT(result.err, HasSubstr("Permission denied"));
}

TEST_F(IsolationTest, Rlimits) {
  oci::v1::Spec spec = BaseSpec({"sh", "-c", "ulimit -n; ulimit -Hn"});
  oci::v1::Rlimit* rlimit = spec.mutable_process()->add_rlimits();
  rlimit->set_type("RLIMIT_NOFILE");
  rlimit->set_soft(123);
  rlimit->set_hard(456);
  EXPECT_EQ(MustRun(spec).out, "123\n456\n");
}

TEST_F(IsolationTest, UserGroupsUmaskAndCwd) {
  oci::v1::Spec spec = BaseSpec({"sh", "-c", "id; umask; pwd; touch f; stat -c %a f"});
  oci::v1::User* user = spec.mutable_process()->mutable_user();
  user->set_uid(1000);
  user->set_gid(1000);
  user->add_additional_gids(2000);
  user->set_umask(027);
  spec.mutable_process()->set_cwd("/tmp");
  RunResult result = MustRun(spec);
  EXPECT_EQ(result.out, "uid=1000(user) gid=1000(user) groups=2000(extra)\n0027\n/tmp\n640\n");
}

// As in the guest, where the agent is PID 1: the container is created by a thread other than
// the main one, whose tid (1) is also the container init's pid in its own pid namespace. The
// credential calls in the init must not go through glibc's set*id broadcast (it would signal
// "thread 1" of the agent's thread list, which there is the init itself, forever).
TEST_F(IsolationTest, UserAndGroupsWhenTheCreatorsMainThreadIsPid1) {
  oci::v1::Spec spec = BaseSpec({"id"});
  oci::v1::User* user = spec.mutable_process()->mutable_user();
  user->set_uid(1000);
  user->set_gid(1000);
  user->add_additional_gids(2000);
  int report[2];
  ASSERT_EQ(pipe2(report, O_CLOEXEC), 0);
  pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    // A fresh single-threaded process; its child is PID 1 of a new pid namespace (with its own
    // /proc, so that the pids the container code reads there are its own).
    if (unshare(CLONE_NEWPID | CLONE_NEWNS) != 0) _exit(2);
    pid_t init = fork();
    if (init < 0) _exit(3);
    if (init > 0) _exit(WaitForExit(init, absl::Seconds(120)) == 0 ? 0 : 4);
    if (mount(nullptr, "/", nullptr, MS_PRIVATE | MS_REC, nullptr) != 0 ||
        mount("proc", "/proc", "proc", 0, nullptr) != 0) {
      _exit(5);
    }
    std::string text;
    std::thread creator([&] {
      absl::StatusOr<RunResult> result = Run(spec);
      text = result.ok() ? absl::StrCat("status ", result->status, "\n", result->out)
                         : std::string(result.status().ToString());
    });
    creator.join();
    ssize_t written = write(report[1], text.data(), text.size());
    _exit(written == static_cast<ssize_t>(text.size()) ? 0 : 6);
  }
  close(report[1]);
  std::string text = ReadAll(report[0], absl::Seconds(120));
  close(report[0]);
  EXPECT_EQ(WaitForExit(child, absl::Seconds(30)), 0);
  EXPECT_EQ(text, "status 0\nuid=1000(user) gid=1000(user) groups=2000(extra)\n");
}

// As with runc: the init's missing working directory is made (root's, 0755, even for a user
// process and a read-only rootfs); one that is a file is an error naming it.
TEST_F(IsolationTest, MissingCwdIsCreated) {
  oci::v1::Spec spec = BaseSpec({"sh", "-c", "pwd; stat -c '%a %u' . /does"});
  spec.mutable_process()->set_cwd("/does/not/exist");
  spec.mutable_process()->mutable_user()->set_uid(1000);
  spec.mutable_process()->mutable_user()->set_gid(1000);
  spec.mutable_root()->set_readonly(true);
  EXPECT_EQ(MustRun(spec).out, "/does/not/exist\n755 0\n755 0\n");
  EXPECT_TRUE(std::filesystem::is_directory(rootfs_ + "/does/not/exist"));

  WriteFile(rootfs_ + "/afile", "x");
  spec.mutable_process()->set_cwd("/afile");
  absl::Status status = CreateError(spec);
  EXPECT_THAT(status.message(), HasSubstr("process.cwd /afile"));
}

TEST_F(IsolationTest, MaskedAndReadonlyPaths) {
  ASSERT_EQ(mkdir((rootfs_ + "/secretdir").c_str(), 0755), 0);
  WriteFile(rootfs_ + "/secretdir/key", "k");
  WriteFile(rootfs_ + "/etc/secret", "s3cr3t");
  ASSERT_EQ(mkdir((rootfs_ + "/rodir").c_str(), 0777), 0);
  oci::v1::Spec spec = BaseSpec(
      {"sh", "-c",
       "echo secret=$(cat /etc/secret); ls /secretdir | wc -l; touch /rodir/x || echo ro-ok; "
       "echo 1 > /proc/sys/kernel/domainname || echo procsys-ro; head -c 1 /proc/kcore | wc -c"});
  for (const char* path : {"/etc/secret", "/secretdir", "/proc/kcore", "/no/such/path"}) {
    spec.mutable_linux()->add_masked_paths(path);
  }
  for (const char* path : {"/rodir", "/proc/sys"}) spec.mutable_linux()->add_readonly_paths(path);
  RunResult result = MustRun(spec);
  EXPECT_EQ(result.out, "secret=\n0\nro-ok\nprocsys-ro\n0\n");
  EXPECT_THAT(result.err, HasSubstr("Read-only file system"));
}

TEST_F(IsolationTest, ReadonlyRoot) {
  oci::v1::Spec spec =
      BaseSpec({"sh", "-c", "touch /x || echo root-ro; touch /tmp/x && echo tmp-rw"});
  spec.mutable_root()->set_readonly(true);
  RunResult result = MustRun(spec);
  EXPECT_EQ(result.out, "root-ro\ntmp-rw\n");
  EXPECT_THAT(result.err, HasSubstr("Read-only file system"));
}

TEST_F(IsolationTest, BindMountsFromTheHost) {
  std::string host_dir = dir_ + "/host";
  ASSERT_EQ(mkdir(host_dir.c_str(), 0755), 0);
  WriteFile(host_dir + "/hello.txt", "from the host\n");
  WriteFile(dir_ + "/single", "one file\n");
  oci::v1::Spec spec = BaseSpec({"sh", "-c",
                                 "cat /mnt/host/hello.txt /deep/new/file; touch /mnt/host/y || "
                                 "echo bind-ro; grep -c ' /mnt/host ' /proc/self/mountinfo"});
  oci::v1::Mount* bind = spec.add_mounts();
  bind->set_destination("/mnt/host");
  bind->set_type("bind");
  bind->set_source(host_dir);
  for (const char* option : {"rbind", "ro", "nosuid", "nodev"}) bind->add_options(option);
  oci::v1::Mount* file = spec.add_mounts();
  file->set_destination("/deep/new/file");  // parents and the file are created
  file->set_source(dir_ + "/single");
  file->add_options("bind");
  RunResult result = MustRun(spec);
  EXPECT_EQ(result.out, "from the host\none file\nbind-ro\n1\n");
  struct stat st;
  EXPECT_NE(stat((host_dir + "/y").c_str(), &st), 0);
}

TEST_F(IsolationTest, UserNamespaceWithMappings) {
  oci::v1::Spec spec =
      BaseSpec({"sh", "-c",
                "cat /proc/self/uid_map /proc/self/gid_map; id -u; echo > /dev/null && echo ok"});
  spec.mutable_linux()->add_namespaces()->set_type("user");
  for (auto* maps : {spec.mutable_linux()->mutable_uid_mappings(),
                     spec.mutable_linux()->mutable_gid_mappings()}) {
    oci::v1::IdMapping* m = maps->Add();
    m->set_container_id(0);
    m->set_host_id(100000);
    m->set_size(65536);
  }
  RunResult result = MustRun(spec);
  std::vector<std::string> lines = absl::StrSplit(result.out, '\n', absl::SkipEmpty());
  ASSERT_EQ(lines.size(), 4u) << result.out << result.err;
  EXPECT_THAT(lines[0], ::testing::MatchesRegex(" *0 *100000 *65536"));
  EXPECT_THAT(lines[1], ::testing::MatchesRegex(" *0 *100000 *65536"));
  EXPECT_EQ(lines[2], "0");
  EXPECT_EQ(lines[3], "ok");
}

TEST_F(IsolationTest, ExecIntoUserNamespace) {
  oci::v1::Spec spec = BaseSpec({"sleep", "100"});
  spec.mutable_linux()->add_namespaces()->set_type("user");
  for (auto* maps : {spec.mutable_linux()->mutable_uid_mappings(),
                     spec.mutable_linux()->mutable_gid_mappings()}) {
    oci::v1::IdMapping* m = maps->Add();
    m->set_container_id(0);
    m->set_host_id(200000);
    m->set_size(65536);
  }
  absl::StatusOr<std::unique_ptr<Container>> c = Container::Create("userns", spec, Options());
  ASSERT_TRUE(c.ok()) << c.status();
  ASSERT_TRUE((*c)->Start().ok());
  int out[2];
  ASSERT_EQ(pipe2(out, O_CLOEXEC), 0);
  UniqueFd out_read(out[0]), out_write(out[1]);
  oci::v1::Process process;
  for (const char* arg : {"sh", "-c", "id -u; cat /proc/self/uid_map; hostname"}) {
    process.add_args(arg);
  }
  process.mutable_user()->set_uid(1000);
  absl::StatusOr<ExecResult> exec = (*c)->Exec(process, {-1, out_write.get(), -1});
  out_write.reset();
  ASSERT_TRUE(exec.ok()) << exec.status();
  std::string text = ReadAll(out_read.get(), absl::Seconds(10));
  int status = WaitForExit(exec->pid, absl::Seconds(10));
  (*c)->OnExit(exec->pid, status);
  EXPECT_EQ(WEXITSTATUS(status), 0);
  std::vector<std::string> lines = absl::StrSplit(text, '\n', absl::SkipEmpty());
  ASSERT_EQ(lines.size(), 3u) << text;
  EXPECT_EQ(lines[0], "1000");
  EXPECT_THAT(lines[1], ::testing::MatchesRegex(" *0 *200000 *65536"));
  EXPECT_EQ(lines[2], "kapsel-test");
  ASSERT_TRUE((*c)->Destroy().ok());
  status = WaitForExit((*c)->init_pid(), absl::Seconds(10));
  EXPECT_TRUE(WIFSIGNALED(status));
}

TEST_F(IsolationTest, SymlinkMountDestinationsStayInTheRootfs) {
  // /escape -> /../../../../../../etc: resolved inside the rootfs, it is the rootfs's /etc.
  ASSERT_EQ(symlink("/../../../../../../etc", (rootfs_ + "/escape").c_str()), 0);
  // /dangling -> ../../../../tmp/<outside>: its target does not exist inside the rootfs.
  std::string outside = dir_ + "/outside";
  ASSERT_EQ(mkdir(outside.c_str(), 0755), 0);
  ASSERT_EQ(symlink(("../../../../../../.." + outside).c_str(), (rootfs_ + "/dangling").c_str()),
            0);
  std::string name = absl::StrCat("kapsel-escape-test-", getpid());
  oci::v1::Spec spec = BaseSpec({"sh", "-c", "grep -c ' /etc/" + name + " ' /proc/self/mountinfo"});
  oci::v1::Mount* mount = spec.add_mounts();
  mount->set_destination("/escape/" + name);
  mount->set_type("tmpfs");
  mount->set_source("tmpfs");
  RunResult result = MustRun(spec);
  EXPECT_EQ(result.out, "1\n");
  struct stat st;
  EXPECT_NE(stat(("/etc/" + name).c_str(), &st), 0) << "created on the host";
  EXPECT_EQ(stat((rootfs_ + "/etc/" + name).c_str(), &st), 0);

  oci::v1::Spec dangling = BaseSpec({"true"});
  oci::v1::Mount* bad = dangling.add_mounts();
  bad->set_destination("/dangling/sub");
  bad->set_type("tmpfs");
  bad->set_source("tmpfs");
  absl::Status status = CreateError(dangling);
  EXPECT_THAT(status.message(), HasSubstr("/dangling/sub"));
  EXPECT_TRUE(std::filesystem::is_empty(outside)) << "created outside the rootfs";
}

TEST_F(IsolationTest, DeviceRules) {
  // Deny-all plus two allow rules; the default devices (here /dev/full) stay usable as with runc,
  // and anything else is denied (mknod of /dev/kmsg's numbers).
  oci::v1::Spec spec =
      BaseSpec({"sh", "-c",
                "echo x > /dev/null && echo null-ok; head -c 1 /dev/full | wc -c; "
                "mknod /dev/kmsg2 c 1 11 || echo mknod-denied; head -c 1 /dev/zero | wc -c"});
  auto* devices = spec.mutable_linux()->mutable_resources()->mutable_devices();
  oci::v1::DeviceCgroup* deny = devices->Add();
  deny->set_allow(false);
  deny->set_access("rwm");
  for (int minor : {3, 5}) {  // null, zero
    oci::v1::DeviceCgroup* allow = devices->Add();
    allow->set_allow(true);
    allow->set_type("c");
    allow->set_major(1);
    allow->set_minor(minor);
    allow->set_access("rwm");
  }
  RunResult result = MustRun(spec);
  EXPECT_EQ(result.out, "null-ok\n1\nmknod-denied\n1\n");
  EXPECT_THAT(result.err, HasSubstr("Operation not permitted"));
}

TEST_F(IsolationTest, PrivilegedDeviceRulesAllowEveryDevice) {
  // What `ctr run --privileged` sends: deny all, then allow all ("a *:* rwm"); the default
  // devices are appended after them. Any device may then be created.
  oci::v1::Spec spec = BaseSpec({"sh", "-c", "mknod /dev/kmsg2 c 1 11 && echo mknod-ok"});
  auto* devices = spec.mutable_linux()->mutable_resources()->mutable_devices();
  oci::v1::DeviceCgroup* deny = devices->Add();
  deny->set_access("rwm");
  oci::v1::DeviceCgroup* allow = devices->Add();
  allow->set_allow(true);
  allow->set_access("rwm");
  EXPECT_EQ(MustRun(spec).out, "mknod-ok\n");
}

TEST_F(IsolationTest, NamespacedSysctl) {
  oci::v1::Spec spec =
      BaseSpec({"sh", "-c", "cat /proc/sys/net/ipv4/ip_forward /proc/sys/kernel/msgmax"});
  (*spec.mutable_linux()->mutable_sysctl())["net.ipv4.ip_forward"] = "1";
  (*spec.mutable_linux()->mutable_sysctl())["kernel.msgmax"] = "4242";
  EXPECT_EQ(MustRun(spec).out, "1\n4242\n");
}

TEST_F(IsolationTest, NewNetworkNamespaceHasItsLoopbackUp) {
  // No CNI runs inside a microVM's container namespaces: the agent brings lo up itself.
  oci::v1::Spec spec = BaseSpec({"sh", "-c", "ls /sys/class/net; cat /sys/class/net/lo/flags"});
  bool has_network = false;
  for (const oci::v1::Namespace& ns : spec.linux().namespaces()) {
    has_network |= ns.type() == "network";
  }
  ASSERT_TRUE(has_network) << "the base spec should have a new network namespace";
  // 0x9: IFF_UP | IFF_LOOPBACK.
  EXPECT_EQ(MustRun(spec).out, "lo\n0x9\n");
}

TEST_F(IsolationTest, UnsupportedAndInvalidSpecsAreErrors) {
  struct Case {
    std::string expected;
    std::function<void(oci::v1::Spec&)> edit;
  };
  std::vector<Case> cases = {
      {"hooks", [](oci::v1::Spec& s) { s.mutable_hooks()->add_prestart()->set_path("/bin/x"); }},
      {"process.apparmorProfile",
       [](oci::v1::Spec& s) { s.mutable_process()->set_apparmor_profile("p"); }},
      {"process.selinuxLabel",
       [](oci::v1::Spec& s) { s.mutable_process()->set_selinux_label("l"); }},
      {"process.scheduler",
       [](oci::v1::Spec& s) { s.mutable_process()->mutable_scheduler()->set_policy("x"); }},
      {"process.ioPriority",
       [](oci::v1::Spec& s) { s.mutable_process()->mutable_io_priority()->set_class_("x"); }},
      {"linux.intelRdt",
       [](oci::v1::Spec& s) { s.mutable_linux()->mutable_intel_rdt()->set_clos_id("x"); }},
      {"linux.personality",
       [](oci::v1::Spec& s) { s.mutable_linux()->mutable_personality()->set_domain("x"); }},
      {"linux.timeOffsets",
       [](oci::v1::Spec& s) { (*s.mutable_linux()->mutable_time_offsets())["boottime"]; }},
      {"linux.resources.hugepageLimits",
       [](oci::v1::Spec& s) {
         s.mutable_linux()->mutable_resources()->add_hugepage_limits()->set_page_size("2MB");
       }},
      {"linux.resources.memory.kernel",
       [](oci::v1::Spec& s) {
         s.mutable_linux()->mutable_resources()->mutable_memory()->set_kernel(1);
       }},
      {"uidMappings/gidMappings (idmapped mounts)",
       [](oci::v1::Spec& s) { s.mutable_mounts(0)->add_uid_mappings()->set_size(1); }},
      {"mount option \"rro\"", [](oci::v1::Spec& s) { s.mutable_mounts(0)->add_options("rro"); }},
      {"unknown type \"RLIMIT_FOO\"",
       [](oci::v1::Spec& s) { s.mutable_process()->add_rlimits()->set_type("RLIMIT_FOO"); }},
      {"unknown capability \"CAP_FLY\"",
       [](oci::v1::Spec& s) {
         s.mutable_process()->mutable_capabilities()->add_bounding("CAP_FLY");
       }},
      {"kernel.panic is not namespaced",
       [](oci::v1::Spec& s) { (*s.mutable_linux()->mutable_sysctl())["kernel.panic"] = "1"; }},
      {"unknown action \"SCMP_ACT_EXPLODE\"",
       [](oci::v1::Spec& s) {
         s.mutable_linux()->mutable_seccomp()->set_default_action("SCMP_ACT_EXPLODE");
       }},
      {"unknown argument operator",
       [](oci::v1::Spec& s) {
         oci::v1::Seccomp* seccomp = s.mutable_linux()->mutable_seccomp();
         seccomp->set_default_action("SCMP_ACT_ALLOW");
         oci::v1::SeccompSyscall* rule = seccomp->add_syscalls();
         rule->add_names("read");
         rule->set_action("SCMP_ACT_ERRNO");
         rule->add_args()->set_op("SCMP_CMP_SOMETIMES");
       }},
      {"unknown flag",
       [](oci::v1::Spec& s) {
         s.mutable_linux()->mutable_seccomp()->set_default_action("SCMP_ACT_ALLOW");
         s.mutable_linux()->mutable_seccomp()->add_flags("SECCOMP_FILTER_FLAG_MAGIC");
       }},
      {"time namespace",
       [](oci::v1::Spec& s) { s.mutable_linux()->add_namespaces()->set_type("time"); }},
      {"new mount namespace",
       [](oci::v1::Spec& s) { s.mutable_linux()->mutable_namespaces()->DeleteSubrange(1, 1); }},
      {"hostname needs a uts namespace",
       [](oci::v1::Spec& s) { s.mutable_linux()->mutable_namespaces()->DeleteSubrange(2, 1); }},
      {"process.args is empty", [](oci::v1::Spec& s) { s.mutable_process()->clear_args(); }},
      {"linux.resources.devices[0]: unknown type",
       [](oci::v1::Spec& s) {
         s.mutable_linux()->mutable_resources()->add_devices()->set_type("z");
       }},
  };
  for (const Case& c : cases) {
    oci::v1::Spec spec = BaseSpec({"true"});
    c.edit(spec);
    absl::Status status = CreateError(spec);
    EXPECT_THAT(status.message(), HasSubstr(c.expected)) << status;
    EXPECT_NE(status.code(), absl::StatusCode::kOk);
  }
}

}  // namespace
}  // namespace kapsel::agent::testing
