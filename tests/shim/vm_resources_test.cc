#include "shim/vm_resources.h"

#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace kapsel::shim {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

google::protobuf::Map<std::string, std::string> Annotations(
    const std::vector<std::pair<std::string, std::string>>& entries) {
  google::protobuf::Map<std::string, std::string> map;
  for (const auto& [key, value] : entries) map[key] = value;
  return map;
}

Config TestConfig() {
  Config config;
  config.vcpus = 1;
  config.memory_mib = 256;
  config.max_vcpus = 8;
  config.max_memory_mib = 4096;
  return config;
}

TEST(VmResourcesTest, ConfigWithoutAnnotations) {
  absl::StatusOr<VmResources> size = SizeVm(
      TestConfig(), Annotations({{"io.kubernetes.cri.container-type", "sandbox"}, {"x", "y"}}));
  ASSERT_TRUE(size.ok()) << size.status();
  EXPECT_EQ(size->vcpus, 1u);
  EXPECT_EQ(size->memory_mib, 256u);
  EXPECT_EQ(size->ToString(), "1 vCPU (config), 256 MiB (config)");
}

TEST(VmResourcesTest, KapselAnnotationsSetTheSize) {
  absl::StatusOr<VmResources> size =
      SizeVm(TestConfig(), Annotations({{kVcpusAnnotation, "2"}, {kMemoryMibAnnotation, "384"}}));
  ASSERT_TRUE(size.ok()) << size.status();
  EXPECT_EQ(size->vcpus, 2u);
  EXPECT_EQ(size->memory_mib, 384u);
  EXPECT_EQ(
      size->ToString(),
      "2 vCPUs (annotation io.kapsel.vm.vcpus), 384 MiB (annotation io.kapsel.vm.memory_mib)");

  // Each on its own; the other stays the config's.
  size = SizeVm(TestConfig(), Annotations({{kMemoryMibAnnotation, "64"}}));
  ASSERT_TRUE(size.ok()) << size.status();
  EXPECT_EQ(size->vcpus, 1u);
  EXPECT_EQ(size->memory_mib, 64u);
  size = SizeVm(TestConfig(), Annotations({{kVcpusAnnotation, "8"}}));
  ASSERT_TRUE(size.ok()) << size.status();
  EXPECT_EQ(size->vcpus, 8u);
  EXPECT_EQ(size->memory_mib, 256u);
}

