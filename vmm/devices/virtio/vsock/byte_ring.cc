#include "vmm/devices/virtio/vsock/byte_ring.h"

#include <algorithm>
#include <cstring>

namespace kapsel::vmm::virtio::vsock {
namespace {

constexpr size_t kInitialCapacity = 4096;

}  // namespace

bool ByteRing::Append(absl::Span<const uint8_t> data) {
  if (data.size() > max_size_ - size_) return false;
  if (data.empty()) return true;
  if (size_ + data.size() > storage_.size()) {
    size_t capacity = std::max(storage_.size(), kInitialCapacity);
    while (capacity < size_ + data.size()) capacity *= 2;
    Reserve(std::min(capacity, std::max(max_size_, size_ + data.size())));
  }
  const size_t cap = storage_.size();
  const size_t tail = (head_ + size_) % cap;
  const size_t first = std::min(data.size(), cap - tail);
  std::memcpy(storage_.data() + tail, data.data(), first);
  std::memcpy(storage_.data(), data.data() + first, data.size() - first);
  size_ += data.size();
  return true;
}

absl::Span<const uint8_t> ByteRing::Front() const {
  if (size_ == 0) return {};
  return absl::MakeConstSpan(storage_.data() + head_, std::min(size_, storage_.size() - head_));
}

void ByteRing::Consume(size_t n) {
  n = std::min(n, size_);
  size_ -= n;
  head_ = size_ == 0 ? 0 : (head_ + n) % storage_.size();
}

void ByteRing::Reserve(size_t capacity) {
  if (capacity <= storage_.size()) return;
  std::vector<uint8_t> grown(capacity);
  const size_t first = std::min(size_, storage_.size() - head_);
  if (size_ > 0) {
    std::memcpy(grown.data(), storage_.data() + head_, first);
    std::memcpy(grown.data() + first, storage_.data(), size_ - first);
  }
  storage_ = std::move(grown);
  head_ = 0;
}

}  // namespace kapsel::vmm::virtio::vsock
