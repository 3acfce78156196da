// The virtio-vsock packet header (virtio 1.x section 5.10.6, struct virtio_vsock_hdr in
// <linux/virtio_vsock.h>): decoding it from the bytes a guest put on the tx queue, encoding it for
// the rx queue, and the checks every guest packet must pass before it reaches a connection.
#ifndef KAPSEL_VMM_DEVICES_VIRTIO_VSOCK_PACKET_H_
#define KAPSEL_VMM_DEVICES_VIRTIO_VSOCK_PACKET_H_

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace kapsel::vmm::virtio::vsock {

// Bytes of a header on the wire (packed little-endian fields).
inline constexpr size_t kHeaderSize = 44;
// The host's address (VMADDR_CID_HOST).
inline constexpr uint64_t kHostCid = 2;
// The largest payload a packet may carry in either direction (the Linux driver's
// VIRTIO_VSOCK_MAX_PKT_BUF_SIZE).
inline constexpr uint32_t kMaxPayload = 64 * 1024;

// The header with fields in host byte order.
struct PacketHeader {
  uint64_t src_cid = 0;
  uint64_t dst_cid = 0;
  uint32_t src_port = 0;
  uint32_t dst_port = 0;
  uint32_t len = 0;  // payload bytes after the header
  uint16_t type = 0;
  uint16_t op = 0;
  uint32_t flags = 0;
  uint32_t buf_alloc = 0;
  uint32_t fwd_cnt = 0;

  bool operator==(const PacketHeader&) const = default;
};

// Decodes the first kHeaderSize bytes; InvalidArgument if there are fewer.
absl::StatusOr<PacketHeader> DecodeHeader(absl::Span<const uint8_t> bytes);
std::array<uint8_t, kHeaderSize> EncodeHeader(const PacketHeader& header);

// Checks a packet the guest sent: it comes from `guest_cid` to the host, is a stream packet with
// a known operation, and its length matches the payload that followed the header
// (`payload_bytes`) and is at most kMaxPayload; only RW packets carry a payload. The error says
// which check failed.
absl::Status ValidateGuestPacket(const PacketHeader& header, uint64_t guest_cid,
                                 uint64_t payload_bytes);

// "RW 1024->2", for logs and test failures.
std::string DebugString(const PacketHeader& header);

}  // namespace kapsel::vmm::virtio::vsock

#endif  // KAPSEL_VMM_DEVICES_VIRTIO_VSOCK_PACKET_H_
