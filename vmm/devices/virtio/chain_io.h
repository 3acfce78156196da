// Sequential, bounds-checked access to the buffers of a parsed descriptor chain: a ChainReader
// over its readable (driver-to-device) part and a ChainWriter over its writable part. Devices use
// them to parse requests that the driver may split across descriptors at any byte boundary.
#ifndef KAPSEL_VMM_DEVICES_VIRTIO_CHAIN_IO_H_
#define KAPSEL_VMM_DEVICES_VIRTIO_CHAIN_IO_H_

#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "vmm/devices/virtio/descriptor_chain.h"
#include "vmm/memory/guest_memory.h"

namespace kapsel::vmm::virtio {

// Walks a list of guest buffers as one byte stream. Each piece of memory is re-translated through
// GuestMemory when it is accessed.
class BufferCursor {
 public:
  BufferCursor(const GuestMemory& memory, absl::Span<const Descriptor> buffers);

  // Bytes left (after any limit).
  uint64_t remaining() const { return remaining_; }
  // Bytes consumed so far.
  uint64_t consumed() const { return consumed_; }
  // Restricts the stream to at most `limit` more bytes from the current position.
  void Limit(uint64_t limit);

  // The next contiguous piece of guest memory, at most `max` bytes, without consuming it; empty
  // when the stream is exhausted (or max is 0).
  absl::StatusOr<absl::Span<uint8_t>> Peek(uint64_t max) const;
  // Consumes min(n, remaining()) bytes.
  void Skip(uint64_t n);

 private:
  const GuestMemory& memory_;
  absl::Span<const Descriptor> buffers_;
  size_t index_ = 0;     // current buffer
  uint64_t offset_ = 0;  // into the current buffer, always < its length while remaining_ > 0
  uint64_t remaining_ = 0;
  uint64_t consumed_ = 0;
};

class ChainReader {
 public:
  ChainReader(const GuestMemory& memory, const DescriptorChain& chain)
      : cursor_(memory, chain.readable()) {}

  uint64_t remaining() const { return cursor_.remaining(); }
  uint64_t consumed() const { return cursor_.consumed(); }

  // Copies exactly dst.size() bytes out of the chain; OutOfRange (nothing consumed) if fewer are
  // left.
  absl::Status Read(absl::Span<uint8_t> dst);
  template <typename T>
  absl::StatusOr<T> ReadObj() {
    static_assert(std::is_trivially_copyable_v<T>);
    T value;
    absl::Status status = Read(absl::Span<uint8_t>(reinterpret_cast<uint8_t*>(&value), sizeof(T)));
    if (!status.ok()) return status;
    return value;
  }
  // Zero-copy access (e.g. to pwrite straight from guest memory): see BufferCursor.
  absl::StatusOr<absl::Span<const uint8_t>> Peek(uint64_t max) const;
  void Skip(uint64_t n) { cursor_.Skip(n); }

 private:
  BufferCursor cursor_;
};

class ChainWriter {
 public:
  ChainWriter(const GuestMemory& memory, const DescriptorChain& chain)
      : cursor_(memory, chain.writable()) {}

  uint64_t remaining() const { return cursor_.remaining(); }
  // Bytes written (or skipped) so far.
  uint64_t written() const { return cursor_.consumed(); }
  // Restricts writing to the next `limit` bytes (e.g. all but a trailing status byte).
  void Limit(uint64_t limit) { cursor_.Limit(limit); }

  // Copies all of src into the chain; OutOfRange (nothing written) if it does not fit.
  absl::Status Write(absl::Span<const uint8_t> src);
  template <typename T>
  absl::Status WriteObj(const T& value) {
    static_assert(std::is_trivially_copyable_v<T>);
    return Write(absl::Span<const uint8_t>(reinterpret_cast<const uint8_t*>(&value), sizeof(T)));
  }
  // Zero-copy access (e.g. to pread straight into guest memory): fill the span, then Skip the
  // bytes actually filled.
  absl::StatusOr<absl::Span<uint8_t>> Peek(uint64_t max) const { return cursor_.Peek(max); }
  void Skip(uint64_t n) { cursor_.Skip(n); }

 private:
  BufferCursor cursor_;
};

}  // namespace kapsel::vmm::virtio

#endif  // KAPSEL_VMM_DEVICES_VIRTIO_CHAIN_IO_H_
