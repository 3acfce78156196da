// The command line and JSON config reader: flags, defaults, and errors that name what was wrong.
#include "vmm/config.h"

#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <initializer_list>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/unique_fd.h"
#include "gtest/gtest.h"

namespace kapsel::vmm {
namespace {

// Runs ParseCommandLine on a writable argv built from `args` (argv[0] is added).
absl::StatusOr<v1::VmConfig> Parse(std::initializer_list<std::string> args, bool* help = nullptr) {
  std::vector<std::string> strings = {"kapsel-vmm"};
  strings.insert(strings.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (std::string& s : strings) argv.push_back(s.data());
  argv.push_back(nullptr);
  bool ignored = false;
  return ParseCommandLine(static_cast<int>(strings.size()), argv.data(),
                          help != nullptr ? help : &ignored);
}

// An error whose message names `needle`.
void ExpectError(const absl::StatusOr<v1::VmConfig>& result, const std::string& needle) {
  ASSERT_FALSE(result.ok()) << "expected an error naming " << needle;
  EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument) << result.status();
  EXPECT_NE(result.status().message().find(needle), std::string::npos)
      << "'" << result.status().message() << "' does not name " << needle;
}

TEST(ParseCommandLineTest, AllFlags) {
  bool help = true;
  auto config =
      Parse({"--kernel", "/k/vmlinux", "--initrd", "/k/initrd.cpio", "--cmdline",
             "console=ttyS0 quiet", "--mem", "512", "--vcpus", "4", "--disk", "a.img", "--disk",
             "b.img,ro", "--disk=c.img,rw", "--console", "off", "--allow-pvm", "--private-kernel"},
            &help);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_FALSE(help);
  EXPECT_EQ(config->kernel(), "/k/vmlinux");
  EXPECT_EQ(config->initrd(), "/k/initrd.cpio");
  EXPECT_EQ(config->cmdline(), "console=ttyS0 quiet");
  EXPECT_EQ(config->mem_mib(), 512u);
  EXPECT_EQ(config->vcpus(), 4u);
  ASSERT_EQ(config->disks_size(), 3);
  EXPECT_EQ(config->disks(0).path(), "a.img");
  EXPECT_FALSE(config->disks(0).read_only());
  EXPECT_EQ(config->disks(1).path(), "b.img");
  EXPECT_TRUE(config->disks(1).read_only());
  EXPECT_EQ(config->disks(2).path(), "c.img");
  EXPECT_FALSE(config->disks(2).read_only());
  EXPECT_EQ(config->console(), "off");
  EXPECT_TRUE(config->allow_pvm());
  EXPECT_TRUE(config->private_kernel());
}

TEST(ParseCommandLineTest, EqualsFormAndLastValueWins) {
  auto config = Parse({"--kernel=k", "--mem=64", "--mem", "128", "--console=/tmp/console.log"});
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->kernel(), "k");
  EXPECT_EQ(config->mem_mib(), 128u);
  EXPECT_EQ(config->console(), "/tmp/console.log");
}

TEST(ParseCommandLineTest, Defaults) {
  auto config = Parse({"--kernel", "k"});
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->mem_mib(), kDefaultMemMib);
  EXPECT_EQ(config->mem_mib(), 256u);
  EXPECT_EQ(config->vcpus(), 1u);
  EXPECT_EQ(config->cmdline(), kDefaultCmdline);
  EXPECT_EQ(config->console(), "stdout");
  EXPECT_EQ(config->initrd(), "");
  EXPECT_EQ(config->disks_size(), 0);
  EXPECT_FALSE(config->allow_pvm());
  EXPECT_FALSE(config->private_kernel());
}

TEST(ParseCommandLineTest, DiskOptions) {
  ExpectError(Parse({"--kernel", "k", "--disk", "a.img,rx"}), "--disk");
  ExpectError(Parse({"--kernel", "k", "--disk", "a.img,rx"}), "rx");
  ExpectError(Parse({"--kernel", "k", "--disk", ",ro"}), "--disk");
  ExpectError(Parse({"--kernel", "k", "--disk", ""}), "--disk");
  auto config = Parse({"--kernel", "k", "--disk", "a.img,rw,ro"});
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_TRUE(config->disks(0).read_only());
  ExpectError(Parse({"--kernel", "k", "--disk", "1", "--disk", "2", "--disk", "3", "--disk", "4",
                     "--disk",   "5", "--disk", "6", "--disk", "7", "--disk", "8", "--disk", "9"}),
              "--disk");
}

