// CpuidForVcpu on a synthetic "supported CPUID" list: per-vCPU APIC ids and topology;
// AnnounceTscDeadlineTimer.
#include <linux/kvm.h>

#include <cstdint>
#include <vector>

#include "gtest/gtest.h"
#include "vmm/arch/x86_64/cpu_setup.h"

namespace kapsel::vmm::x86 {
namespace {

kvm_cpuid_entry2 Entry(uint32_t function, uint32_t index, uint32_t eax, uint32_t ebx, uint32_t ecx,
                       uint32_t edx) {
  kvm_cpuid_entry2 e{};
  e.function = function;
  e.index = index;
  e.flags = function == 0xb ? KVM_CPUID_FLAG_SIGNIFCANT_INDEX : 0;
  e.eax = eax;
  e.ebx = ebx;
  e.ecx = ecx;
  e.edx = edx;
  return e;
}

std::vector<kvm_cpuid_entry2> Supported() {
  return {
      Entry(0, 0, 0xd, 0x756e6547, 0x6c65746e, 0x49656e69),
      // Leaf 1 as a host might report it: APIC id 7, 16 logical CPUs, CLFLUSH 64 bytes.
      Entry(1, 0, 0x000906ea, 0x07100800, 0x7ffafbff, 0xbfebfbff & ~(1u << 28)),
      Entry(4, 0, 0x1c004121, 0x01c0003f, 0x3f, 0),
      Entry(0xb, 0, 1, 2, 0x100, 7),
      Entry(0xb, 1, 4, 16, 0x201, 7),
      Entry(0xb, 2, 0, 0, 2, 7),
      Entry(0x80000001, 0, 0, 0, 0x121, 0x2c100800),
  };
}

const kvm_cpuid_entry2* Find(const std::vector<kvm_cpuid_entry2>& entries, uint32_t function,
                             uint32_t index = 0) {
  for (const kvm_cpuid_entry2& e : entries) {
    if (e.function == function && e.index == index) return &e;
  }
  return nullptr;
}

TEST(CpuidForVcpuTest, Leaf1CarriesTheApicIdAndCount) {
  const std::vector<kvm_cpuid_entry2> supported = Supported();
  const std::vector<kvm_cpuid_entry2> cpuid = CpuidForVcpu(supported, 3, 8);
  ASSERT_EQ(cpuid.size(), supported.size());
  const kvm_cpuid_entry2* leaf1 = Find(cpuid, 1);
  ASSERT_NE(leaf1, nullptr);
  EXPECT_EQ(leaf1->ebx >> 24, 3u);                   // initial APIC id
  EXPECT_EQ((leaf1->ebx >> 16) & 0xff, 8u);          // logical processors
  EXPECT_EQ((leaf1->ebx >> 8) & 0xff, 8u);           // CLFLUSH line size in 8-byte units
  EXPECT_TRUE(leaf1->ecx & (1u << 31));              // hypervisor
  EXPECT_EQ(leaf1->ecx & ~(1u << 31), 0x7ffafbffu);  // the other features are kept
  EXPECT_TRUE(leaf1->edx & (1u << 28));              // HTT: the count is meaningful
  EXPECT_EQ(leaf1->eax, 0x000906eau);
  // The input is a copy: unchanged.
  EXPECT_EQ(Find(supported, 1)->ebx, 0x07100800u);
}

TEST(CpuidForVcpuTest, EachVcpuGetsItsOwnId) {
  for (uint32_t id = 0; id < 4; ++id) {
    const std::vector<kvm_cpuid_entry2> cpuid = CpuidForVcpu(Supported(), id, 4);
    EXPECT_EQ(Find(cpuid, 1)->ebx >> 24, id);
    for (uint32_t index = 0; index < 3; ++index) {
      const kvm_cpuid_entry2* leaf = Find(cpuid, 0xb, index);
      ASSERT_NE(leaf, nullptr);
      EXPECT_EQ(leaf->edx, id) << "x2APIC id in leaf 0xb." << index;
    }
  }
}

TEST(CpuidForVcpuTest, ExtendedTopology) {
  const std::vector<kvm_cpuid_entry2> cpuid = CpuidForVcpu(Supported(), 2, 5);
  const kvm_cpuid_entry2* smt = Find(cpuid, 0xb, 0);
  EXPECT_EQ(smt->ebx, 1u);                // one thread per core
  EXPECT_EQ((smt->ecx >> 8) & 0xff, 1u);  // level type SMT
  EXPECT_EQ(smt->ecx & 0xff, 0u);
  EXPECT_EQ(smt->eax & 0x1f, 0u);
  const kvm_cpuid_entry2* core = Find(cpuid, 0xb, 1);
  EXPECT_EQ(core->ebx, 5u);                // five cores
  EXPECT_EQ((core->ecx >> 8) & 0xff, 2u);  // level type core
  EXPECT_EQ(core->ecx & 0xff, 1u);
  EXPECT_EQ(core->eax & 0x1f, 3u);  // ids need 3 bits
  EXPECT_GE(1u << (core->eax & 0x1f), 5u);
  const kvm_cpuid_entry2* invalid = Find(cpuid, 0xb, 2);
  EXPECT_EQ((invalid->ecx >> 8) & 0xff, 0u);  // end of the list
  EXPECT_EQ(invalid->ebx, 0u);
}

TEST(CpuidForVcpuTest, SingleVcpu) {
  const std::vector<kvm_cpuid_entry2> cpuid = CpuidForVcpu(Supported(), 0, 1);
  const kvm_cpuid_entry2* leaf1 = Find(cpuid, 1);
  EXPECT_EQ(leaf1->ebx >> 24, 0u);
  EXPECT_EQ((leaf1->ebx >> 16) & 0xff, 1u);
  EXPECT_TRUE(leaf1->ecx & (1u << 31));
  EXPECT_EQ(Find(cpuid, 0xb, 1)->eax & 0x1f, 0u);
  EXPECT_EQ(Find(cpuid, 0xb, 1)->ebx, 1u);
}

TEST(CpuidForVcpuTest, OtherLeavesAreUntouched) {
  const std::vector<kvm_cpuid_entry2> supported = Supported();
  const std::vector<kvm_cpuid_entry2> cpuid = CpuidForVcpu(supported, 1, 2);
  for (uint32_t function : {0u, 4u, 0x80000001u}) {
    const kvm_cpuid_entry2* before = Find(supported, function);
    const kvm_cpuid_entry2* after = Find(cpuid, function);
    ASSERT_NE(after, nullptr);
    EXPECT_EQ(after->eax, before->eax) << function;
    EXPECT_EQ(after->ebx, before->ebx) << function;
    EXPECT_EQ(after->ecx, before->ecx) << function;
    EXPECT_EQ(after->edx, before->edx) << function;
  }
}

TEST(AnnounceTscDeadlineTimerTest, SetsLeaf1Ecx24Only) {
  std::vector<kvm_cpuid_entry2> cpuid = {Entry(0, 0, 0xd, 1, 2, 3),
                                         Entry(1, 0, 4, 5, 0x80000001, 6)};
  AnnounceTscDeadlineTimer(cpuid);
  EXPECT_EQ(cpuid[1].ecx, 0x80000001u | (1u << 24));
  EXPECT_EQ(cpuid[1].eax, 4u);
  EXPECT_EQ(cpuid[1].edx, 6u);
  EXPECT_EQ(cpuid[0].ecx, 2u);
  // The per-vCPU adjustment keeps it.
  EXPECT_TRUE(Find(CpuidForVcpu(cpuid, 1, 2), 1)->ecx & (1u << 24));
}

}  // namespace
}  // namespace kapsel::vmm::x86
