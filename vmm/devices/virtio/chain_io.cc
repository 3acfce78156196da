#include "vmm/devices/virtio/chain_io.h"

#include <algorithm>
#include <cstring>

#include "absl/strings/str_format.h"

namespace kapsel::vmm::virtio {

BufferCursor::BufferCursor(const GuestMemory& memory, absl::Span<const Descriptor> buffers)
    : memory_(memory), buffers_(buffers) {
  for (const Descriptor& d : buffers_) remaining_ += d.len;
  // Start on a non-empty buffer.
  while (index_ < buffers_.size() && buffers_[index_].len == 0) ++index_;
}

void BufferCursor::Limit(uint64_t limit) { remaining_ = std::min(remaining_, limit); }

absl::StatusOr<absl::Span<uint8_t>> BufferCursor::Peek(uint64_t max) const {
  if (remaining_ == 0 || max == 0) return absl::Span<uint8_t>();
  const Descriptor& d = buffers_[index_];
  const uint64_t n = std::min({max, uint64_t{d.len} - offset_, remaining_});
  return memory_.Slice(d.addr + offset_, n);
}

void BufferCursor::Skip(uint64_t n) {
  n = std::min(n, remaining_);
  remaining_ -= n;
  consumed_ += n;
  while (n > 0) {
    const uint64_t left_in_buffer = uint64_t{buffers_[index_].len} - offset_;
    if (n < left_in_buffer) {
      offset_ += n;
      return;
    }
    n -= left_in_buffer;
    offset_ = 0;
    ++index_;
    while (index_ < buffers_.size() && buffers_[index_].len == 0) ++index_;
  }
}

absl::Status ChainReader::Read(absl::Span<uint8_t> dst) {
  if (dst.size() > cursor_.remaining()) {
    return absl::OutOfRangeError(
        absl::StrFormat("reading %d bytes from a chain with %d readable bytes left", dst.size(),
                        cursor_.remaining()));
  }
  while (!dst.empty()) {
    absl::StatusOr<absl::Span<uint8_t>> piece = cursor_.Peek(dst.size());
    if (!piece.ok()) return piece.status();
    std::memcpy(dst.data(), piece->data(), piece->size());
    cursor_.Skip(piece->size());
    dst.remove_prefix(piece->size());
  }
  return absl::OkStatus();
}

absl::StatusOr<absl::Span<const uint8_t>> ChainReader::Peek(uint64_t max) const {
  absl::StatusOr<absl::Span<uint8_t>> piece = cursor_.Peek(max);
  if (!piece.ok()) return piece.status();
  return absl::Span<const uint8_t>(*piece);
}

absl::Status ChainWriter::Write(absl::Span<const uint8_t> src) {
  if (src.size() > cursor_.remaining()) {
    return absl::OutOfRangeError(
        absl::StrFormat("writing %d bytes to a chain with %d writable bytes left", src.size(),
                        cursor_.remaining()));
  }
  while (!src.empty()) {
    absl::StatusOr<absl::Span<uint8_t>> piece = cursor_.Peek(src.size());
    if (!piece.ok()) return piece.status();
    std::memcpy(piece->data(), src.data(), piece->size());
    cursor_.Skip(piece->size());
    src.remove_prefix(piece->size());
  }
  return absl::OkStatus();
}

}  // namespace kapsel::vmm::virtio
