// PmemRegion: a file mapped copy-on-write as the guest's persistent memory.
#include "vmm/memory/pmem_region.h"

#include <fcntl.h>
#include <unistd.h>

#include <cstring>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace kapsel::vmm {
namespace {

using ::testing::HasSubstr;

constexpr uint64_t kMiB = 1 << 20;

class PmemRegionTest : public ::testing::Test {
 protected:
  void TearDown() override {
    for (const std::string& path : paths_) unlink(path.c_str());
  }
  // A file of `size` bytes, byte i holding i % 251.
  std::string MakeFile(uint64_t size) {
    char path[] = "/var/tmp/kapsel-pmem-test-XXXXXX";
    const int fd = mkstemp(path);
    EXPECT_GE(fd, 0);
    std::vector<uint8_t> bytes(size);
    for (uint64_t i = 0; i < size; ++i) bytes[i] = static_cast<uint8_t>(i % 251);
    EXPECT_EQ(write(fd, bytes.data(), size), static_cast<ssize_t>(size));
    close(fd);
    paths_.push_back(path);
    return path;
  }
  std::vector<std::string> paths_;
};

TEST_F(PmemRegionTest, MapsTheFileAndKeepsWritesPrivate) {
  const std::string path = MakeFile(2 * kMiB);
  auto region = PmemRegion::Map(path, 4ULL << 30);
  ASSERT_TRUE(region.ok()) << region.status();
  EXPECT_EQ((*region)->guest_start(), 4ULL << 30);
  EXPECT_EQ((*region)->size(), 2 * kMiB);
  uint8_t* host = (*region)->host();
  EXPECT_EQ(host[0], 0);
  EXPECT_EQ(host[300], 300 % 251);
  EXPECT_EQ(host[2 * kMiB - 1], (2 * kMiB - 1) % 251);
  host[300] = 0xee;  // the guest writes: a private copy, the file stays as it was
  EXPECT_EQ(host[300], 0xee);
  const int fd = open(path.c_str(), O_RDONLY);
  ASSERT_GE(fd, 0);
  uint8_t byte = 0;
  ASSERT_EQ(pread(fd, &byte, 1, 300), 1);
  close(fd);
  EXPECT_EQ(byte, 300 % 251);
}

TEST_F(PmemRegionTest, RejectionsNameThePath) {
  const std::string odd = MakeFile(2 * kMiB + 4096);
  auto region = PmemRegion::Map(odd, 4ULL << 30);
  ASSERT_FALSE(region.ok());
  EXPECT_THAT(region.status().message(), HasSubstr(odd));
  EXPECT_THAT(region.status().message(), HasSubstr("not a multiple of 2 MiB"));

  const std::string empty = MakeFile(0);
  region = PmemRegion::Map(empty, 4ULL << 30);
  ASSERT_FALSE(region.ok());
  EXPECT_THAT(region.status().message(), HasSubstr("is empty"));

  region = PmemRegion::Map("/nonexistent/root.img", 4ULL << 30);
  ASSERT_FALSE(region.ok());
  EXPECT_THAT(region.status().message(), HasSubstr("/nonexistent/root.img"));

  region = PmemRegion::Map("/var/tmp", 4ULL << 30);
  ASSERT_FALSE(region.ok());
  EXPECT_THAT(region.status().message(), HasSubstr("not a file"));

  const std::string good = MakeFile(2 * kMiB);
  region = PmemRegion::Map(good, (4ULL << 30) + 4096);
  ASSERT_FALSE(region.ok());
  EXPECT_EQ(region.status().code(), absl::StatusCode::kInternal);
}

}  // namespace
}  // namespace kapsel::vmm
