#include "vmm/devices/virtio/vsock/packet.h"

#include <endian.h>
#include <linux/virtio_vsock.h>

#include <cstring>

#include "absl/strings/str_format.h"

namespace kapsel::vmm::virtio::vsock {
namespace {

static_assert(sizeof(virtio_vsock_hdr) == kHeaderSize);

// Field offsets in the wire header.
constexpr size_t kSrcCid = offsetof(virtio_vsock_hdr, src_cid);
constexpr size_t kDstCid = offsetof(virtio_vsock_hdr, dst_cid);
constexpr size_t kSrcPort = offsetof(virtio_vsock_hdr, src_port);
constexpr size_t kDstPort = offsetof(virtio_vsock_hdr, dst_port);
constexpr size_t kLen = offsetof(virtio_vsock_hdr, len);
constexpr size_t kType = offsetof(virtio_vsock_hdr, type);
constexpr size_t kOp = offsetof(virtio_vsock_hdr, op);
constexpr size_t kFlags = offsetof(virtio_vsock_hdr, flags);
constexpr size_t kBufAlloc = offsetof(virtio_vsock_hdr, buf_alloc);
constexpr size_t kFwdCnt = offsetof(virtio_vsock_hdr, fwd_cnt);

template <typename T>
T Load(const uint8_t* p) {
  T v;
  std::memcpy(&v, p, sizeof(v));
  if constexpr (sizeof(T) == 8) return le64toh(v);
  if constexpr (sizeof(T) == 4) return le32toh(v);
  return le16toh(v);
}

template <typename T>
void Store(uint8_t* p, T v) {
  if constexpr (sizeof(T) == 8) v = htole64(v);
  if constexpr (sizeof(T) == 4) v = htole32(v);
  if constexpr (sizeof(T) == 2) v = htole16(v);
  std::memcpy(p, &v, sizeof(v));
}

const char* OpName(uint16_t op) {
  switch (op) {
    case VIRTIO_VSOCK_OP_REQUEST:
      return "REQUEST";
    case VIRTIO_VSOCK_OP_RESPONSE:
      return "RESPONSE";
    case VIRTIO_VSOCK_OP_RST:
      return "RST";
    case VIRTIO_VSOCK_OP_SHUTDOWN:
      return "SHUTDOWN";
    case VIRTIO_VSOCK_OP_RW:
      return "RW";
    case VIRTIO_VSOCK_OP_CREDIT_UPDATE:
      return "CREDIT_UPDATE";
    case VIRTIO_VSOCK_OP_CREDIT_REQUEST:
      return "CREDIT_REQUEST";
    default:
      return "op?";
  }
}

}  // namespace

absl::StatusOr<PacketHeader> DecodeHeader(absl::Span<const uint8_t> bytes) {
  if (bytes.size() < kHeaderSize) {
    return absl::InvalidArgumentError(
        absl::StrFormat("vsock header: %d bytes, need %d", bytes.size(), kHeaderSize));
  }
  const uint8_t* p = bytes.data();
  PacketHeader h;
  h.src_cid = Load<uint64_t>(p + kSrcCid);
  h.dst_cid = Load<uint64_t>(p + kDstCid);
  h.src_port = Load<uint32_t>(p + kSrcPort);
  h.dst_port = Load<uint32_t>(p + kDstPort);
  h.len = Load<uint32_t>(p + kLen);
  h.type = Load<uint16_t>(p + kType);
  h.op = Load<uint16_t>(p + kOp);
  h.flags = Load<uint32_t>(p + kFlags);
  h.buf_alloc = Load<uint32_t>(p + kBufAlloc);
  h.fwd_cnt = Load<uint32_t>(p + kFwdCnt);
  return h;
}

std::array<uint8_t, kHeaderSize> EncodeHeader(const PacketHeader& h) {
  std::array<uint8_t, kHeaderSize> out{};
  uint8_t* p = out.data();
  Store<uint64_t>(p + kSrcCid, h.src_cid);
  Store<uint64_t>(p + kDstCid, h.dst_cid);
  Store<uint32_t>(p + kSrcPort, h.src_port);
  Store<uint32_t>(p + kDstPort, h.dst_port);
  Store<uint32_t>(p + kLen, h.len);
  Store<uint16_t>(p + kType, h.type);
  Store<uint16_t>(p + kOp, h.op);
  Store<uint32_t>(p + kFlags, h.flags);
  Store<uint32_t>(p + kBufAlloc, h.buf_alloc);
  Store<uint32_t>(p + kFwdCnt, h.fwd_cnt);
  return out;
}

absl::Status ValidateGuestPacket(const PacketHeader& h, uint64_t guest_cid,
                                 uint64_t payload_bytes) {
  if (h.src_cid != guest_cid) {
    return absl::InvalidArgumentError(
        absl::StrFormat("vsock: src_cid %d is not the guest's (%d)", h.src_cid, guest_cid));
  }
  if (h.dst_cid != kHostCid) {
    return absl::InvalidArgumentError(
        absl::StrFormat("vsock: dst_cid %d is not the host (%d)", h.dst_cid, kHostCid));
  }
  if (h.type != VIRTIO_VSOCK_TYPE_STREAM) {
    return absl::InvalidArgumentError(absl::StrFormat("vsock: unsupported type %d", h.type));
  }
  if (h.op < VIRTIO_VSOCK_OP_REQUEST || h.op > VIRTIO_VSOCK_OP_CREDIT_REQUEST) {
    return absl::InvalidArgumentError(absl::StrFormat("vsock: unknown op %d", h.op));
  }
  if (h.len != payload_bytes) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "vsock: len %d but %d payload bytes follow the header", h.len, payload_bytes));
  }
  if (h.len > kMaxPayload) {
    return absl::InvalidArgumentError(
        absl::StrFormat("vsock: len %d exceeds %d", h.len, kMaxPayload));
  }
  if (h.len != 0 && h.op != VIRTIO_VSOCK_OP_RW) {
    return absl::InvalidArgumentError(
        absl::StrFormat("vsock: %s packet with a %d-byte payload", OpName(h.op), h.len));
  }
  return absl::OkStatus();
}

std::string DebugString(const PacketHeader& h) {
  return absl::StrFormat("%s %d:%d->%d:%d len=%d flags=%#x buf_alloc=%d fwd_cnt=%d", OpName(h.op),
                         h.src_cid, h.src_port, h.dst_cid, h.dst_port, h.len, h.flags, h.buf_alloc,
                         h.fwd_cnt);
}

}  // namespace kapsel::vmm::virtio::vsock
