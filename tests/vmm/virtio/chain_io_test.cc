#include "vmm/devices/virtio/chain_io.h"

#include <cstring>
#include <memory>
#include <vector>

#include "gtest/gtest.h"
#include "tests/vmm/virtio/virtio_test_util.h"

namespace kapsel::vmm::virtio {
namespace {

using ::kapsel::vmm::virtio::testing::kData;
using ::kapsel::vmm::virtio::testing::MakeGuestMemory;

class ChainIoTest : public ::testing::Test {
 protected:
  ChainIoTest() : memory_(MakeGuestMemory()) {
    for (uint64_t i = 0; i < 256; ++i) {
      EXPECT_TRUE(memory_->WriteObj<uint8_t>(kData + i, static_cast<uint8_t>(i)).ok());
    }
  }

  // Readable pieces [0,3) [3,3) [100,110) [3,16); writable [0x1000, 0x1002) [0x2000, 0x2005).
  DescriptorChain MakeChain() {
    DescriptorChain chain;
    chain.descriptors = {{kData, 3, false},         {kData + 100, 10, false},
                         {kData + 3, 13, false},    {kData + 0x1000, 2, true},
                         {kData + 0x2000, 0, true}, {kData + 0x2000, 5, true}};
    chain.num_readable = 3;
    chain.readable_bytes = 26;
    chain.writable_bytes = 7;
    return chain;
  }

  std::unique_ptr<GuestMemory> memory_;
};

TEST_F(ChainIoTest, ReadsAcrossDescriptors) {
  DescriptorChain chain = MakeChain();
  ChainReader reader(*memory_, chain);
  EXPECT_EQ(reader.remaining(), 26u);
  uint8_t buf[5];
  ASSERT_TRUE(reader.Read(absl::MakeSpan(buf)).ok());
  EXPECT_EQ(std::vector<uint8_t>(buf, buf + 5), (std::vector<uint8_t>{0, 1, 2, 100, 101}));
  EXPECT_EQ(reader.consumed(), 5u);
  absl::StatusOr<uint64_t> word = reader.ReadObj<uint64_t>();
  ASSERT_TRUE(word.ok());
  uint8_t bytes[8];
  std::memcpy(bytes, &*word, 8);
  EXPECT_EQ(std::vector<uint8_t>(bytes, bytes + 8),
            (std::vector<uint8_t>{102, 103, 104, 105, 106, 107, 108, 109}));
  EXPECT_EQ(reader.remaining(), 13u);
}

TEST_F(ChainIoTest, ReadPastEndConsumesNothing) {
  DescriptorChain chain = MakeChain();
  ChainReader reader(*memory_, chain);
  std::vector<uint8_t> big(27);
  EXPECT_EQ(reader.Read(absl::MakeSpan(big)).code(), absl::StatusCode::kOutOfRange);
  EXPECT_EQ(reader.remaining(), 26u);
  std::vector<uint8_t> all(26);
  EXPECT_TRUE(reader.Read(absl::MakeSpan(all)).ok());
  EXPECT_EQ(all[25], 15);
  EXPECT_EQ(reader.remaining(), 0u);
  absl::StatusOr<absl::Span<const uint8_t>> piece = reader.Peek(100);
  ASSERT_TRUE(piece.ok());
  EXPECT_TRUE(piece->empty());
}

TEST_F(ChainIoTest, PeekGivesContiguousPieces) {
  DescriptorChain chain = MakeChain();
  ChainReader reader(*memory_, chain);
  reader.Skip(1);
  absl::StatusOr<absl::Span<const uint8_t>> piece = reader.Peek(100);
  ASSERT_TRUE(piece.ok());
  EXPECT_EQ(piece->size(), 2u);
  EXPECT_EQ((*piece)[0], 1);
  reader.Skip(2);
  piece = reader.Peek(4);
  ASSERT_TRUE(piece.ok());
  EXPECT_EQ(piece->size(), 4u);
  EXPECT_EQ((*piece)[0], 100);
}

TEST_F(ChainIoTest, WriterOnlySeesWritablePartAndHonoursLimit) {
  DescriptorChain chain = MakeChain();
  ChainWriter writer(*memory_, chain);
  EXPECT_EQ(writer.remaining(), 7u);
  writer.Limit(6);
  const uint8_t data[7] = {10, 11, 12, 13, 14, 15, 16};
  EXPECT_FALSE(writer.Write(absl::MakeConstSpan(data, 7)).ok());
  EXPECT_EQ(writer.written(), 0u);
  ASSERT_TRUE(writer.Write(absl::MakeConstSpan(data, 6)).ok());
  EXPECT_EQ(writer.written(), 6u);
  EXPECT_EQ(writer.remaining(), 0u);
  EXPECT_EQ(*memory_->ReadObj<uint8_t>(kData + 0x1000), 10);
  EXPECT_EQ(*memory_->ReadObj<uint8_t>(kData + 0x1001), 11);
  EXPECT_EQ(*memory_->ReadObj<uint8_t>(kData + 0x2000), 12);
  EXPECT_EQ(*memory_->ReadObj<uint8_t>(kData + 0x2003), 15);
  EXPECT_EQ(*memory_->ReadObj<uint8_t>(kData + 0x2004), 0);  // beyond the limit: untouched
}

TEST_F(ChainIoTest, EmptyChain) {
  DescriptorChain chain;
  ChainReader reader(*memory_, chain);
  ChainWriter writer(*memory_, chain);
  EXPECT_EQ(reader.remaining(), 0u);
  EXPECT_EQ(writer.remaining(), 0u);
  EXPECT_FALSE(reader.ReadObj<uint8_t>().ok());
  EXPECT_FALSE(writer.WriteObj<uint8_t>(1).ok());
  EXPECT_TRUE(writer.Write({}).ok());
}

}  // namespace
}  // namespace kapsel::vmm::virtio
