#include "tests/vmm/virtio/virtio_test_util.h"

#include <fcntl.h>
#include <linux/virtio_config.h>
#include <linux/virtio_mmio.h>
#include <stdlib.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <utility>

#include "gtest/gtest.h"
#include "vmm/devices/virtio/ring_abi.h"

namespace kapsel::vmm::virtio::testing {

std::unique_ptr<GuestMemory> MakeGuestMemory() {
  absl::StatusOr<std::unique_ptr<GuestMemory>> memory =
      GuestMemory::Create({{0, kRamEnd}, {kHighRam, kHighRamSize}});
  if (!memory.ok()) {
    ADD_FAILURE() << memory.status();
    return nullptr;
  }
  return std::move(*memory);
}

FakeDriver::FakeDriver(const GuestMemory& memory, uint16_t size, GuestAddress desc,
                       GuestAddress avail, GuestAddress used)
    : memory_(memory), size_(size), desc_(desc), avail_(avail), used_(used) {}

void FakeDriver::SetTableDescriptor(GuestAddress table, uint16_t index, GuestAddress addr,
                                    uint32_t len, uint16_t flags, uint16_t next) {
  uint8_t raw[16];
  std::memcpy(raw, &addr, 8);
  std::memcpy(raw + 8, &len, 4);
  std::memcpy(raw + 12, &flags, 2);
  std::memcpy(raw + 14, &next, 2);
  EXPECT_TRUE(memory_.Write(table + 16 * uint64_t{index}, raw, sizeof(raw)).ok());
}

void FakeDriver::SetDescriptor(uint16_t index, GuestAddress addr, uint32_t len, uint16_t flags,
                               uint16_t next) {
  SetTableDescriptor(desc_, index, addr, len, flags, next);
}

uint16_t FakeDriver::AddChain(const std::vector<Buffer>& buffers) {
  const uint16_t head = next_free_;
  for (size_t i = 0; i < buffers.size(); ++i) {
    const uint16_t index = next_free_;
    next_free_ = static_cast<uint16_t>((next_free_ + 1) % size_);
    const bool last = i + 1 == buffers.size();
    uint16_t flags = buffers[i].writable ? kVringDescFWrite : 0;
    if (!last) flags |= kVringDescFNext;
    SetDescriptor(index, buffers[i].addr, buffers[i].len, flags, last ? 0 : next_free_);
  }
  return head;
}

uint16_t FakeDriver::AddIndirectChain(GuestAddress table, const std::vector<Buffer>& buffers) {
  for (size_t i = 0; i < buffers.size(); ++i) {
    const bool last = i + 1 == buffers.size();
    uint16_t flags = buffers[i].writable ? kVringDescFWrite : 0;
    if (!last) flags |= kVringDescFNext;
    SetTableDescriptor(table, static_cast<uint16_t>(i), buffers[i].addr, buffers[i].len, flags,
                       last ? 0 : static_cast<uint16_t>(i + 1));
  }
  const uint16_t index = next_free_;
  next_free_ = static_cast<uint16_t>((next_free_ + 1) % size_);
  SetDescriptor(index, table, static_cast<uint32_t>(16 * buffers.size()), kVringDescFIndirect, 0);
  return index;
}

void FakeDriver::SetAvailEntry(uint16_t slot, uint16_t head) {
  EXPECT_TRUE(memory_.WriteObj<uint16_t>(avail_ + 4 + 2 * uint64_t{slot}, head).ok());
}

void FakeDriver::SetAvailIdx(uint16_t idx) {
  avail_idx_ = idx;
  EXPECT_TRUE(memory_.WriteObj<uint16_t>(avail_ + 2, idx).ok());
}

void FakeDriver::SetAvailFlags(uint16_t flags) {
  EXPECT_TRUE(memory_.WriteObj<uint16_t>(avail_, flags).ok());
}

void FakeDriver::SetUsedEvent(uint16_t idx) {
  EXPECT_TRUE(memory_.WriteObj<uint16_t>(avail_ + 4 + 2 * uint64_t{size_}, idx).ok());
}

uint16_t FakeDriver::AvailEvent() const {
  absl::StatusOr<uint16_t> idx = memory_.ReadObj<uint16_t>(used_ + 4 + 8 * uint64_t{size_});
  EXPECT_TRUE(idx.ok());
  return idx.value_or(0);
}

void FakeDriver::SetAvailEvent(uint16_t idx) {
  EXPECT_TRUE(memory_.WriteObj<uint16_t>(used_ + 4 + 8 * uint64_t{size_}, idx).ok());
}

bool FakeDriver::NotifyNeeded(uint16_t old) const {
  std::atomic_thread_fence(std::memory_order_seq_cst);
  // The form of Linux's vring_need_event (kept different from the device's own spelling).
  return static_cast<uint16_t>(avail_idx_ - AvailEvent() - 1) <
         static_cast<uint16_t>(avail_idx_ - old);
}

bool FakeDriver::TakeNotifyNeeded() {
  const uint16_t old = std::exchange(notify_checked_idx_, avail_idx_);
  return NotifyNeeded(old);
}

void FakeDriver::Publish(uint16_t head) {
  SetAvailEntry(avail_idx_ % size_, head);
  SetAvailIdx(static_cast<uint16_t>(avail_idx_ + 1));
}

uint16_t FakeDriver::UsedIdx() const {
  absl::StatusOr<uint16_t> idx = memory_.ReadObj<uint16_t>(used_ + 2);
  EXPECT_TRUE(idx.ok());
  return idx.value_or(0);
}

UsedElem FakeDriver::Used(uint16_t slot) const {
  absl::StatusOr<UsedElem> elem =
      memory_.ReadObj<UsedElem>(used_ + 4 + 8 * static_cast<uint64_t>(slot % size_));
  EXPECT_TRUE(elem.ok());
  return elem.value_or(UsedElem{UINT32_MAX, UINT32_MAX});
}

void FakeDriver::Configure(Queue& queue) const {
  queue.set_size(size_);
  queue.set_desc_table(desc_);
  queue.set_avail_ring(avail_);
  queue.set_used_ring(used_);
  queue.set_ready(true);
}

uint32_t MmioDriver::Read32(uint64_t offset) {
  uint32_t value = 0xdeadbeef;
  transport_.Read(offset, absl::Span<uint8_t>(reinterpret_cast<uint8_t*>(&value), 4));
  return value;
}

void MmioDriver::Write32(uint64_t offset, uint32_t value) {
  transport_.Write(offset, absl::Span<const uint8_t>(reinterpret_cast<const uint8_t*>(&value), 4));
}

uint64_t MmioDriver::DeviceFeatures() {
  Write32(VIRTIO_MMIO_DEVICE_FEATURES_SEL, 0);
  const uint64_t low = Read32(VIRTIO_MMIO_DEVICE_FEATURES);
  Write32(VIRTIO_MMIO_DEVICE_FEATURES_SEL, 1);
  const uint64_t high = Read32(VIRTIO_MMIO_DEVICE_FEATURES);
  return low | (high << 32);
}

void MmioDriver::SetDriverFeatures(uint64_t features) {
  Write32(VIRTIO_MMIO_DRIVER_FEATURES_SEL, 0);
  Write32(VIRTIO_MMIO_DRIVER_FEATURES, static_cast<uint32_t>(features));
  Write32(VIRTIO_MMIO_DRIVER_FEATURES_SEL, 1);
  Write32(VIRTIO_MMIO_DRIVER_FEATURES, static_cast<uint32_t>(features >> 32));
}

void MmioDriver::SetUpQueue(uint16_t index, const FakeDriver& driver) {
  Write32(VIRTIO_MMIO_QUEUE_SEL, index);
  Write32(VIRTIO_MMIO_QUEUE_NUM, driver.size());
  Write32(VIRTIO_MMIO_QUEUE_DESC_LOW, static_cast<uint32_t>(driver.desc()));
  Write32(VIRTIO_MMIO_QUEUE_DESC_HIGH, static_cast<uint32_t>(driver.desc() >> 32));
  Write32(VIRTIO_MMIO_QUEUE_AVAIL_LOW, static_cast<uint32_t>(driver.avail()));
  Write32(VIRTIO_MMIO_QUEUE_AVAIL_HIGH, static_cast<uint32_t>(driver.avail() >> 32));
  Write32(VIRTIO_MMIO_QUEUE_USED_LOW, static_cast<uint32_t>(driver.used()));
  Write32(VIRTIO_MMIO_QUEUE_USED_HIGH, static_cast<uint32_t>(driver.used() >> 32));
  Write32(VIRTIO_MMIO_QUEUE_READY, 1);
}

uint32_t MmioDriver::Negotiate(uint64_t features) {
  Write32(VIRTIO_MMIO_STATUS, 0);
  Write32(VIRTIO_MMIO_STATUS, VIRTIO_CONFIG_S_ACKNOWLEDGE);
  Write32(VIRTIO_MMIO_STATUS, VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER);
  SetDriverFeatures(features);
  Write32(VIRTIO_MMIO_STATUS,
          VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER | VIRTIO_CONFIG_S_FEATURES_OK);
  return Read32(VIRTIO_MMIO_STATUS);
}

uint32_t MmioDriver::Initialize(uint64_t features, const FakeDriver& driver) {
  const uint32_t status = Negotiate(features);
  SetUpQueue(0, driver);
  Write32(VIRTIO_MMIO_STATUS, status | VIRTIO_CONFIG_S_DRIVER_OK);
  return Read32(VIRTIO_MMIO_STATUS);
}

TempFile::TempFile(uint64_t size) {
  const char* dir = getenv("TMPDIR");
  std::string templ =
      std::string(dir != nullptr && *dir != '\0' ? dir : "/tmp") + "/kapsel-virtio-test-XXXXXX";
  const int fd = mkstemp(templ.data());
  if (fd < 0) {
    ADD_FAILURE() << "mkstemp " << templ << ": " << strerror(errno);
    return;
  }
  path_ = templ;
  std::vector<uint8_t> data(size);
  for (uint64_t i = 0; i < size; ++i) data[i] = PatternByte(i);
  EXPECT_EQ(write(fd, data.data(), data.size()), static_cast<ssize_t>(data.size()));
  close(fd);
}

TempFile::~TempFile() {
  if (!path_.empty()) unlink(path_.c_str());
}

std::vector<uint8_t> TempFile::Contents() const {
  std::vector<uint8_t> data;
  const int fd = open(path_.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return data;
  uint8_t buf[4096];
  ssize_t n;
  while ((n = read(fd, buf, sizeof(buf))) > 0) data.insert(data.end(), buf, buf + n);
  close(fd);
  return data;
}

}  // namespace kapsel::vmm::virtio::testing