TEST(ParseCommandLineTest, Vsock) {
  auto config = Parse({"--kernel", "k", "--vsock", "3,/tmp/v.sock"});
  ASSERT_TRUE(config.ok()) << config.status();
  ASSERT_TRUE(config->has_vsock());
  EXPECT_EQ(config->vsock().guest_cid(), 3u);
  EXPECT_EQ(config->vsock().uds_path(), "/tmp/v.sock");
  EXPECT_FALSE(Parse({"--kernel", "k"})->has_vsock());
  // A path with commas keeps them.
  EXPECT_EQ(Parse({"--kernel", "k", "--vsock=42,/tmp/a,b"})->vsock().uds_path(), "/tmp/a,b");
  ExpectError(Parse({"--kernel", "k", "--vsock", "2,/tmp/v.sock"}), "--vsock");
  ExpectError(Parse({"--kernel", "k", "--vsock", "0,/tmp/v.sock"}), "--vsock");
  ExpectError(Parse({"--kernel", "k", "--vsock", "4294967295,/tmp/v.sock"}), "--vsock");
  ExpectError(Parse({"--kernel", "k", "--vsock", "x,/tmp/v.sock"}), "--vsock");
  ExpectError(Parse({"--kernel", "k", "--vsock", "-3,/tmp/v.sock"}), "--vsock");
  ExpectError(Parse({"--kernel", "k", "--vsock", "3"}), "--vsock");
  ExpectError(Parse({"--kernel", "k", "--vsock", "3,"}), "--vsock");
  ExpectError(Parse({"--kernel", "k", "--vsock", "3,/nonexistent-dir/v.sock"}), "--vsock");
  ExpectError(Parse({"--kernel", "k", "--vsock", "3,/tmp/" + std::string(100, 'x')}), "--vsock");
}

TEST(ParseCommandLineTest, Jail) {
  EXPECT_FALSE(Parse({"--kernel", "k"})->jail());
  auto config = Parse({"--kernel", "k", "--jail", "--vsock", "3,/tmp/v.sock"});
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_TRUE(config->jail());
  // The jail keeps the vsock socket's directory at its own path: a relative one cannot be found.
  ExpectError(Parse({"--kernel", "k", "--jail", "--vsock", "3,v.sock"}),
              "--vsock v.sock: with --jail the path must be absolute");
  EXPECT_TRUE(Parse({"--kernel", "k", "--vsock", "3,v.sock"}).ok());
}

TEST(ParseCommandLineTest, Pmem) {
  EXPECT_FALSE(Parse({"--kernel", "k"})->has_pmem());
  auto config = Parse({"--kernel", "k", "--pmem", "/i/root.img"});
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->pmem().path(), "/i/root.img");
  EXPECT_FALSE(config->pmem().root());
  config = Parse({"--kernel", "k", "--pmem=/i/root.img,root"});
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->pmem().path(), "/i/root.img");
  EXPECT_TRUE(config->pmem().root());
  ExpectError(Parse({"--kernel", "k", "--pmem", "/i/root.img,rw"}), "unknown option 'rw'");
  ExpectError(Parse({"--kernel", "k", "--pmem", ",root"}), "--pmem: empty path");
  ExpectError(Parse({"--kernel", "k", "--pmem", ""}), "--pmem: empty path");
  ExpectError(Parse({"--kernel", "k", "--initrd", "i", "--pmem", "/i/root.img,root"}), "--initrd");
  EXPECT_TRUE(Parse({"--kernel", "k", "--initrd", "i", "--pmem", "/i/data.img"}).ok());
}

TEST(ParseCommandLineTest, MissingKernel) {
  ExpectError(Parse({}), "--kernel");
  ExpectError(Parse({"--mem", "128"}), "--kernel");
}

