#include "vmm/arch/x86_64/mptable.h"

#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"
#include "vmm/arch/x86_64/layout.h"

namespace kapsel::vmm::x86 {
namespace {

#pragma pack(push, 1)
struct MpFloatingPointer {
  char signature[4];  // "_MP_"
  uint32_t config_table;
  uint8_t length;  // in 16-byte units
  uint8_t spec_revision;
  uint8_t checksum;
  uint8_t features[5];
};
struct MpConfigHeader {
  char signature[4];  // "PCMP"
  uint16_t length;    // header + entries
  uint8_t spec_revision;
  uint8_t checksum;
  char oem_id[8];
  char product_id[12];
  uint32_t oem_table;
  uint16_t oem_table_size;
  uint16_t entry_count;
  uint32_t lapic_address;
  uint16_t extended_length;
  uint8_t extended_checksum;
  uint8_t reserved;
};
struct MpProcessor {
  uint8_t type;  // 0
  uint8_t apic_id;
  uint8_t apic_version;
  uint8_t flags;  // bit 0 enabled, bit 1 bootstrap processor
  uint32_t signature;
  uint32_t feature_flags;
  uint32_t reserved[2];
};
struct MpBus {
  uint8_t type;  // 1
  uint8_t bus_id;
  char bus_type[6];
};
struct MpIoapic {
  uint8_t type;  // 2
  uint8_t apic_id;
  uint8_t apic_version;
  uint8_t flags;  // bit 0 enabled
  uint32_t address;
};
struct MpInterrupt {
  uint8_t type;            // 3: I/O interrupt, 4: local interrupt
  uint8_t interrupt_type;  // 0 INT, 1 NMI, 3 ExtINT
  uint16_t flags;          // 0: polarity and trigger conform to the bus (ISA: edge, active high)
  uint8_t source_bus;
  uint8_t source_irq;
  uint8_t dest_apic;
  uint8_t dest_pin;
};
#pragma pack(pop)

static_assert(sizeof(MpFloatingPointer) == 16);
static_assert(sizeof(MpConfigHeader) == 44);
static_assert(sizeof(MpProcessor) == 20);
static_assert(sizeof(MpBus) == 8 && sizeof(MpIoapic) == 8 && sizeof(MpInterrupt) == 8);

constexpr uint8_t kApicVersion = 0x14;
constexpr uint8_t kIoapicVersion = 0x11;
constexpr uint8_t kIsaBus = 0;
constexpr uint32_t kIoapicPins = 24;

uint8_t Checksum(const uint8_t* data, size_t size) {
  uint8_t sum = 0;
  for (size_t i = 0; i < size; ++i) sum += data[i];
  return static_cast<uint8_t>(-sum);
}

template <typename T>
void Append(std::vector<uint8_t>& out, const T& value) {
  const auto* bytes = reinterpret_cast<const uint8_t*>(&value);
  out.insert(out.end(), bytes, bytes + sizeof(T));
}

}  // namespace

absl::Status WriteMpTable(const GuestMemory& memory, uint32_t num_vcpus) {
  if (num_vcpus == 0 || num_vcpus > 254) {
    return absl::InvalidArgumentError(
        absl::StrCat("MP table: ", num_vcpus, " vCPUs (want 1..254)"));
  }
  const uint8_t ioapic_id = IoapicId(num_vcpus);
  std::vector<uint8_t> entries;
  uint16_t count = 0;
  for (uint32_t cpu = 0; cpu < num_vcpus; ++cpu, ++count) {
    MpProcessor p{};
    p.apic_id = static_cast<uint8_t>(cpu);
    p.apic_version = kApicVersion;
    p.flags = 1 | (cpu == 0 ? 2 : 0);
    p.signature = 0x600;                    // family 6
    p.feature_flags = (1 << 0) | (1 << 9);  // FPU, APIC
    Append(entries, p);
  }
  MpBus bus{1, kIsaBus, {'I', 'S', 'A', ' ', ' ', ' '}};
  Append(entries, bus);
  ++count;
  MpIoapic ioapic{2, ioapic_id, kIoapicVersion, 1, static_cast<uint32_t>(kIoapicAddress)};
  Append(entries, ioapic);
  ++count;
  for (uint32_t irq = 0; irq < kIoapicPins; ++irq, ++count) {
    MpInterrupt i{
        3, 0, 0, kIsaBus, static_cast<uint8_t>(irq), ioapic_id, static_cast<uint8_t>(irq)};
    Append(entries, i);
  }
  MpInterrupt extint{4, 3, 0, kIsaBus, 0, 0xff, 0};  // LINT0 of every CPU: ExtINT
  MpInterrupt nmi{4, 1, 0, kIsaBus, 0, 0xff, 1};     // LINT1 of every CPU: NMI
  Append(entries, extint);
  Append(entries, nmi);
  count += 2;

  const uint64_t header_address = kEbdaStart + sizeof(MpFloatingPointer);
  MpConfigHeader header{};
  std::memcpy(header.signature, "PCMP", 4);
  header.length = static_cast<uint16_t>(sizeof(MpConfigHeader) + entries.size());
  header.spec_revision = 4;
  std::memcpy(header.oem_id, "KAPSEL  ", 8);
  std::memcpy(header.product_id, "MICROVM     ", 12);
  header.entry_count = count;
  header.lapic_address = static_cast<uint32_t>(kLapicAddress);
  std::vector<uint8_t> table;
  Append(table, header);
  table.insert(table.end(), entries.begin(), entries.end());
  table[offsetof(MpConfigHeader, checksum)] = Checksum(table.data(), table.size());
  if (header_address + table.size() > 0xa0000) {
    return absl::InvalidArgumentError("MP table: too many vCPUs for the EBDA");
  }

  MpFloatingPointer pointer{};
  std::memcpy(pointer.signature, "_MP_", 4);
  pointer.config_table = static_cast<uint32_t>(header_address);
  pointer.length = 1;
  pointer.spec_revision = 4;
  pointer.checksum = Checksum(reinterpret_cast<const uint8_t*>(&pointer), sizeof(pointer));

  absl::Status status = memory.WriteObj(kEbdaStart, pointer);
  if (!status.ok()) return status;
  return memory.Write(header_address, table.data(), table.size());
}

}  // namespace kapsel::vmm::x86
