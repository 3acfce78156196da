// Parsing of one split-virtqueue descriptor chain out of guest memory.
//
// The guest is hostile and may rewrite its descriptor table while we read it, so every descriptor
// is copied out of guest memory once and only the copy is validated and used. A parsed chain is a
// flat list of guest buffers, all readable (device-readable) ones before all writable ones, each
// buffer checked to lie inside guest memory.
#ifndef KAPSEL_VMM_DEVICES_VIRTIO_DESCRIPTOR_CHAIN_H_
#define KAPSEL_VMM_DEVICES_VIRTIO_DESCRIPTOR_CHAIN_H_

#include <cstddef>
#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "vmm/memory/guest_memory.h"

namespace kapsel::vmm::virtio {

// Bounds for chains, beyond what the queue size implies.
inline constexpr uint32_t kMaxIndirectDescriptors = 1024;  // entries in one indirect table
inline constexpr uint64_t kMaxChainBytes = UINT32_MAX;     // sum of all buffer lengths

// One guest buffer of a chain.
struct Descriptor {
  GuestAddress addr = 0;
  uint32_t len = 0;
  bool writable = false;  // device-writable (VRING_DESC_F_WRITE)
};

struct DescriptorChain {
  // The head index the chain was published with: what goes back into the used ring.
  uint16_t head = 0;
  // Not OK when the chain is malformed; then `descriptors` is empty and the device must return the
  // chain unprocessed (used length 0).
  absl::Status status;
  // Readable buffers first, then writable ones.
  std::vector<Descriptor> descriptors;
  size_t num_readable = 0;
  uint64_t readable_bytes = 0;
  uint64_t writable_bytes = 0;

  absl::Span<const Descriptor> readable() const {
    return absl::MakeConstSpan(descriptors).subspan(0, num_readable);
  }
  absl::Span<const Descriptor> writable() const {
    return absl::MakeConstSpan(descriptors).subspan(num_readable);
  }
};

// Where the descriptor table is and what the driver negotiated.
struct DescriptorTable {
  GuestAddress addr = 0;
  uint16_t queue_size = 0;        // entries in the table
  bool indirect_enabled = false;  // VIRTIO_RING_F_INDIRECT_DESC negotiated
};

// Walks the chain starting at `head` and fills out->descriptors, num_readable and the byte counts
// (out->head and out->status are left to the caller). Returns an error, with `out` cleared, if:
// an index is out of range, the chain is longer than the queue size (or an indirect table is
// walked more times than it has entries: a loop), a buffer is outside guest memory, the total
// length exceeds kMaxChainBytes, a readable buffer follows a writable one, or an indirect
// descriptor is not allowed (feature not negotiated, nested, combined with NEXT, its table empty,
// not a multiple of 16 bytes, larger than kMaxIndirectDescriptors or outside guest memory).
absl::Status ParseDescriptorChain(const GuestMemory& memory, const DescriptorTable& table,
                                  uint16_t head, DescriptorChain* out);

}  // namespace kapsel::vmm::virtio

#endif  // KAPSEL_VMM_DEVICES_VIRTIO_DESCRIPTOR_CHAIN_H_