TEST(VmResourcesTest, BadKapselAnnotationsNameTheAnnotationAndValue) {
  struct Case {
    const char* key;
    const char* value;
    const char* want;
  };
  for (const Case& c : std::vector<Case>{
           {kMemoryMibAnnotation, "abc", "an integer from 64 to 4096 (MiB)"},
           {kMemoryMibAnnotation, "63", "an integer from 64 to 4096 (MiB)"},
           {kMemoryMibAnnotation, "4097", "from 64 to 4096"},  // above [vm] max_memory_mib
           {kMemoryMibAnnotation, "", "from 64 to 4096"},
           {kMemoryMibAnnotation, " 384", "from 64 to 4096"},
           {kMemoryMibAnnotation, "+384", "from 64 to 4096"},
           {kMemoryMibAnnotation, "384Mi", "from 64 to 4096"},
           {kMemoryMibAnnotation, "99999999999999999999999", "from 64 to 4096"},
           {kVcpusAnnotation, "0", "an integer from 1 to 8"},
           {kVcpusAnnotation, "9", "an integer from 1 to 8"},  // above [vm] max_vcpus
           {kVcpusAnnotation, "-1", "an integer from 1 to 8"},
           {kVcpusAnnotation, "1.5", "an integer from 1 to 8"},
       }) {
    absl::StatusOr<VmResources> size = SizeVm(TestConfig(), Annotations({{c.key, c.value}}));
    ASSERT_FALSE(size.ok()) << c.key << "=" << c.value;
    EXPECT_EQ(size.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(size.status().message(),
                HasSubstr(std::string("annotation ") + c.key + "=\"" + c.value + "\": want"));
    EXPECT_THAT(size.status().message(), HasSubstr(c.want)) << c.key << "=" << c.value;
  }
}

TEST(VmResourcesTest, UnknownKapselVmAnnotationIsAnError) {
  absl::StatusOr<VmResources> size =
      SizeVm(TestConfig(), Annotations({{"io.kapsel.vm.memory", "384"}}));
  ASSERT_FALSE(size.ok());
  EXPECT_EQ(size.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(size.status().message(), HasSubstr("unknown annotation io.kapsel.vm.memory "));
  // Other io.kapsel.* annotations are not the sizing's business.
  EXPECT_TRUE(SizeVm(TestConfig(), Annotations({{"io.kapsel.other", "x"}})).ok());
}

// containerd >= 1.7's sandbox sizing (Kata's static sandbox sizing): config + the pod's limits.
TEST(VmResourcesTest, CriSandboxSizingAddsThePodsLimits) {
  absl::StatusOr<VmResources> size =
      SizeVm(TestConfig(), Annotations({{kCriSandboxMemoryAnnotation, "134217728"},  // 128 MiB
                                        {kCriSandboxCpuQuotaAnnotation, "220000"},
                                        {kCriSandboxCpuPeriodAnnotation, "100000"}}));
  ASSERT_TRUE(size.ok()) << size.status();
  EXPECT_EQ(size->vcpus, 1u + 3u);  // 2.2 CPUs, rounded up
  EXPECT_EQ(size->memory_mib, 256u + 128u);
  EXPECT_THAT(size->vcpus_source, HasSubstr("config 1 + pod 3"));
  EXPECT_THAT(size->memory_source, HasSubstr("config 256 + pod 128"));

  // Memory rounds up to whole MiB; an exact multiple of the period is not rounded.
  size = SizeVm(TestConfig(), Annotations({{kCriSandboxMemoryAnnotation, "1"},
                                           {kCriSandboxCpuQuotaAnnotation, "200000"},
                                           {kCriSandboxCpuPeriodAnnotation, "100000"}}));
  ASSERT_TRUE(size.ok()) << size.status();
  EXPECT_EQ(size->vcpus, 3u);
  EXPECT_EQ(size->memory_mib, 257u);
}

// A container alone in its VM (ctr run): its own limits are added like a pod's.
TEST(VmResourcesTest, ContainerLimitsAddToTheConfig) {
  oci::v1::Spec spec;
  spec.mutable_linux()->mutable_resources()->mutable_memory()->set_limit(512 * 1024 * 1024 + 1);
  spec.mutable_linux()->mutable_resources()->mutable_cpu()->set_quota(150000);
  spec.mutable_linux()->mutable_resources()->mutable_cpu()->set_period(100000);
  absl::StatusOr<VmResources> size = SizeVm(TestConfig(), spec.annotations(), OwnLimits(spec));
  ASSERT_TRUE(size.ok()) << size.status();
  EXPECT_EQ(size->memory_mib, 256u + 513u);  // rounded up to whole MiB
  EXPECT_EQ(size->vcpus, 1u + 2u);           // 1.5 CPUs, rounded up
  EXPECT_THAT(size->memory_source, HasSubstr("config 256 + container 513"));
  EXPECT_THAT(size->vcpus_source, HasSubstr("config 1 + container 2"));

  // Clamped to the maxima; an explicit annotation still wins.
  spec.mutable_linux()->mutable_resources()->mutable_memory()->set_limit(int64_t{1} << 40);
  (*spec.mutable_annotations())[kVcpusAnnotation] = "1";
  size = SizeVm(TestConfig(), spec.annotations(), OwnLimits(spec));
  ASSERT_TRUE(size.ok()) << size.status();
  EXPECT_EQ(size->memory_mib, TestConfig().max_memory_mib);
  EXPECT_EQ(size->vcpus, 1u);

  // No limits (-1 memory: unlimited; no quota) add nothing.
  oci::v1::Spec unlimited;
  unlimited.mutable_linux()->mutable_resources()->mutable_memory()->set_limit(-1);
  unlimited.mutable_linux()->mutable_resources()->mutable_cpu()->set_quota(-1);
  unlimited.mutable_linux()->mutable_resources()->mutable_cpu()->set_period(100000);
  size = SizeVm(TestConfig(), unlimited.annotations(), OwnLimits(unlimited));
  ASSERT_TRUE(size.ok()) << size.status();
  EXPECT_EQ(size->memory_mib, 256u);
  EXPECT_EQ(size->vcpus, 1u);
}

// A CRI pod's sandbox container: its pod's sums come in the annotations, its own spec is ignored.
TEST(VmResourcesTest, CriSandboxContainerLimitsAreNotAdded) {
  oci::v1::Spec spec;
  (*spec.mutable_annotations())[kCriContainerTypeAnnotation] = "sandbox";
  spec.mutable_linux()->mutable_resources()->mutable_memory()->set_limit(512 * 1024 * 1024);
  const ContainerLimits limits = OwnLimits(spec);
  EXPECT_EQ(limits.memory_bytes, 0);
  absl::StatusOr<VmResources> size = SizeVm(TestConfig(), spec.annotations(), limits);
  ASSERT_TRUE(size.ok()) << size.status();
  EXPECT_EQ(size->memory_mib, 256u);

  // With a pod sum, the pod's annotation counts, not the container's limit.
  (*spec.mutable_annotations())[kCriSandboxMemoryAnnotation] = "134217728";
  (*spec.mutable_annotations()).erase(kCriContainerTypeAnnotation);
  size = SizeVm(TestConfig(), spec.annotations(), OwnLimits(spec));
  ASSERT_TRUE(size.ok()) << size.status();
  EXPECT_EQ(size->memory_mib, 256u + 128u);
}

TEST(VmResourcesTest, CriSandboxSizingOfAnUnconstrainedPodAddsNothing) {
  for (const auto& annotations : {
           Annotations({{kCriSandboxMemoryAnnotation, "0"},
                        {kCriSandboxCpuQuotaAnnotation, "-1"},  // no quota
                        {kCriSandboxCpuPeriodAnnotation, "100000"}}),
           Annotations({{kCriSandboxMemoryAnnotation, "-1"},
                        {kCriSandboxCpuQuotaAnnotation, "100000"},
                        {kCriSandboxCpuPeriodAnnotation, "0"}}),
           Annotations({{kCriSandboxCpuQuotaAnnotation, "100000"}}),  // no period
       }) {
    absl::StatusOr<VmResources> size = SizeVm(TestConfig(), annotations);
    ASSERT_TRUE(size.ok()) << size.status();
    EXPECT_EQ(size->vcpus, 1u);
    EXPECT_EQ(size->memory_mib, 256u);
    EXPECT_EQ(size->vcpus_source, "config");
    EXPECT_EQ(size->memory_source, "config");
  }
}

TEST(VmResourcesTest, CriSandboxSizingIsClampedToTheMaxima) {
  absl::StatusOr<VmResources> size =
      SizeVm(TestConfig(), Annotations({{kCriSandboxMemoryAnnotation, "9223372036854775807"},
                                        {kCriSandboxCpuQuotaAnnotation, "9223372036854775807"},
                                        {kCriSandboxCpuPeriodAnnotation, "1"}}));
  ASSERT_TRUE(size.ok()) << size.status();
  EXPECT_EQ(size->vcpus, 8u);
  EXPECT_EQ(size->memory_mib, 4096u);
  EXPECT_THAT(size->vcpus_source, HasSubstr("clamped to the maximum 8"));
  EXPECT_THAT(size->memory_source, HasSubstr("clamped to the maximum 4096"));

  // Just at the maximum is not clamped.
  size = SizeVm(TestConfig(), Annotations({{kCriSandboxCpuQuotaAnnotation, "700000"},
                                           {kCriSandboxCpuPeriodAnnotation, "100000"}}));
  ASSERT_TRUE(size.ok()) << size.status();
  EXPECT_EQ(size->vcpus, 8u);
  EXPECT_THAT(size->vcpus_source, Not(HasSubstr("clamped")));
}

TEST(VmResourcesTest, KapselAnnotationsWinOverCriSandboxSizing) {
  absl::StatusOr<VmResources> size =
      SizeVm(TestConfig(), Annotations({{kCriSandboxMemoryAnnotation, "1073741824"},
                                        {kCriSandboxCpuQuotaAnnotation, "400000"},
                                        {kCriSandboxCpuPeriodAnnotation, "100000"},
                                        {kVcpusAnnotation, "2"}}));
  ASSERT_TRUE(size.ok()) << size.status();
  EXPECT_EQ(size->vcpus, 2u);
  EXPECT_EQ(size->vcpus_source, "annotation io.kapsel.vm.vcpus");
  EXPECT_EQ(size->memory_mib, 256u + 1024u);  // memory still from the pod's limit

  size = SizeVm(TestConfig(), Annotations({{kCriSandboxMemoryAnnotation, "1073741824"},
                                           {kMemoryMibAnnotation, "512"}}));
  ASSERT_TRUE(size.ok()) << size.status();
  EXPECT_EQ(size->memory_mib, 512u);
  EXPECT_EQ(size->vcpus, 1u);
}

TEST(VmResourcesTest, MalformedCriSandboxSizingIsAnError) {
  for (const auto& [key, value] : std::vector<std::pair<std::string, std::string>>{
           {kCriSandboxMemoryAnnotation, "1Gi"},
           {kCriSandboxCpuQuotaAnnotation, "x"},
           {kCriSandboxCpuPeriodAnnotation, "-100000"},
       }) {
    absl::StatusOr<VmResources> size = SizeVm(TestConfig(), Annotations({{key, value}}));
    ASSERT_FALSE(size.ok()) << key << "=" << value;
    EXPECT_EQ(size.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(size.status().message(),
                HasSubstr(absl::StrCat("annotation ", key, "=\"", value, "\"")));
  }
}

}  // namespace
}  // namespace kapsel::shim