TEST(ParseCommandLineTest, Memory) {
  ExpectError(Parse({"--kernel", "k", "--mem", "lots"}), "--mem");
  ExpectError(Parse({"--kernel", "k", "--mem", "12M"}), "--mem");
  ExpectError(Parse({"--kernel", "k", "--mem", "-1"}), "--mem");
  ExpectError(Parse({"--kernel", "k", "--mem", ""}), "--mem");
  ExpectError(Parse({"--kernel", "k", "--mem", "99999999999"}), "--mem");
  ExpectError(Parse({"--kernel", "k", "--mem", "31"}), "--mem");
  ExpectError(Parse({"--kernel", "k", "--mem", "262145"}), "--mem");
  EXPECT_EQ(Parse({"--kernel", "k", "--mem", "32"})->mem_mib(), 32u);
  EXPECT_EQ(Parse({"--kernel", "k", "--mem", "262144"})->mem_mib(), 262144u);
  EXPECT_EQ(Parse({"--kernel", "k", "--mem", "0"})->mem_mib(), kDefaultMemMib);
}

TEST(ParseCommandLineTest, Vcpus) {
  EXPECT_EQ(Parse({"--kernel", "k", "--vcpus", "0"})->vcpus(), 1u);
  EXPECT_EQ(Parse({"--kernel", "k", "--vcpus", "32"})->vcpus(), 32u);
  ExpectError(Parse({"--kernel", "k", "--vcpus", "33"}), "--vcpus");
  ExpectError(Parse({"--kernel", "k", "--vcpus", "two"}), "--vcpus");
}

TEST(ParseCommandLineTest, UnknownFlagsAndStrayArguments) {
  ExpectError(Parse({"--kernel", "k", "--memory", "128"}), "--memory");
  ExpectError(Parse({"--kernel", "k", "-x"}), "-x");
  ExpectError(Parse({"--kernel", "k", "extra"}), "extra");
  ExpectError(Parse({"stray", "--kernel", "k"}), "stray");
  ExpectError(Parse({"--kernel", "k", "--allow-pvm=yes"}), "--allow-pvm");
}

TEST(ParseCommandLineTest, MissingValueNamesTheFlag) {
  for (const char* flag :
       {"--kernel", "--initrd", "--cmdline", "--mem", "--vcpus", "--disk", "--console"}) {
    auto result = Parse({"--kernel", "k", flag});
    ExpectError(result, flag);
    if (!result.ok()) {
      EXPECT_NE(result.status().message().find("value"), std::string::npos)
          << result.status().message();
    }
  }
}

TEST(ParseCommandLineTest, EachCallStartsAfresh) {
  // getopt keeps state between calls; a failed parse must not leak into the next one.
  ExpectError(Parse({"--kernel", "k", "-xy"}), "-x");
  auto config = Parse({"--kernel", "k2", "--vcpus", "2"});
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->kernel(), "k2");
  ExpectError(Parse({"--kernel", "k", "--bogus"}), "--bogus");
  bool help = false;
  ASSERT_TRUE(Parse({"--help"}, &help).ok());
  EXPECT_TRUE(help);
  config = Parse({"--kernel", "k3"}, &help);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_FALSE(help);
  EXPECT_EQ(config->kernel(), "k3");
}

TEST(ParseCommandLineTest, Help) {
  bool help = false;
  auto config = Parse({"--help"}, &help);
  EXPECT_TRUE(help);
  EXPECT_TRUE(config.ok());  // no --kernel needed
  help = false;
  Parse({"--kernel", "k", "--mem", "5", "--help"}, &help).IgnoreError();
  help = false;
  Parse({"--help", "--mem", "lots"}, &help).IgnoreError();
  EXPECT_TRUE(help);
  EXPECT_NE(Usage().find("--kernel"), std::string::npos);
  EXPECT_NE(Usage().find("--disk"), std::string::npos);
}

// A temporary directory for config files, removed with everything in it.
class ConfigFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char dir_template[] = "/tmp/kapsel-config-test-XXXXXX";
    ASSERT_NE(mkdtemp(dir_template), nullptr);
    dir_ = dir_template;
  }
  void TearDown() override {
    for (const std::string& file : files_) unlink(file.c_str());
    if (!dir_.empty()) {
      EXPECT_EQ(rmdir(dir_.c_str()), 0);
    }
  }
  std::string Write(const std::string& name, const std::string& text) {
    const std::string path = dir_ + "/" + name;
    files_.push_back(path);
    std::ofstream out(path);
    out << text;
    EXPECT_TRUE(out.good());
    return path;
  }
  std::string dir_;
  std::vector<std::string> files_;
};

