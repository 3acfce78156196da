// The vsock header codec and the checks applied to every packet a (hostile) guest sends.
#include "vmm/devices/virtio/vsock/packet.h"

#include <linux/virtio_vsock.h>

#include <cstring>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "vmm/devices/virtio/vsock/byte_ring.h"

namespace kapsel::vmm::virtio::vsock {
namespace {

using ::testing::HasSubstr;

constexpr uint64_t kGuestCid = 3;

PacketHeader GuestPacket(uint16_t op, uint32_t len = 0) {
  PacketHeader h;
  h.src_cid = kGuestCid;
  h.dst_cid = kHostCid;
  h.src_port = 50000;
  h.dst_port = 1024;
  h.len = len;
  h.type = VIRTIO_VSOCK_TYPE_STREAM;
  h.op = op;
  h.buf_alloc = 65536;
  return h;
}

TEST(PacketTest, EncodesTheWireLayout) {
  PacketHeader h;
  h.src_cid = 0x0102030405060708;
  h.dst_cid = 2;
  h.src_port = 0x11223344;
  h.dst_port = 1024;
  h.len = 5;
  h.type = 1;
  h.op = 5;
  h.flags = 3;
  h.buf_alloc = 0x40000;
  h.fwd_cnt = 0xfffffff0;
  const auto bytes = EncodeHeader(h);
  virtio_vsock_hdr wire;
  static_assert(sizeof(wire) == kHeaderSize);
  std::memcpy(&wire, bytes.data(), sizeof(wire));
  // x86 is little-endian: the uapi struct reads back the fields directly.
  EXPECT_EQ(wire.src_cid, h.src_cid);
  EXPECT_EQ(wire.dst_cid, 2u);
  EXPECT_EQ(wire.src_port, h.src_port);
  EXPECT_EQ(wire.dst_port, 1024u);
  EXPECT_EQ(wire.len, 5u);
  EXPECT_EQ(wire.type, 1);
  EXPECT_EQ(wire.op, 5);
  EXPECT_EQ(wire.flags, 3u);
  EXPECT_EQ(wire.buf_alloc, 0x40000u);
  EXPECT_EQ(wire.fwd_cnt, 0xfffffff0u);
  absl::StatusOr<PacketHeader> back = DecodeHeader(bytes);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(*back, h);
}

TEST(PacketTest, ShortHeaderIsRejected) {
  std::vector<uint8_t> bytes(kHeaderSize - 1);
  EXPECT_FALSE(DecodeHeader(bytes).ok());
  EXPECT_FALSE(DecodeHeader({}).ok());
  bytes.resize(kHeaderSize + 10);  // trailing bytes are the payload's business
  EXPECT_TRUE(DecodeHeader(bytes).ok());
}

TEST(PacketTest, ValidPackets) {
  EXPECT_TRUE(ValidateGuestPacket(GuestPacket(VIRTIO_VSOCK_OP_REQUEST), kGuestCid, 0).ok());
  EXPECT_TRUE(ValidateGuestPacket(GuestPacket(VIRTIO_VSOCK_OP_RW, 100), kGuestCid, 100).ok());
  EXPECT_TRUE(
      ValidateGuestPacket(GuestPacket(VIRTIO_VSOCK_OP_RW, kMaxPayload), kGuestCid, kMaxPayload)
          .ok());
  for (uint16_t op = VIRTIO_VSOCK_OP_REQUEST; op <= VIRTIO_VSOCK_OP_CREDIT_REQUEST; ++op) {
    EXPECT_TRUE(ValidateGuestPacket(GuestPacket(op), kGuestCid, 0).ok()) << op;
  }
}

TEST(PacketTest, HostileFieldsAreRejected) {
  auto error = [](const PacketHeader& h, uint64_t payload) {
    absl::Status s = ValidateGuestPacket(h, kGuestCid, payload);
    EXPECT_FALSE(s.ok()) << DebugString(h);
    return std::string(s.message());
  };
  PacketHeader h = GuestPacket(VIRTIO_VSOCK_OP_RW, 10);
  h.src_cid = 4;  // spoofing another VM
  EXPECT_THAT(error(h, 10), HasSubstr("src_cid"));
  h = GuestPacket(VIRTIO_VSOCK_OP_RW, 10);
  h.src_cid = uint64_t{kGuestCid} | (uint64_t{1} << 32);  // the high half matters
  EXPECT_THAT(error(h, 10), HasSubstr("src_cid"));
  h = GuestPacket(VIRTIO_VSOCK_OP_RW, 10);
  h.dst_cid = 3;
  EXPECT_THAT(error(h, 10), HasSubstr("dst_cid"));
  h = GuestPacket(VIRTIO_VSOCK_OP_RW, 10);
  h.type = VIRTIO_VSOCK_TYPE_SEQPACKET;
  EXPECT_THAT(error(h, 10), HasSubstr("type"));
  h.type = 0;
  EXPECT_THAT(error(h, 10), HasSubstr("type"));
  EXPECT_THAT(error(GuestPacket(VIRTIO_VSOCK_OP_INVALID), 0), HasSubstr("op"));
  EXPECT_THAT(error(GuestPacket(8), 0), HasSubstr("op"));
  EXPECT_THAT(error(GuestPacket(0xffff), 0), HasSubstr("op"));
  // Length and payload disagree, both ways.
  EXPECT_THAT(error(GuestPacket(VIRTIO_VSOCK_OP_RW, 100), 99), HasSubstr("len"));
  EXPECT_THAT(error(GuestPacket(VIRTIO_VSOCK_OP_RW, 100), 101), HasSubstr("len"));
  EXPECT_THAT(error(GuestPacket(VIRTIO_VSOCK_OP_RW, UINT32_MAX), 0), HasSubstr("len"));
  EXPECT_THAT(error(GuestPacket(VIRTIO_VSOCK_OP_RW, kMaxPayload + 1), kMaxPayload + 1),
              HasSubstr("exceeds"));
  // Only RW carries data.
  EXPECT_THAT(error(GuestPacket(VIRTIO_VSOCK_OP_REQUEST, 4), 4), HasSubstr("payload"));
  EXPECT_THAT(error(GuestPacket(VIRTIO_VSOCK_OP_SHUTDOWN, 1), 1), HasSubstr("payload"));
}

TEST(ByteRingTest, WrapsGrowsAndStaysBounded) {
  ByteRing ring(10000);
  std::vector<uint8_t> in;
  std::vector<uint8_t> out;
  uint8_t next = 0;
  auto append = [&](size_t n) {
    std::vector<uint8_t> data(n);
    for (uint8_t& b : data) b = next++;
    if (!ring.Append(data)) return false;
    in.insert(in.end(), data.begin(), data.end());
    return true;
  };
  auto consume = [&](size_t n) {
    while (n > 0 && !ring.empty()) {
      absl::Span<const uint8_t> front = ring.Front();
      const size_t k = std::min(n, front.size());
      out.insert(out.end(), front.begin(), front.begin() + k);
      ring.Consume(k);
      n -= k;
    }
  };
  ASSERT_TRUE(append(3000));
  consume(2500);
  ASSERT_TRUE(append(3000));  // wraps around the initial 4 KiB
  ASSERT_TRUE(append(6000));  // grows while wrapped
  EXPECT_EQ(ring.size(), 9500u);
  EXPECT_FALSE(append(501));  // beyond the bound: nothing taken
  EXPECT_EQ(ring.size(), 9500u);
  ASSERT_TRUE(append(500));
  consume(20000);
  EXPECT_TRUE(ring.empty());
  EXPECT_TRUE(ring.Front().empty());
  EXPECT_EQ(out, in);
}

}  // namespace
}  // namespace kapsel::vmm::virtio::vsock
