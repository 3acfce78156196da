// GuestMemory: range validation at creation, and the bounds checks every device relies on.
#include "vmm/memory/guest_memory.h"

#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "vmm/arch/x86_64/e820.h"
#include "vmm/arch/x86_64/layout.h"

namespace kapsel::vmm {
namespace {

constexpr uint64_t kPage = 4096;
constexpr uint64_t kMiB = 1ULL << 20;
constexpr uint64_t kGiB = 1ULL << 30;
constexpr uint64_t kMax = std::numeric_limits<uint64_t>::max();

absl::StatusCode CreateCode(const std::vector<GuestRange>& ranges) {
  return GuestMemory::Create(ranges).status().code();
}

TEST(GuestMemoryCreateTest, RejectsInvalidRanges) {
  EXPECT_EQ(CreateCode({}), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(CreateCode({{0, 0}}), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(CreateCode({{0, kPage}, {kPage, 0}}), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(CreateCode({{0x800, kPage}}), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(CreateCode({{0, kPage + 1}}), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(CreateCode({{0, kPage}, {2 * kPage + 8, kPage}}), absl::StatusCode::kInvalidArgument);
  // Overlapping, identical, and out of order.
  EXPECT_EQ(CreateCode({{0, 2 * kPage}, {kPage, kPage}}), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(CreateCode({{kPage, kPage}, {kPage, kPage}}), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(CreateCode({{4 * kPage, kPage}, {0, kPage}}), absl::StatusCode::kInvalidArgument);
  // A range running past the end of the address space.
  EXPECT_EQ(CreateCode({{kMax - kPage + 1, 2 * kPage}}), absl::StatusCode::kInvalidArgument);
}

TEST(GuestMemoryCreateTest, AcceptsAdjacentRanges) {
  auto memory = GuestMemory::Create({{0, kPage}, {kPage, 2 * kPage}});
  ASSERT_TRUE(memory.ok()) << memory.status();
  ASSERT_EQ((*memory)->regions().size(), 2u);
  EXPECT_EQ((*memory)->total_size(), 3 * kPage);
  EXPECT_EQ((*memory)->regions()[1].guest_start, kPage);
  EXPECT_EQ((*memory)->regions()[1].size, 2 * kPage);
}

// Two regions with a gap between them: [0, 64 KiB) and [1 MiB, 1 MiB + 64 KiB).
class GuestMemoryTest : public ::testing::Test {
 protected:
  static constexpr uint64_t kLowSize = 64 * 1024;
  static constexpr uint64_t kHighStart = kMiB;
  static constexpr uint64_t kHighSize = 64 * 1024;

  void SetUp() override {
    auto memory = GuestMemory::Create({{0, kLowSize}, {kHighStart, kHighSize}});
    ASSERT_TRUE(memory.ok()) << memory.status();
    memory_ = *std::move(memory);
  }

  bool Ok(GuestAddress addr, uint64_t len) { return memory_->Translate(addr, len).ok(); }

  std::unique_ptr<GuestMemory> memory_;
};

TEST_F(GuestMemoryTest, RegionsAndMemfd) {
  const auto& regions = memory_->regions();
  ASSERT_EQ(regions.size(), 2u);
  EXPECT_EQ(regions[0].guest_start, 0u);
  EXPECT_EQ(regions[0].size, kLowSize);
  EXPECT_EQ(regions[0].file_offset, 0u);
  EXPECT_EQ(regions[1].guest_start, kHighStart);
  EXPECT_EQ(regions[1].size, kHighSize);
  EXPECT_EQ(regions[1].file_offset, kLowSize);
  EXPECT_EQ(memory_->total_size(), kLowSize + kHighSize);

  ASSERT_GE(memory_->memfd(), 0);
  struct stat st;
  ASSERT_EQ(fstat(memory_->memfd(), &st), 0);
  EXPECT_EQ(static_cast<uint64_t>(st.st_size), kLowSize + kHighSize);

  // Guest writes are visible in the memfd at the region's file offset, and the other way round.
  const uint32_t value = 0xfeedf00d;
  ASSERT_TRUE(memory_->WriteObj<uint32_t>(kHighStart + 0x10, value).ok());
  uint32_t from_file = 0;
  ASSERT_EQ(pread(memory_->memfd(), &from_file, sizeof(from_file),
                  static_cast<off_t>(regions[1].file_offset + 0x10)),
            static_cast<ssize_t>(sizeof(from_file)));
  EXPECT_EQ(from_file, value);
  const uint8_t byte = 0x5a;
  ASSERT_EQ(pwrite(memory_->memfd(), &byte, 1, static_cast<off_t>(kLowSize - 1)), 1);
  EXPECT_EQ(*memory_->ReadObj<uint8_t>(kLowSize - 1), byte);
  EXPECT_EQ(regions[0].host[kLowSize - 1], byte);
}

// A file of `pages` pages, page i filled with the byte 0x10 + i (a memfd: only its page cache
// matters here).
int PatternFile(int pages) {
  const int fd = memfd_create("pattern", MFD_CLOEXEC);
  for (int i = 0; fd >= 0 && i < pages; ++i) {
    std::vector<uint8_t> page(kPage, static_cast<uint8_t>(0x10 + i));
    if (pwrite(fd, page.data(), kPage, static_cast<off_t>(i * kPage)) !=
        static_cast<ssize_t>(kPage)) {
      return -1;
    }
  }
  return fd;
}

TEST_F(GuestMemoryTest, FileRangeReadsTheFileAndKeepsWritesPrivate) {
  const int file = PatternFile(4);
  ASSERT_GE(file, 0);
  // Guest pages 2 and 3 of the high region from file pages 1 and 2.
  const GuestAddress at = kHighStart + 2 * kPage;
  ASSERT_TRUE(memory_->WriteObj<uint8_t>(at, 0x77).ok());  // a memfd page that will be covered
  ASSERT_TRUE(memory_->MapFileCopyOnWrite(at, 2 * kPage, file, kPage).ok());
  ASSERT_EQ(memory_->file_ranges().size(), 1u);
  EXPECT_EQ(memory_->file_ranges()[0].start, at);
  EXPECT_EQ(memory_->file_ranges()[0].size, 2 * kPage);
  EXPECT_EQ(*memory_->ReadObj<uint8_t>(at), 0x11);
  EXPECT_EQ(*memory_->ReadObj<uint8_t>(at + 2 * kPage - 1), 0x12);
  EXPECT_EQ(*memory_->ReadObj<uint8_t>(at - 1), 0);  // around it: still the memfd
  EXPECT_EQ(*memory_->ReadObj<uint8_t>(at + 2 * kPage), 0);

  // A write lands in a private copy: neither the file nor the memfd sees it.
  ASSERT_TRUE(memory_->WriteObj<uint8_t>(at + 5, 0xee).ok());
  EXPECT_EQ(*memory_->ReadObj<uint8_t>(at + 5), 0xee);
  uint8_t byte = 0;
  ASSERT_EQ(pread(file, &byte, 1, static_cast<off_t>(kPage + 5)), 1);
  EXPECT_EQ(byte, 0x11);
  const uint64_t memfd_offset = memory_->regions()[1].file_offset + 2 * kPage;
  ASSERT_EQ(pread(memory_->memfd(), &byte, 1, static_cast<off_t>(memfd_offset)), 1);
  EXPECT_EQ(byte, 0x77);
  // Changing the file (which nobody may do to a kernel in use) shows in pages not yet copied:
  // they are the page cache's, not copies.
  const uint8_t changed = 0x99;
  ASSERT_EQ(pwrite(file, &changed, 1, static_cast<off_t>(2 * kPage)), 1);
  EXPECT_EQ(*memory_->ReadObj<uint8_t>(at + kPage), changed);

  // Discarding drops the private copy: the file's bytes are back.
  ASSERT_TRUE(memory_->Discard(at, 2 * kPage).ok());
  EXPECT_EQ(*memory_->ReadObj<uint8_t>(at + 5), 0x11);
  close(file);
}

TEST_F(GuestMemoryTest, BackendRegionsLeaveFileRangesOut) {
  const int file = PatternFile(2);
  ASSERT_GE(file, 0);
  ASSERT_TRUE(memory_->MapFileCopyOnWrite(kPage, kPage, file, 0).ok());
  ASSERT_TRUE(memory_->MapFileCopyOnWrite(kHighStart, 2 * kPage, file, 0).ok());
  const std::vector<MemoryRegion> pieces = memory_->BackendRegions();
  const auto& regions = memory_->regions();
  ASSERT_EQ(pieces.size(), 3u);
  // [0, 1 page), [2 pages, 64 KiB), [1 MiB + 2 pages, 1 MiB + 64 KiB).
  EXPECT_EQ(pieces[0].guest_start, 0u);
  EXPECT_EQ(pieces[0].size, kPage);
  EXPECT_EQ(pieces[0].host, regions[0].host);
  EXPECT_EQ(pieces[0].file_offset, 0u);
  EXPECT_EQ(pieces[1].guest_start, 2 * kPage);
  EXPECT_EQ(pieces[1].size, kLowSize - 2 * kPage);
  EXPECT_EQ(pieces[1].host, regions[0].host + 2 * kPage);
  EXPECT_EQ(pieces[1].file_offset, 2 * kPage);
  EXPECT_EQ(pieces[2].guest_start, kHighStart + 2 * kPage);
  EXPECT_EQ(pieces[2].size, kHighSize - 2 * kPage);
  EXPECT_EQ(pieces[2].host, regions[1].host + 2 * kPage);
  EXPECT_EQ(pieces[2].file_offset, regions[1].file_offset + 2 * kPage);
  // Each piece is still the memfd: what the guest writes there, a backend reads.
  ASSERT_TRUE(memory_->WriteObj<uint8_t>(pieces[2].guest_start, 0x42).ok());
  uint8_t byte = 0;
  ASSERT_EQ(pread(memory_->memfd(), &byte, 1, static_cast<off_t>(pieces[2].file_offset)), 1);
  EXPECT_EQ(byte, 0x42);
  close(file);
}

TEST_F(GuestMemoryTest, FileRangeRejections) {
  const int file = PatternFile(2);
  ASSERT_GE(file, 0);
  EXPECT_EQ(memory_->MapFileCopyOnWrite(0, 0, file, 0).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(memory_->MapFileCopyOnWrite(8, kPage, file, 0).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(memory_->MapFileCopyOnWrite(0, kPage, file, 8).code(),
            absl::StatusCode::kInvalidArgument);
  // Outside guest memory, or across the end of a region.
  EXPECT_EQ(memory_->MapFileCopyOnWrite(kLowSize, kPage, file, 0).code(),
            absl::StatusCode::kOutOfRange);
  EXPECT_EQ(memory_->MapFileCopyOnWrite(kLowSize - kPage, 2 * kPage, file, 0).code(),
            absl::StatusCode::kOutOfRange);
  // Not a mappable file: the range stays guest RAM.
  absl::Status bad = memory_->MapFileCopyOnWrite(kPage, kPage, -1, 0);
  EXPECT_FALSE(bad.ok());
  EXPECT_NE(bad.message().find("from a file"), std::string::npos) << bad;
  EXPECT_TRUE(memory_->file_ranges().empty());
  ASSERT_TRUE(memory_->WriteObj<uint8_t>(kPage, 0x5c).ok());
  uint8_t byte = 0;
  ASSERT_EQ(pread(memory_->memfd(), &byte, 1, static_cast<off_t>(kPage)), 1);
  EXPECT_EQ(byte, 0x5c);
  // Twice over the same pages.
  ASSERT_TRUE(memory_->MapFileCopyOnWrite(kPage, 2 * kPage, file, 0).ok());
  EXPECT_EQ(memory_->MapFileCopyOnWrite(2 * kPage, kPage, file, 0).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(memory_->file_ranges().size(), 1u);
  close(file);
}

TEST_F(GuestMemoryTest, TranslateInsideRegions) {
  EXPECT_EQ(*memory_->Translate(0, kLowSize), memory_->regions()[0].host);
  EXPECT_EQ(*memory_->Translate(kLowSize - 1, 1), memory_->regions()[0].host + kLowSize - 1);
  EXPECT_EQ(*memory_->Translate(kHighStart, kHighSize), memory_->regions()[1].host);
  EXPECT_EQ(*memory_->Translate(kHighStart + 8, 8), memory_->regions()[1].host + 8);
  // Zero length is fine anywhere inside a region.
  EXPECT_TRUE(Ok(0, 0));
  EXPECT_TRUE(Ok(kLowSize - 1, 0));
  EXPECT_TRUE(Ok(kHighStart + kHighSize - 1, 0));
}

TEST_F(GuestMemoryTest, TranslateRejectsRangesOutsideRegions) {
  // One past the end of each region, with and without length.
  EXPECT_FALSE(Ok(kLowSize, 0));
  EXPECT_FALSE(Ok(kLowSize, 1));
  EXPECT_FALSE(Ok(kHighStart + kHighSize, 0));
  EXPECT_FALSE(Ok(kHighStart + kHighSize, 1));
  // Running past the end by one byte.
  EXPECT_FALSE(Ok(0, kLowSize + 1));
  EXPECT_FALSE(Ok(kLowSize - 1, 2));
  EXPECT_FALSE(Ok(kHighStart + kHighSize - 4, 8));
  // In the gap, starting in the gap, and spanning the gap.
  EXPECT_FALSE(Ok(kLowSize + kPage, 4));
  EXPECT_FALSE(Ok(kHighStart - 1, 1));
  EXPECT_FALSE(Ok(kHighStart - 1, 2));
  EXPECT_FALSE(Ok(kLowSize - 8, kHighStart));
  // Far beyond guest memory.
  EXPECT_FALSE(Ok(kGiB, 1));
  EXPECT_FALSE(Ok(kMax, 0));
  EXPECT_FALSE(Ok(kMax, 1));
  EXPECT_EQ(memory_->Translate(kGiB, 1).status().code(), absl::StatusCode::kOutOfRange);
}

TEST_F(GuestMemoryTest, TranslateRejectsOverflowingLengths) {
  EXPECT_FALSE(Ok(kMax - 1, 4));
  EXPECT_FALSE(Ok(0, kMax));
  EXPECT_FALSE(Ok(8, kMax - 7));  // addr + len wraps to exactly 0
  EXPECT_FALSE(Ok(kHighStart + 8, kMax - 4));
  EXPECT_FALSE(Ok(kHighStart, kMax));
}

TEST(GuestMemoryAdjacentTest, RangeAcrossTwoRegionsIsRejected) {
  // Adjacent in guest space, but separate host mappings: no single host pointer covers both.
  auto memory = GuestMemory::Create({{0, kPage}, {kPage, kPage}});
  ASSERT_TRUE(memory.ok()) << memory.status();
  EXPECT_TRUE((*memory)->Translate(kPage - 4, 4).ok());
  EXPECT_TRUE((*memory)->Translate(kPage, 4).ok());
  EXPECT_FALSE((*memory)->Translate(kPage - 4, 8).ok());
  EXPECT_FALSE((*memory)->Translate(0, 2 * kPage).ok());
}

TEST_F(GuestMemoryTest, ReadWriteRoundTrip) {
  const char text[] = "kapsel guest memory";
  ASSERT_TRUE(memory_->Write(kHighStart + kHighSize - sizeof(text), text, sizeof(text)).ok());
  char back[sizeof(text)] = {};
  ASSERT_TRUE(memory_->Read(kHighStart + kHighSize - sizeof(text), back, sizeof(back)).ok());
  EXPECT_STREQ(back, text);

  ASSERT_TRUE(memory_->WriteObj<uint64_t>(0, 0x0123456789abcdef).ok());
  auto value = memory_->ReadObj<uint64_t>(0);
  ASSERT_TRUE(value.ok());
  EXPECT_EQ(*value, 0x0123456789abcdefu);

  auto slice = memory_->Slice(4, 4);
  ASSERT_TRUE(slice.ok());
  EXPECT_EQ(slice->size(), 4u);
  EXPECT_EQ(slice->data(), memory_->regions()[0].host + 4);
  EXPECT_EQ((*slice)[0], 0x67);  // little endian: byte 4 of the value above
  EXPECT_FALSE(memory_->Slice(kLowSize - 2, 4).ok());

  // Zero-length copies succeed and touch nothing (the pointers are never dereferenced).
  EXPECT_TRUE(memory_->Read(0, nullptr, 0).ok());
  EXPECT_TRUE(memory_->Write(kHighStart, nullptr, 0).ok());
}

TEST_F(GuestMemoryTest, FailedAccessesTouchNothing) {
  std::memset(memory_->regions()[0].host + kLowSize - 4, 0x11, 4);
  const uint64_t value = 0xffffffffffffffff;
  EXPECT_EQ(memory_->WriteObj(kLowSize - 4, value).code(), absl::StatusCode::kOutOfRange);
  for (uint64_t i = kLowSize - 4; i < kLowSize; ++i) {
    EXPECT_EQ(memory_->regions()[0].host[i], 0x11) << i;
  }
  uint8_t buffer[8];
  std::memset(buffer, 0x22, sizeof(buffer));
  EXPECT_FALSE(memory_->Read(kLowSize - 4, buffer, sizeof(buffer)).ok());
  for (uint8_t b : buffer) EXPECT_EQ(b, 0x22);
  EXPECT_FALSE(memory_->ReadObj<uint32_t>(kMax - 1).ok());
  EXPECT_FALSE(memory_->Write(kMax - 1, buffer, 4).ok());
}

// A 4 GiB guest as the VMM builds it: 3 GiB below the MMIO hole, 1 GiB above 4 GiB. The memory
// is MAP_NORESERVE, so only touched pages cost anything.
TEST(GuestMemoryLargeTest, FourGiBGuestAroundTheMmioHole) {
  const std::vector<GuestRange> ranges = x86::RamRanges(4 * kGiB);
  auto created = GuestMemory::Create(ranges);
  ASSERT_TRUE(created.ok()) << created.status();
  const GuestMemory& memory = **created;
  ASSERT_EQ(memory.regions().size(), 2u);
  EXPECT_EQ(memory.total_size(), 4 * kGiB);
  EXPECT_EQ(memory.regions()[0].guest_start, 0u);
  EXPECT_EQ(memory.regions()[0].size, x86::kMmioHoleStart);
  EXPECT_EQ(memory.regions()[1].guest_start, x86::kMmioHoleEnd);
  EXPECT_EQ(memory.regions()[1].size, kGiB);
  EXPECT_EQ(memory.regions()[1].file_offset, x86::kMmioHoleStart);

  EXPECT_TRUE(memory.Translate(x86::kMmioHoleStart - 1, 1).ok());
  EXPECT_FALSE(memory.Translate(x86::kMmioHoleStart - 1, 2).ok());
  EXPECT_FALSE(memory.Translate(x86::kMmioHoleStart, 0).ok());
  EXPECT_FALSE(memory.Translate(x86::kVirtioMmioBase, 4).ok());
  EXPECT_FALSE(memory.Translate(x86::kIoapicAddress, 4).ok());
  EXPECT_FALSE(memory.Translate(x86::kLapicAddress, 4).ok());
  EXPECT_FALSE(memory.Translate(x86::kMmioHoleEnd - 1, 1).ok());
  EXPECT_FALSE(memory.Translate(x86::kMmioHoleEnd - 4, 8).ok());
  EXPECT_TRUE(memory.Translate(x86::kMmioHoleEnd, 8).ok());
  EXPECT_TRUE(memory.Translate(x86::kMmioHoleEnd + kGiB - 8, 8).ok());
  EXPECT_FALSE(memory.Translate(x86::kMmioHoleEnd + kGiB - 8, 9).ok());
  EXPECT_FALSE(memory.Translate(x86::kMmioHoleEnd + kGiB, 1).ok());

  // Both sides of the hole land at the right offsets of the memfd.
  ASSERT_TRUE(memory.WriteObj<uint32_t>(x86::kMmioHoleStart - 4, 0xa1a2a3a4).ok());
  ASSERT_TRUE(memory.WriteObj<uint32_t>(x86::kMmioHoleEnd, 0xb1b2b3b4).ok());
  uint32_t words[2] = {};
  ASSERT_EQ(
      pread(memory.memfd(), words, sizeof(words), static_cast<off_t>(x86::kMmioHoleStart - 4)),
      static_cast<ssize_t>(sizeof(words)));
  EXPECT_EQ(words[0], 0xa1a2a3a4u);
  EXPECT_EQ(words[1], 0xb1b2b3b4u);
}

}  // namespace
}  // namespace kapsel::vmm