TEST_F(ConfigFileTest, SnakeCaseFields) {
  const std::string path = Write("vm.json", R"({
    "kernel": "/boot/vmlinux",
    "initrd": "/boot/initrd",
    "cmdline": "console=ttyS0",
    "mem_mib": 1024,
    "vcpus": 2,
    "disks": [{"path": "root.img", "read_only": true}, {"path": "data.img"}],
    "console": "off",
    "allow_pvm": true
  })");
  auto config = Parse({"--config", path});
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->kernel(), "/boot/vmlinux");
  EXPECT_EQ(config->initrd(), "/boot/initrd");
  EXPECT_EQ(config->cmdline(), "console=ttyS0");
  EXPECT_EQ(config->mem_mib(), 1024u);
  EXPECT_EQ(config->vcpus(), 2u);
  ASSERT_EQ(config->disks_size(), 2);
  EXPECT_TRUE(config->disks(0).read_only());
  EXPECT_FALSE(config->disks(1).read_only());
  EXPECT_EQ(config->console(), "off");
  EXPECT_TRUE(config->allow_pvm());
}

TEST_F(ConfigFileTest, LowerCamelCaseFieldsAndDefaults) {
  const std::string path = Write("vm.json", R"({"kernel": "k", "memMib": 64, "allowPvm": true,
                           "disks": [{"path": "d", "readOnly": true}]})");
  auto config = Parse({"--config=" + path});
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->mem_mib(), 64u);
  EXPECT_TRUE(config->allow_pvm());
  EXPECT_TRUE(config->disks(0).read_only());
  EXPECT_EQ(config->vcpus(), 1u);
  EXPECT_EQ(config->cmdline(), kDefaultCmdline);
  EXPECT_EQ(config->console(), "stdout");
}

TEST_F(ConfigFileTest, FlagsOverrideAndAddToTheFile) {
  const std::string path =
      Write("vm.json", R"({"kernel": "k", "mem_mib": 64, "disks": [{"path": "a"}]})");
  // --config after the flags: still read first, so the flags win.
  auto config = Parse({"--mem", "128", "--disk", "b,ro", "--config", path});
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->kernel(), "k");
  EXPECT_EQ(config->mem_mib(), 128u);
  ASSERT_EQ(config->disks_size(), 2);
  EXPECT_EQ(config->disks(0).path(), "a");
  EXPECT_EQ(config->disks(1).path(), "b");
  EXPECT_TRUE(config->disks(1).read_only());
}

TEST(ParseCommandLineTest, FsDevices) {
  auto config = Parse({"--kernel", "k", "--fs", "rootfs,/run/vfs.sock", "--fs=shared,/tmp/a,b"});
  ASSERT_TRUE(config.ok()) << config.status();
  ASSERT_EQ(config->fs_size(), 2);
  EXPECT_EQ(config->fs(0).tag(), "rootfs");
  EXPECT_EQ(config->fs(0).socket_path(), "/run/vfs.sock");
  EXPECT_EQ(config->fs(1).tag(), "shared");
  EXPECT_EQ(config->fs(1).socket_path(), "/tmp/a,b");  // the first comma splits
  EXPECT_EQ(Parse({"--kernel", "k"})->fs_size(), 0);
  // 36 bytes is the longest tag.
  EXPECT_TRUE(Parse({"--kernel", "k", "--fs", std::string(36, 't') + ",/s"}).ok());
  ExpectError(Parse({"--kernel", "k", "--fs", std::string(37, 't') + ",/s"}), "--fs");
  ExpectError(Parse({"--kernel", "k", "--fs", ",/s"}), "--fs");
  ExpectError(Parse({"--kernel", "k", "--fs", "tag"}), "--fs");
  ExpectError(Parse({"--kernel", "k", "--fs", "tag,"}), "--fs");
  ExpectError(Parse({"--kernel", "k", "--fs", "tag,/" + std::string(107, 's')}), "--fs");
  ExpectError(Parse({"--kernel", "k", "--fs", "a,/s1", "--fs", "a,/s2"}), "used twice");
  ExpectError(Parse({"--kernel", "k", "--fs"}), "--fs");
}

TEST_F(ConfigFileTest, FsDevicesFromJson) {
  auto config = Parse({"--config", Write("fs.json", R"({"kernel": "k", "fs": [{"tag": "root",
                       "socket_path": "/run/a.sock"}]})"),
                       "--fs", "more,/run/b.sock"});
  ASSERT_TRUE(config.ok()) << config.status();
  ASSERT_EQ(config->fs_size(), 2);
  EXPECT_EQ(config->fs(0).tag(), "root");
  EXPECT_EQ(config->fs(1).socket_path(), "/run/b.sock");
  ExpectError(Parse({"--config", Write("fs-bad.json", R"({"kernel": "k", "fs": [{"tag": ""}]})")}),
              "--fs");
}

