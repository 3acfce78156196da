// A bounded FIFO of bytes: what a connection holds for a host socket that is slower than the guest.
// Storage grows on demand (doubling from a small start) up to the bound, so idle connections cost
// little.
#ifndef KAPSEL_VMM_DEVICES_VIRTIO_VSOCK_BYTE_RING_H_
#define KAPSEL_VMM_DEVICES_VIRTIO_VSOCK_BYTE_RING_H_

#include <cstddef>
#include <cstdint>
#include <vector>

#include "absl/types/span.h"

namespace kapsel::vmm::virtio::vsock {

class ByteRing {
 public:
  explicit ByteRing(size_t max_size) : max_size_(max_size) {}

  size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }
  size_t max_size() const { return max_size_; }

  // Appends all of `data`; false (and nothing appended) if the result would exceed max_size().
  bool Append(absl::Span<const uint8_t> data);
  // The oldest bytes that are contiguous in storage (empty when the ring is).
  absl::Span<const uint8_t> Front() const;
  // Drops the oldest min(n, size()) bytes.
  void Consume(size_t n);

 private:
  // Makes room for at least `capacity` bytes, keeping the contents in order.
  void Reserve(size_t capacity);

  const size_t max_size_;
  std::vector<uint8_t> storage_;
  size_t head_ = 0;  // index of the oldest byte in storage_
  size_t size_ = 0;
};

}  // namespace kapsel::vmm::virtio::vsock

#endif  // KAPSEL_VMM_DEVICES_VIRTIO_VSOCK_BYTE_RING_H_
