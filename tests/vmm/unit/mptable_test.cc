// The MP table, parsed back the way a guest reads it (Intel MultiProcessor Specification 1.4).
#include "vmm/arch/x86_64/mptable.h"

#include <cstdint>
#include <cstring>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "vmm/arch/x86_64/e820.h"
#include "vmm/arch/x86_64/layout.h"

namespace kapsel::vmm::x86 {
namespace {

constexpr uint64_t kMiB = 1ULL << 20;

uint8_t ByteSum(const uint8_t* data, size_t size) {
  uint8_t sum = 0;
  for (size_t i = 0; i < size; ++i) sum += data[i];
  return sum;
}

template <typename T>
T Field(const uint8_t* data, size_t offset) {
  T value;
  std::memcpy(&value, data + offset, sizeof(T));
  return value;
}

class MpTableTest : public ::testing::TestWithParam<uint32_t> {
 protected:
  void SetUp() override {
    auto memory = GuestMemory::Create(RamRanges(64 * kMiB));
    ASSERT_TRUE(memory.ok()) << memory.status();
    memory_ = *std::move(memory);
    std::memset(memory_->regions()[0].host + kEbdaStart, 0xee, 0x100000 - kEbdaStart);
  }
  const uint8_t* At(uint64_t addr) { return memory_->regions()[0].host + addr; }
  std::unique_ptr<GuestMemory> memory_;
};

TEST_P(MpTableTest, GuestCanParseIt) {
  const uint32_t num_vcpus = GetParam();
  ASSERT_TRUE(WriteMpTable(*memory_, num_vcpus).ok());

  // The floating pointer structure: 16 bytes at the start of the EBDA.
  const uint8_t* fp = At(kEbdaStart);
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(fp), 4), "_MP_");
  EXPECT_EQ(fp[8], 1);  // length in 16-byte units
  EXPECT_EQ(fp[9], 4);  // spec revision 1.4
  EXPECT_EQ(ByteSum(fp, 16), 0);
  EXPECT_EQ(fp[11], 0);  // feature byte 1: 0 means a configuration table is present
  const uint32_t table_address = Field<uint32_t>(fp, 4);
  ASSERT_NE(table_address, 0u);

  // The configuration table header.
  const uint8_t* table = At(table_address);
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(table), 4), "PCMP");
  const uint16_t length = Field<uint16_t>(table, 4);
  EXPECT_EQ(table[6], 4);
  ASSERT_GE(length, 44);
  EXPECT_EQ(ByteSum(table, length), 0);
  EXPECT_EQ(Field<uint32_t>(table, 36), kLapicAddress);
  EXPECT_EQ(Field<uint16_t>(table, 40), 0);  // no extended entries
  // It all lies in the EBDA, which the e820 map reserves.
  EXPECT_GE(table_address, kEbdaStart + 16);
  EXPECT_LE(table_address + length, 0xa0000u);

  // The entries, walked by type.
  const uint16_t entry_count = Field<uint16_t>(table, 34);
  size_t offset = 44;
  uint16_t seen = 0;
  std::vector<std::pair<uint8_t, uint8_t>> processors;  // (apic id, flags)
  std::vector<uint8_t> ioapic_ids;
  std::map<uint8_t, uint8_t> irq_to_pin;
  std::set<uint8_t> ioapic_destinations;
  int buses = 0;
  int local_interrupts = 0;
  while (offset < length) {
    const uint8_t type = table[offset];
    switch (type) {
      case 0:  // processor
        ASSERT_LE(offset + 20, length);
        processors.emplace_back(table[offset + 1], table[offset + 3]);
        offset += 20;
        break;
      case 1:  // bus
        EXPECT_EQ(std::string(reinterpret_cast<const char*>(table + offset + 2), 3), "ISA");
        ++buses;
        offset += 8;
        break;
      case 2:  // I/O APIC
        ioapic_ids.push_back(table[offset + 1]);
        EXPECT_EQ(table[offset + 3] & 1, 1);  // enabled
        EXPECT_EQ(Field<uint32_t>(table, offset + 4), kIoapicAddress);
        offset += 8;
        break;
      case 3:                             // I/O interrupt assignment
        EXPECT_EQ(table[offset + 1], 0);  // INT
        EXPECT_EQ(irq_to_pin.count(table[offset + 5]), 0u) << "IRQ listed twice";
        irq_to_pin[table[offset + 5]] = table[offset + 7];
        ioapic_destinations.insert(table[offset + 6]);
        offset += 8;
        break;
      case 4:  // local interrupt assignment
        ++local_interrupts;
        offset += 8;
        break;
      default:
        FAIL() << "unknown entry type " << int{type} << " at offset " << offset;
    }
    ++seen;
  }
  EXPECT_EQ(offset, length);
  EXPECT_EQ(seen, entry_count);

  ASSERT_EQ(processors.size(), num_vcpus);
  for (uint32_t i = 0; i < num_vcpus; ++i) {
    EXPECT_EQ(processors[i].first, i);
    EXPECT_EQ(processors[i].second & 1, 1) << "CPU " << i << " enabled";
    EXPECT_EQ((processors[i].second & 2) != 0, i == 0) << "BSP flag of CPU " << i;
  }
  EXPECT_EQ(buses, 1);
  ASSERT_EQ(ioapic_ids.size(), 1u);
  EXPECT_EQ(ioapic_ids[0], IoapicId(num_vcpus));
  EXPECT_GE(ioapic_ids[0], num_vcpus);  // distinct from every CPU's APIC id
  EXPECT_EQ(irq_to_pin.size(), 24u);
  for (const auto& [irq, pin] : irq_to_pin) EXPECT_EQ(irq, pin);
  EXPECT_EQ(ioapic_destinations, std::set<uint8_t>{IoapicId(num_vcpus)});
  EXPECT_EQ(local_interrupts, 2);
}

INSTANTIATE_TEST_SUITE_P(VcpuCounts, MpTableTest, ::testing::Values(1u, 2u, 8u, 32u));

TEST_F(MpTableTest, RejectsBadVcpuCounts) {
  EXPECT_EQ(WriteMpTable(*memory_, 0).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(WriteMpTable(*memory_, 255).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(WriteMpTable(*memory_, 1000).code(), absl::StatusCode::kInvalidArgument);
  // The table must also fit in the 1 KiB EBDA.
  EXPECT_EQ(WriteMpTable(*memory_, 254).code(), absl::StatusCode::kInvalidArgument);
  // Nothing was written.
  EXPECT_EQ(*At(kEbdaStart), 0xee);
  EXPECT_EQ(*At(kEbdaStart + 16), 0xee);
}

TEST(MpTableMemoryTest, FailsCleanlyWithoutBaseMemory) {
  auto memory = GuestMemory::Create({{kMiB, 4 * kMiB}});
  ASSERT_TRUE(memory.ok()) << memory.status();
  EXPECT_FALSE(WriteMpTable(**memory, 1).ok());
}

}  // namespace
}  // namespace kapsel::vmm::x86