TEST(ParseCommandLineTest, NetDevices) {
  // An open fd (the flag parser checks only that; the builder checks that it is a tap).
  UniqueFd open_fd(open("/dev/null", O_RDONLY | O_CLOEXEC));
  ASSERT_GE(open_fd.get(), 3);
  const std::string fd = std::to_string(open_fd.get());
  auto config = Parse({"--kernel", "k", "--net", "fd=" + fd + ",mac=52:54:00:AB:cd:01,mtu=9000",
                       "--net=tap=ktap0,mac=52:54:00:00:00:02"});
  ASSERT_TRUE(config.ok()) << config.status();
  ASSERT_EQ(config->net_size(), 2);
  EXPECT_EQ(config->net(0).tap_fd(), open_fd.get());
  EXPECT_EQ(config->net(0).tap_name(), "");
  EXPECT_EQ(config->net(0).mac(), "52:54:00:AB:cd:01");
  EXPECT_EQ(config->net(0).mtu(), 9000u);
  EXPECT_EQ(config->net(1).tap_fd(), 0);
  EXPECT_EQ(config->net(1).tap_name(), "ktap0");
  EXPECT_EQ(config->net(1).mtu(), 0u);
  EXPECT_EQ(Parse({"--kernel", "k"})->net_size(), 0);
  // 15 bytes is the longest interface name.
  EXPECT_TRUE(
      Parse({"--kernel", "k", "--net", "tap=" + std::string(15, 't') + ",mac=02:00:00:00:00:01"})
          .ok());

  const std::string good_mac = ",mac=02:00:00:00:00:01";
  ExpectError(Parse({"--kernel", "k", "--net", "tap=" + std::string(16, 't') + good_mac}),
              "--net tap=tttttttttttttttt,mac=02:00:00:00:00:01: the tap name is longer than 15");
  ExpectError(Parse({"--kernel", "k", "--net", "tap=a/b" + good_mac}), "'a/b' is not an interface");
  ExpectError(Parse({"--kernel", "k", "--net", "tap=" + good_mac}), "empty tap name");
  ExpectError(Parse({"--kernel", "k", "--net", "fd=" + fd + ",tap=x" + good_mac}),
              "exactly one of");
  ExpectError(Parse({"--kernel", "k", "--net", "mac=02:00:00:00:00:01"}), "exactly one of");
  ExpectError(Parse({"--kernel", "k", "--net", "tap=x"}), "--net tap=x: mac=MAC is required");
  ExpectError(Parse({"--kernel", "k", "--net", "fd=987,mac=02:00:00:00:00:01"}),
              "--net fd=987,mac=02:00:00:00:00:01: fd 987 is not open");
  ExpectError(Parse({"--kernel", "k", "--net", "fd=1" + good_mac}), "fd 1 is standard I/O");
  ExpectError(Parse({"--kernel", "k", "--net", "fd=x" + good_mac}),
              "'x' is not a file descriptor number");
  ExpectError(Parse({"--kernel", "k", "--net", "fd=-4" + good_mac}),
              "'-4' is not a file descriptor number");
  ExpectError(Parse({"--kernel", "k", "--net", "tap=x,mac=02:00:00:00:00"}),
              "--net tap=x,mac=02:00:00:00:00: MAC address '02:00:00:00:00' is not of the form");
  ExpectError(Parse({"--kernel", "k", "--net", "tap=x,mac=02:00:00:00:00:0g"}),
              "is not of the form");
  ExpectError(Parse({"--kernel", "k", "--net", "tap=x,mac=02:00:00:00:00:001"}),
              "is not of the form");
  ExpectError(Parse({"--kernel", "k", "--net", "tap=x,mac=01:00:5e:00:00:01"}), "multicast");
  ExpectError(Parse({"--kernel", "k", "--net", "tap=x,mac=00:00:00:00:00:00"}), "all zeros");
  ExpectError(Parse({"--kernel", "k", "--net", "tap=x" + good_mac + ",mtu=67"}),
              "MTU 67 out of range 68..65521");
  ExpectError(Parse({"--kernel", "k", "--net", "tap=x" + good_mac + ",mtu=65522"}), "MTU 65522");
  ExpectError(Parse({"--kernel", "k", "--net", "tap=x" + good_mac + ",mtu=big"}),
              "'big' is not an MTU");
  ExpectError(Parse({"--kernel", "k", "--net", "tap=x" + good_mac + ",speed=10"}),
              "unknown key 'speed'");
  ExpectError(Parse({"--kernel", "k", "--net", "tap=x" + good_mac + ",mac=02:00:00:00:00:03"}),
              "'mac' given twice");
  ExpectError(Parse({"--kernel", "k", "--net", "tap=x,mac"}), "'mac' is not KEY=VALUE");
  ExpectError(
      Parse({"--kernel", "k", "--net", "tap=x" + good_mac, "--net", "tap=x,mac=02:00:00:00:00:02"}),
      "the same tap is given twice");
  ExpectError(Parse({"--kernel", "k", "--net", "tap=x" + good_mac, "--net", "tap=y" + good_mac}),
              "the MAC address is used twice");
  ExpectError(Parse({"--kernel", "k", "--net", "tap=a,mac=02:00:00:00:00:01", "--net",
                     "tap=b,mac=02:00:00:00:00:02", "--net", "tap=c,mac=02:00:00:00:00:03", "--net",
                     "tap=d,mac=02:00:00:00:00:04", "--net", "tap=e,mac=02:00:00:00:00:05"}),
              "at most 4");
  ExpectError(Parse({"--kernel", "k", "--net"}), "--net");
}

