#include "shim/config.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace kapsel::shim {
namespace {

using ::testing::HasSubstr;

TEST(ConfigTest, DefaultsFindTheBuildNextToTheBinary) {
  const Config config = DefaultConfig();
  EXPECT_THAT(config.kernel, ::testing::EndsWith("/guest/vmlinux"));
  EXPECT_THAT(config.image, ::testing::EndsWith("/guest/agent-root.img"));
  EXPECT_THAT(config.initrd, ::testing::EndsWith("/guest/agent-initramfs.cpio"));
  EXPECT_THAT(config.vmm, ::testing::EndsWith("/kapsel-vmm"));
  EXPECT_EQ(config.virtiofsd, "/usr/lib/qemu/virtiofsd");
  EXPECT_EQ(config.vcpus, 1u);
  EXPECT_EQ(config.memory_mib, 256u);
  EXPECT_EQ(config.max_vcpus, 32u);
  EXPECT_EQ(config.max_memory_mib, 65536u);
  EXPECT_TRUE(config.free_page_reporting);
  EXPECT_TRUE(config.share_kernel_text);
  EXPECT_TRUE(config.jail);
}

TEST(ConfigTest, ParsesEveryKey) {
  absl::StatusOr<Config> config = ParseConfig(R"(
[vm]
kernel = "/k/vmlinux"
image = "/k/root.img"
initrd = "/k/initrd"
vmm = "/k/vmm"
vcpus = 2
memory_mib = 512
max_vcpus = 4
max_memory_mib = 2048
boot_timeout_seconds = 9
kernel_cmdline = "console=ttyS0"
free_page_reporting = false
share_kernel_text = false
jail = false
[virtiofsd]
path = "/v/virtiofsd"
cache = "none"
[shim]
log_level = "debug"
state_dir = "/run/k2"
)",
                                              "test.toml");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->kernel, "/k/vmlinux");
  EXPECT_EQ(config->image, "/k/root.img");
  EXPECT_EQ(config->initrd, "/k/initrd");
  EXPECT_EQ(config->vmm, "/k/vmm");
  EXPECT_EQ(config->vcpus, 2u);
  EXPECT_EQ(config->memory_mib, 512u);
  EXPECT_EQ(config->max_vcpus, 4u);
  EXPECT_EQ(config->max_memory_mib, 2048u);
  EXPECT_EQ(config->boot_timeout, absl::Seconds(9));
  EXPECT_EQ(config->kernel_cmdline, "console=ttyS0");
  EXPECT_FALSE(config->free_page_reporting);
  EXPECT_FALSE(config->share_kernel_text);
  EXPECT_FALSE(config->jail);
  EXPECT_EQ(config->virtiofsd, "/v/virtiofsd");
  EXPECT_EQ(config->virtiofsd_cache, "none");
  EXPECT_EQ(config->log_level, "debug");
  EXPECT_EQ(config->state_dir, "/run/k2");
}

TEST(ConfigTest, ErrorsNameTheKey) {
  EXPECT_THAT(ParseConfig("[vm]\nmemroy_mib = 5\n", "f.toml").status().message(),
              HasSubstr("unknown key 'vm.memroy_mib'"));
  EXPECT_THAT(ParseConfig("[vm]\nvcpus = 0\n", "f.toml").status().message(),
              HasSubstr("vm.vcpus must be an integer from 1 to 32"));
  EXPECT_THAT(ParseConfig("[vm]\nkernel = 3\n", "f.toml").status().message(),
              HasSubstr("vm.kernel must be a string"));
  EXPECT_THAT(ParseConfig("[vm]\nkernel = \"rel/path\"\n", "f.toml").status().message(),
              HasSubstr("absolute"));
  EXPECT_THAT(ParseConfig("[vm]\nimage = \"rel.img\"\n", "f.toml").status().message(),
              HasSubstr("absolute, not 'rel.img'"));
  // An empty image means: boot the initrd.
  EXPECT_TRUE(ParseConfig("[vm]\nimage = \"\"\n", "f.toml").ok());
  EXPECT_THAT(ParseConfig("[virtiofsd]\ncache = \"sometimes\"\n", "f.toml").status().message(),
              HasSubstr("virtiofsd.cache"));
  EXPECT_THAT(ParseConfig("[vm]\nmax_vcpus = 33\n", "f.toml").status().message(),
              HasSubstr("vm.max_vcpus must be an integer from 1 to 32"));
  EXPECT_THAT(ParseConfig("[vm]\nvcpus = 4\nmax_vcpus = 2\n", "f.toml").status().message(),
              HasSubstr("vm.vcpus (4) is above vm.max_vcpus (2)"));
  EXPECT_THAT(ParseConfig("[vm]\nmax_memory_mib = 128\n", "f.toml").status().message(),
              HasSubstr("vm.memory_mib (256) is above vm.max_memory_mib (128)"));
  EXPECT_THAT(ParseConfig("[vm]\nfree_page_reporting = 1\n", "f.toml").status().message(),
              HasSubstr("vm.free_page_reporting must be true or false"));
  EXPECT_THAT(ParseConfig("[nope]\n", "f.toml").status().message(), HasSubstr("'nope'"));
  EXPECT_THAT(ParseConfig("[vm\n", "f.toml").status().message(), HasSubstr("f.toml"));
}

TEST(ConfigTest, MissingFiles) {
  // An explicit file must exist; the default one may be absent.
  EXPECT_TRUE(absl::IsNotFound(LoadConfig("/no/such/kapsel.toml").status()));
}

}  // namespace
}  // namespace kapsel::shim
