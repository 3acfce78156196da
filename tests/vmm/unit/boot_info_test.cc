// The guest's memory map (RamRanges, BuildE820), initrd placement and the boot information the
// kernel reads: boot_params for the 64-bit protocol, hvm_start_info for PVH.
#include "vmm/arch/x86_64/boot_info.h"

#include <asm/bootparam.h>
#include <asm/e820.h>

#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "gtest/gtest.h"
#include "vmm/arch/x86_64/e820.h"
#include "vmm/arch/x86_64/layout.h"

namespace kapsel::vmm::x86 {
namespace {

// Fields of the packed boot structures, by value: gtest binds its arguments to references, which
// must not point at misaligned fields.
template <typename T>
T Val(T value) {
  return value;
}

constexpr uint64_t kMiB = 1ULL << 20;
constexpr uint64_t kGiB = 1ULL << 30;
constexpr uint64_t kPage = 4096;

std::unique_ptr<GuestMemory> MakeMemory(uint64_t bytes) {
  auto memory = GuestMemory::Create(RamRanges(bytes));
  EXPECT_TRUE(memory.ok()) << memory.status();
  return memory.ok() ? *std::move(memory) : nullptr;
}

std::string ReadCString(const GuestMemory& memory, uint64_t addr, size_t max) {
  auto bytes = memory.Slice(addr, max);
  EXPECT_TRUE(bytes.ok());
  if (!bytes.ok()) return "";
  const char* text = reinterpret_cast<const char*>(bytes->data());
  return std::string(text, strnlen(text, max));
}

using E820Tuple = std::tuple<uint64_t, uint64_t, uint32_t>;
std::vector<E820Tuple> Tuples(const std::vector<E820Entry>& map) {
  std::vector<E820Tuple> out;
  for (const E820Entry& e : map) out.emplace_back(e.addr, e.size, e.type);
  return out;
}

TEST(RamRangesTest, BelowAndAboveTheMmioHole) {
  std::vector<GuestRange> ranges = RamRanges(256 * kMiB);
  ASSERT_EQ(ranges.size(), 1u);
  EXPECT_EQ(ranges[0].start, 0u);
  EXPECT_EQ(ranges[0].size, 256 * kMiB);

  ranges = RamRanges(3 * kGiB);
  ASSERT_EQ(ranges.size(), 1u);
  EXPECT_EQ(ranges[0].size, kMmioHoleStart);

  ranges = RamRanges(4 * kGiB);
  ASSERT_EQ(ranges.size(), 2u);
  EXPECT_EQ(ranges[0].start, 0u);
  EXPECT_EQ(ranges[0].size, kMmioHoleStart);
  EXPECT_EQ(ranges[1].start, kMmioHoleEnd);
  EXPECT_EQ(ranges[1].size, 4 * kGiB - kMmioHoleStart);
}

TEST(BuildE820Test, SmallGuest) {
  auto memory = MakeMemory(256 * kMiB);
  ASSERT_NE(memory, nullptr);
  const std::vector<E820Tuple> expected = {
      {0, kEbdaStart, E820_RAM},
      {kEbdaStart, 0x100000 - kEbdaStart, E820_RESERVED},
      {0x100000, 256 * kMiB - 0x100000, E820_RAM},
  };
  EXPECT_EQ(Tuples(BuildE820(*memory)), expected);
  EXPECT_EQ(kEbdaStart, 0x9fc00u);
}

TEST(BuildE820Test, GuestAbove4GiB) {
  auto memory = MakeMemory(4 * kGiB);
  ASSERT_NE(memory, nullptr);
  const std::vector<E820Tuple> expected = {
      {0, 0x9fc00, E820_RAM},
      {0x9fc00, 0x60400, E820_RESERVED},
      {0x100000, kMmioHoleStart - 0x100000, E820_RAM},
      {0x100000000, kGiB, E820_RAM},
  };
  EXPECT_EQ(Tuples(BuildE820(*memory)), expected);
}

TEST(BuildE820Test, PersistentMemoryGoesAboveRam) {
  // At the first 1 GiB boundary at or above 4 GiB and above RAM, as e820 type 12 after RAM.
  auto small = MakeMemory(256 * kMiB);
  ASSERT_NE(small, nullptr);
  EXPECT_EQ(PmemGuestAddress(*small), kMmioHoleEnd);
  auto large = MakeMemory(4 * kGiB + 2 * kMiB);  // high RAM ends at 5 GiB + 2 MiB
  ASSERT_NE(large, nullptr);
  EXPECT_EQ(PmemGuestAddress(*large), 6 * kGiB);
  const std::vector<E820Entry> pmem = {{kMmioHoleEnd, 4 * kMiB, E820_PRAM}};
  const std::vector<E820Tuple> expected = {
      {0, kEbdaStart, E820_RAM},
      {kEbdaStart, 0x100000 - kEbdaStart, E820_RESERVED},
      {0x100000, 256 * kMiB - 0x100000, E820_RAM},
      {kMmioHoleEnd, 4 * kMiB, 12},
  };
  EXPECT_EQ(Tuples(BuildE820(*small, pmem)), expected);
}

TEST(LoadInitrdTest, TopOfLowMemoryPageAligned) {
  auto memory = MakeMemory(256 * kMiB);
  ASSERT_NE(memory, nullptr);
  std::vector<uint8_t> initrd(10000);
  for (size_t i = 0; i < initrd.size(); ++i) initrd[i] = static_cast<uint8_t>(i * 13);
  auto range = LoadInitrd(initrd, *memory, 32 * kMiB);
  ASSERT_TRUE(range.ok()) << range.status();
  EXPECT_EQ(range->size, initrd.size());
  EXPECT_EQ(range->start % kPage, 0u);
  EXPECT_LE(range->start + range->size, 256 * kMiB);
  EXPECT_GT(range->start + range->size + kPage, 256 * kMiB);  // as high as alignment allows
  EXPECT_GE(range->start, 32 * kMiB);
  std::vector<uint8_t> back(initrd.size());
  ASSERT_TRUE(memory->Read(range->start, back.data(), back.size()).ok());
  EXPECT_EQ(back, initrd);
}

TEST(LoadInitrdTest, StaysBelowTheMmioHole) {
  auto memory = MakeMemory(4 * kGiB);
  ASSERT_NE(memory, nullptr);
  const std::vector<uint8_t> initrd(3 * kPage + 1, 0x42);
  auto range = LoadInitrd(initrd, *memory, 32 * kMiB);
  ASSERT_TRUE(range.ok()) << range.status();
  EXPECT_EQ(range->start, kMmioHoleStart - 4 * kPage);
  EXPECT_EQ(*memory->ReadObj<uint8_t>(range->start + 3 * kPage), 0x42);
}

TEST(LoadInitrdTest, MustNotOverlapTheKernel) {
  auto created = GuestMemory::Create({{0, 4 * kMiB}});
  ASSERT_TRUE(created.ok()) << created.status();
  const GuestMemory& memory = **created;
  // Exactly fits between the kernel's end and the end of memory.
  const std::vector<uint8_t> fits(2 * kMiB, 1);
  auto range = LoadInitrd(fits, memory, 2 * kMiB);
  ASSERT_TRUE(range.ok()) << range.status();
  EXPECT_EQ(range->start, 2 * kMiB);
  // One byte more moves it a page down, into the kernel.
  const std::vector<uint8_t> too_big(2 * kMiB + 1, 1);
  EXPECT_EQ(LoadInitrd(too_big, memory, 2 * kMiB).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(LoadInitrd(fits, memory, 2 * kMiB + 1).ok());
  // Larger than memory altogether.
  const std::vector<uint8_t> huge(5 * kMiB, 1);
  EXPECT_EQ(LoadInitrd(huge, memory, 0).status().code(), absl::StatusCode::kInvalidArgument);
}

// A bzImage's setup header as the loader returns it.
setup_header BzImageHeader() {
  setup_header header{};
  header.setup_sects = 0x1f;
  header.boot_flag = 0xaa55;
  header.header = 0x53726448;
  header.version = 0x020f;
  header.code32_start = 0x100000;
  header.initrd_addr_max = 0x7fffffff;
  header.kernel_alignment = 0x200000;
  header.relocatable_kernel = 1;
  header.min_alignment = 21;
  header.xloadflags = XLF_KERNEL_64 | XLF_CAN_BE_LOADED_ABOVE_4G;
  header.pref_address = 0x1000000;
  header.init_size = 0x13c0000;
  header.loadflags = LOADED_HIGH;
  return header;
}

class WriteBootInfoTest : public ::testing::Test {
 protected:
  void SetUp() override {
    memory_ = MakeMemory(256 * kMiB);
    ASSERT_NE(memory_, nullptr);
    // Garbage where the boot structures go: everything must be written, not assumed zero.
    std::memset(memory_->regions()[0].host, 0xcc, 0x30000);
  }
  boot_params ZeroPage() {
    auto params = memory_->ReadObj<boot_params>(kZeroPageAddress);
    EXPECT_TRUE(params.ok());
    return params.ok() ? *params : boot_params{};
  }
  std::unique_ptr<GuestMemory> memory_;
};

TEST_F(WriteBootInfoTest, ZeroPageForABzImage) {
  const LoadedKernel kernel{BootProtocol::kLinux64, 0x100200, 0x2400000, BzImageHeader()};
  const std::string cmdline = "console=ttyS0 root=/dev/vda";
  const GuestRange initrd{0xff00000, 12345};
  ASSERT_TRUE(WriteBootInfo(*memory_, kernel, cmdline, initrd).ok());

  EXPECT_EQ(ReadCString(*memory_, kCmdlineAddress, kCmdlineMaxSize), cmdline);
  const boot_params params = ZeroPage();
  const setup_header& hdr = params.hdr;
  EXPECT_EQ(Val(hdr.cmd_line_ptr), kCmdlineAddress);
  EXPECT_EQ(Val(params.ext_cmd_line_ptr), 0u);
  EXPECT_EQ(Val(hdr.ramdisk_image), 0xff00000u);
  EXPECT_EQ(Val(hdr.ramdisk_size), 12345u);
  EXPECT_EQ(Val(params.ext_ramdisk_image), 0u);
  EXPECT_EQ(Val(hdr.type_of_loader), 0xff);
  EXPECT_TRUE(hdr.loadflags & LOADED_HIGH);
  EXPECT_TRUE(hdr.loadflags & CAN_USE_HEAP);
  // The kernel's own fields are preserved.
  EXPECT_EQ(Val(hdr.header), 0x53726448u);
  EXPECT_EQ(Val(hdr.boot_flag), 0xaa55);
  EXPECT_EQ(Val(hdr.version), 0x020f);
  EXPECT_EQ(Val(hdr.setup_sects), 0x1f);
  EXPECT_EQ(Val(hdr.code32_start), 0x100000u);
  EXPECT_EQ(Val(hdr.kernel_alignment), 0x200000u);
  EXPECT_EQ(Val(hdr.relocatable_kernel), 1);
  EXPECT_EQ(Val(hdr.xloadflags), XLF_KERNEL_64 | XLF_CAN_BE_LOADED_ABOVE_4G);
  EXPECT_EQ(Val(hdr.pref_address), 0x1000000u);
  EXPECT_EQ(Val(hdr.init_size), 0x13c0000u);
  // Nothing left over from the garbage.
  EXPECT_EQ(Val(params.sentinel), 0);
  EXPECT_EQ(Val(params.acpi_rsdp_addr), 0u);
  EXPECT_EQ(Val(hdr.setup_data), 0u);

  const std::vector<E820Entry> map = BuildE820(*memory_);
  ASSERT_EQ(Val(params.e820_entries), map.size());
  for (size_t i = 0; i < map.size(); ++i) {
    EXPECT_EQ(Val(params.e820_table[i].addr), map[i].addr) << i;
    EXPECT_EQ(Val(params.e820_table[i].size), map[i].size) << i;
    EXPECT_EQ(Val(params.e820_table[i].type), map[i].type) << i;
  }
  EXPECT_EQ(Val(params.e820_table[2].addr), 0x100000u);
  EXPECT_EQ(Val(params.e820_table[2].type), E820_RAM);
}

TEST_F(WriteBootInfoTest, ZeroPageForAnElfKernelWithoutInitrd) {
  const LoadedKernel kernel{BootProtocol::kLinux64, 0x1000000, 0x2000000, std::nullopt};
  ASSERT_TRUE(WriteBootInfo(*memory_, kernel, "quiet", std::nullopt).ok());
  const boot_params params = ZeroPage();
  EXPECT_EQ(Val(params.hdr.header), 0x53726448u);
  EXPECT_EQ(Val(params.hdr.boot_flag), 0xaa55);
  EXPECT_EQ(Val(params.hdr.type_of_loader), 0xff);
  EXPECT_EQ(Val(params.hdr.cmd_line_ptr), kCmdlineAddress);
  EXPECT_EQ(Val(params.hdr.ramdisk_image), 0u);
  EXPECT_EQ(Val(params.hdr.ramdisk_size), 0u);
  EXPECT_EQ(Val(params.e820_entries), 3);
  EXPECT_EQ(ReadCString(*memory_, kCmdlineAddress, kCmdlineMaxSize), "quiet");
}

TEST(WriteBootInfoLargeTest, ZeroPageE820Above4GiB) {
  auto memory = MakeMemory(4 * kGiB);
  ASSERT_NE(memory, nullptr);
  const LoadedKernel kernel{BootProtocol::kLinux64, 0x100200, 0x2400000, BzImageHeader()};
  ASSERT_TRUE(WriteBootInfo(*memory, kernel, "x", std::nullopt).ok());
  auto params = memory->ReadObj<boot_params>(kZeroPageAddress);
  ASSERT_TRUE(params.ok());
  ASSERT_EQ(Val(params->e820_entries), 4);
  EXPECT_EQ(Val(params->e820_table[3].addr), kMmioHoleEnd);
  EXPECT_EQ(Val(params->e820_table[3].size), kGiB);
  EXPECT_EQ(Val(params->e820_table[3].type), E820_RAM);
}

TEST_F(WriteBootInfoTest, PvhStartInfo) {
  const LoadedKernel kernel{BootProtocol::kPvh, 0x1000500, 0x2026000, std::nullopt};
  const GuestRange initrd{0xfe00000, 0x1234};
  const std::string cmdline = "console=ttyS0 reboot=k panic=-1";
  ASSERT_TRUE(WriteBootInfo(*memory_, kernel, cmdline, initrd).ok());

  auto info = memory_->ReadObj<HvmStartInfo>(kPvhStartInfoAddress);
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->magic, kHvmStartMagic);
  EXPECT_EQ(info->version, 1u);
  EXPECT_EQ(info->flags, 0u);
  EXPECT_EQ(info->rsdp_paddr, 0u);
  EXPECT_EQ(info->cmdline_paddr, kCmdlineAddress);
  EXPECT_EQ(ReadCString(*memory_, info->cmdline_paddr, kCmdlineMaxSize), cmdline);

  ASSERT_EQ(info->nr_modules, 1u);
  auto module = memory_->ReadObj<HvmModlistEntry>(info->modlist_paddr);
  ASSERT_TRUE(module.ok());
  EXPECT_EQ(module->paddr, 0xfe00000u);
  EXPECT_EQ(module->size, 0x1234u);
  EXPECT_EQ(module->cmdline_paddr, 0u);

  const std::vector<E820Entry> map = BuildE820(*memory_);
  ASSERT_EQ(info->memmap_entries, map.size());
  for (size_t i = 0; i < map.size(); ++i) {
    auto entry = memory_->ReadObj<HvmMemmapEntry>(info->memmap_paddr + i * sizeof(HvmMemmapEntry));
    ASSERT_TRUE(entry.ok());
    EXPECT_EQ(entry->addr, map[i].addr) << i;
    EXPECT_EQ(entry->size, map[i].size) << i;
    EXPECT_EQ(entry->type, map[i].type) << i;
    EXPECT_EQ(entry->reserved, 0u) << i;
  }
  // The structures do not overlap each other or the other boot structures.
  EXPECT_GE(info->modlist_paddr, kPvhStartInfoAddress + sizeof(HvmStartInfo));
  EXPECT_GE(info->memmap_paddr, info->modlist_paddr + sizeof(HvmModlistEntry));
  EXPECT_LE(info->memmap_paddr + map.size() * sizeof(HvmMemmapEntry), kZeroPageAddress);
}

TEST_F(WriteBootInfoTest, PersistentMemoryInBothMemoryMaps) {
  const std::vector<E820Entry> pmem = {{kMmioHoleEnd, 2 * kMiB, E820_PRAM}};
  const LoadedKernel pvh{BootProtocol::kPvh, 0x1000500, 0x2026000, std::nullopt};
  ASSERT_TRUE(WriteBootInfo(*memory_, pvh, "", std::nullopt, pmem).ok());
  auto info = memory_->ReadObj<HvmStartInfo>(kPvhStartInfoAddress);
  ASSERT_TRUE(info.ok());
  ASSERT_EQ(info->memmap_entries, 4u);
  auto last = memory_->ReadObj<HvmMemmapEntry>(info->memmap_paddr + 3 * sizeof(HvmMemmapEntry));
  ASSERT_TRUE(last.ok());
  EXPECT_EQ(last->addr, kMmioHoleEnd);
  EXPECT_EQ(last->size, 2 * kMiB);
  EXPECT_EQ(last->type, 12u);

  const LoadedKernel bzimage{BootProtocol::kLinux64, 0x100200, 0x2400000, BzImageHeader()};
  ASSERT_TRUE(WriteBootInfo(*memory_, bzimage, "", std::nullopt, pmem).ok());
  auto params = memory_->ReadObj<boot_params>(kZeroPageAddress);
  ASSERT_TRUE(params.ok());
  ASSERT_EQ(Val(params->e820_entries), 4);
  EXPECT_EQ(Val(params->e820_table[3].addr), kMmioHoleEnd);
  EXPECT_EQ(Val(params->e820_table[3].type), 12u);
}

TEST_F(WriteBootInfoTest, PvhWithoutInitrdHasNoModules) {
  const LoadedKernel kernel{BootProtocol::kPvh, 0x1000500, 0x2026000, std::nullopt};
  ASSERT_TRUE(WriteBootInfo(*memory_, kernel, "", std::nullopt).ok());
  auto info = memory_->ReadObj<HvmStartInfo>(kPvhStartInfoAddress);
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->magic, kHvmStartMagic);
  EXPECT_EQ(info->nr_modules, 0u);
  EXPECT_EQ(info->modlist_paddr, 0u);
  EXPECT_EQ(info->memmap_entries, 3u);
  EXPECT_EQ(ReadCString(*memory_, kCmdlineAddress, kCmdlineMaxSize), "");
}

TEST_F(WriteBootInfoTest, CommandLineLimit) {
  const LoadedKernel kernel{BootProtocol::kLinux64, 0x100200, 0x2400000, BzImageHeader()};
  const std::string longest(kCmdlineMaxSize - 1, 'a');
  ASSERT_TRUE(WriteBootInfo(*memory_, kernel, longest, std::nullopt).ok());
  EXPECT_EQ(ReadCString(*memory_, kCmdlineAddress, kCmdlineMaxSize), longest);

  const std::string too_long(kCmdlineMaxSize, 'b');
  EXPECT_EQ(WriteBootInfo(*memory_, kernel, too_long, std::nullopt).code(),
            absl::StatusCode::kInvalidArgument);
  const LoadedKernel pvh{BootProtocol::kPvh, 0x1000500, 0x2026000, std::nullopt};
  EXPECT_EQ(WriteBootInfo(*memory_, pvh, too_long, std::nullopt).code(),
            absl::StatusCode::kInvalidArgument);
  // The failed attempts wrote nothing.
  EXPECT_EQ(ReadCString(*memory_, kCmdlineAddress, kCmdlineMaxSize), longest);
}

}  // namespace
}  // namespace kapsel::vmm::x86