TEST(ParseMacTest, Addresses) {
  absl::StatusOr<std::array<uint8_t, 6>> mac = ParseMac("52:54:00:aB:Cd:ef");
  ASSERT_TRUE(mac.ok()) << mac.status();
  EXPECT_EQ(*mac, (std::array<uint8_t, 6>{0x52, 0x54, 0x00, 0xab, 0xcd, 0xef}));
  EXPECT_FALSE(ParseMac("").ok());
  EXPECT_FALSE(ParseMac("52:54:00:ab:cd:ef:").ok());
  EXPECT_FALSE(ParseMac("52-54-00-ab-cd-ef").ok());
  EXPECT_FALSE(ParseMac("ff:ff:ff:ff:ff:ff").ok());
}

TEST_F(ConfigFileTest, NetDevicesFromJson) {
  auto config = Parse({"--config", Write("net.json", R"({"kernel": "k", "net": [{"tap_name":
                       "tap0", "mac": "02:00:00:00:00:01", "mtu": 1400}]})")});
  ASSERT_TRUE(config.ok()) << config.status();
  ASSERT_EQ(config->net_size(), 1);
  EXPECT_EQ(config->net(0).tap_name(), "tap0");
  EXPECT_EQ(config->net(0).mtu(), 1400u);
  // No fd and no name: fd 0 is standard input.
  ExpectError(Parse({"--config", Write("net-bad.json", R"({"kernel": "k", "net": [{"mac":
              "02:00:00:00:00:01"}]})")}),
              "--net fd=0,mac=02:00:00:00:00:01: want an inherited tap fd of 3 or more");
}

TEST_F(ConfigFileTest, FileValuesAreValidated) {
  ExpectError(Parse({"--config", Write("big.json", R"({"kernel": "k", "vcpus": 64})")}), "--vcpus");
  ExpectError(Parse({"--config", Write("nokernel.json", R"({"mem_mib": 64})")}), "--kernel");
}

TEST_F(ConfigFileTest, BadFilesAreErrorsNamingTheFile) {
  const std::string unknown = Write("unknown.json", R"({"kernel": "k", "memory": 64})");
  ExpectError(Parse({"--config", unknown}), unknown);
  const std::string broken = Write("broken.json", R"({"kernel": )");
  ExpectError(Parse({"--config", broken}), broken);
  const std::string wrong_type = Write("type.json", R"({"kernel": "k", "vcpus": "many"})");
  ExpectError(Parse({"--config", wrong_type}), wrong_type);
  const std::string missing = dir_ + "/missing.json";
  ExpectError(Parse({"--config", missing}), missing);
  ExpectError(Parse({"--config", dir_ + "/"}), "--config");
  ExpectError(ReadConfigFile(missing), missing);
  // --config without a file.
  ExpectError(Parse({"--kernel", "k", "--config"}), "--config");
}

}  // namespace
}  // namespace kapsel::vmm
