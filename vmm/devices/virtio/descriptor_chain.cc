#include "vmm/devices/virtio/descriptor_chain.h"

#include <bit>

#include "absl/strings/str_format.h"
#include "common/status.h"
#include "vmm/devices/virtio/ring_abi.h"

namespace kapsel::vmm::virtio {
namespace {

static_assert(std::endian::native == std::endian::little, "virtio 1.x rings are little-endian");

// The split-ring descriptor as the guest lays it out (struct vring_desc, host byte order).
struct RawDescriptor {
  uint64_t addr;
  uint32_t len;
  uint16_t flags;
  uint16_t next;
};
static_assert(sizeof(RawDescriptor) == 16);

constexpr uint16_t kKnownFlags = kVringDescFNext | kVringDescFWrite | kVringDescFIndirect;

template <typename... Args>
absl::Status Invalid(const absl::FormatSpec<Args...>& format, const Args&... args) {
  return absl::InvalidArgumentError(absl::StrFormat(format, args...));
}

// Checks that a table of `entries` descriptors at `addr` does not wrap the address space (its
// presence in guest memory is checked per descriptor read).
absl::Status CheckTableSpan(GuestAddress addr, uint32_t entries) {
  if (addr > UINT64_MAX - uint64_t{entries} * sizeof(RawDescriptor)) {
    return Invalid("descriptor table at %#x wraps the address space", addr);
  }
  return absl::OkStatus();
}

absl::Status Walk(const GuestMemory& memory, const DescriptorTable& table, uint16_t head,
                  DescriptorChain* out) {
  if (head >= table.queue_size) {
    return Invalid("head index %d out of range (queue size %d)", head, table.queue_size);
  }
  RETURN_IF_ERROR(CheckTableSpan(table.addr, table.queue_size));

  GuestAddress table_addr = table.addr;
  uint32_t table_entries = table.queue_size;
  bool in_indirect = false;
  uint32_t index = head;
  uint32_t walked = 0;  // descriptors visited in the current table
  uint64_t total = 0;
  bool seen_writable = false;

  while (true) {
    if (index >= table_entries) {
      return Invalid("descriptor index %d out of range (%s table has %d entries)", index,
                     in_indirect ? "indirect" : "queue", table_entries);
    }
    if (++walked > table_entries) {
      return Invalid("descriptor chain longer than its %s table (%d entries): a loop",
                     in_indirect ? "indirect" : "queue", table_entries);
    }
    // One copy; everything below looks only at it.
    const GuestAddress desc_addr = table_addr + uint64_t{index} * sizeof(RawDescriptor);
    absl::StatusOr<RawDescriptor> raw = memory.ReadObj<RawDescriptor>(desc_addr);
    if (!raw.ok()) return Annotate(raw.status(), absl::StrFormat("descriptor %d", index));
    const RawDescriptor d = *raw;

    if ((d.flags & ~kKnownFlags) != 0) {
      return Invalid("descriptor %d has unknown flags %#x", index, d.flags);
    }
    if ((d.flags & kVringDescFIndirect) != 0) {
      if (!table.indirect_enabled) {
        return Invalid("descriptor %d is indirect but VIRTIO_RING_F_INDIRECT_DESC is off", index);
      }
      if (in_indirect) return Invalid("nested indirect descriptor %d", index);
      if ((d.flags & kVringDescFNext) != 0) {
        return Invalid("indirect descriptor %d also has VRING_DESC_F_NEXT", index);
      }
      if (d.len == 0 || d.len % sizeof(RawDescriptor) != 0 ||
          d.len / sizeof(RawDescriptor) > kMaxIndirectDescriptors) {
        return Invalid("indirect table of %d bytes is empty, not a multiple of 16 or too large",
                       d.len);
      }
      absl::Status in_memory = memory.Translate(d.addr, d.len).status();
      if (!in_memory.ok()) return Annotate(in_memory, "indirect table");
      table_entries = d.len / sizeof(RawDescriptor);
      RETURN_IF_ERROR(CheckTableSpan(d.addr, table_entries));
      table_addr = d.addr;
      in_indirect = true;
      index = 0;
      walked = 0;
      continue;
    }

    const bool writable = (d.flags & kVringDescFWrite) != 0;
    if (writable) {
      seen_writable = true;
    } else if (seen_writable) {
      return Invalid("readable descriptor %d follows a writable one", index);
    }
    if (d.len != 0) {
      absl::Status in_memory = memory.Translate(d.addr, d.len).status();
      if (!in_memory.ok()) return Annotate(in_memory, absl::StrFormat("descriptor %d", index));
      total += d.len;  // at most kMaxChainBytes + UINT32_MAX: cannot overflow
      if (total > kMaxChainBytes) {
        return Invalid("descriptor chain longer than %d bytes", kMaxChainBytes);
      }
      out->descriptors.push_back({d.addr, d.len, writable});
      if (writable) {
        out->writable_bytes += d.len;
      } else {
        out->readable_bytes += d.len;
        ++out->num_readable;
      }
    }
    if ((d.flags & kVringDescFNext) == 0) break;
    index = d.next;
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status ParseDescriptorChain(const GuestMemory& memory, const DescriptorTable& table,
                                  uint16_t head, DescriptorChain* out) {
  out->descriptors.clear();
  out->num_readable = 0;
  out->readable_bytes = 0;
  out->writable_bytes = 0;
  absl::Status status = Walk(memory, table, head, out);
  if (!status.ok()) {
    out->descriptors.clear();
    out->num_readable = 0;
    out->readable_bytes = 0;
    out->writable_bytes = 0;
    return Annotate(status, absl::StrFormat("descriptor chain at head %d", head));
  }
  return absl::OkStatus();
}

}  // namespace kapsel::vmm::virtio
