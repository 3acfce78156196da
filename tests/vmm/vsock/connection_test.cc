// The connection state machine on its own: packets in, packets and host bytes out.
#include "vmm/devices/virtio/vsock/connection.h"

#include <linux/virtio_vsock.h>

#include <optional>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace kapsel::vmm::virtio::vsock {
namespace {

constexpr uint64_t kGuestCid = 7;
constexpr uint32_t kHostPort = kBufAlloc;  // any local port
constexpr uint32_t kGuestPort = 5000;

// A packet from the guest on the connection (local port kHostPort, guest port kGuestPort).
PacketHeader FromGuest(uint16_t op, uint32_t buf_alloc = 65536, uint32_t fwd_cnt = 0) {
  PacketHeader h;
  h.src_cid = kGuestCid;
  h.dst_cid = kHostCid;
  h.src_port = kGuestPort;
  h.dst_port = kHostPort;
  h.type = VIRTIO_VSOCK_TYPE_STREAM;
  h.op = op;
  h.buf_alloc = buf_alloc;
  h.fwd_cnt = fwd_cnt;
  return h;
}

std::vector<uint16_t> DrainOps(Connection& c) {
  std::vector<uint16_t> ops;
  while (std::optional<PacketHeader> h = c.TakeControlPacket()) ops.push_back(h->op);
  return ops;
}

std::string HostString(Connection& c) {
  std::string out;
  while (!c.HostBytes().empty()) {
    absl::Span<const uint8_t> bytes = c.HostBytes();
    out.append(reinterpret_cast<const char*>(bytes.data()), bytes.size());
    c.OnHostWritten(bytes.size());
  }
  return out;
}

void SendData(Connection& c, const std::string& data, uint32_t buf_alloc = 65536) {
  PacketHeader h = FromGuest(VIRTIO_VSOCK_OP_RW, buf_alloc);
  h.len = static_cast<uint32_t>(data.size());
  c.OnGuestPacket(h,
                  absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(data.data()), data.size()));
}

// A host-initiated connection, established.
Connection Established(uint32_t guest_buf_alloc = 65536) {
  Connection c = Connection::ToGuest(kGuestCid, kHostPort, kGuestPort);
  c.TakeControlPacket();
  c.OnGuestPacket(FromGuest(VIRTIO_VSOCK_OP_RESPONSE, guest_buf_alloc), {});
  HostString(c);  // the OK line
  return c;
}

TEST(ConnectionTest, HostConnectsToGuest) {
  Connection c = Connection::ToGuest(kGuestCid, kHostPort, kGuestPort);
  EXPECT_EQ(c.state(), ConnectionState::kRequestPending);
  EXPECT_EQ(c.GuestCredit(), 0u);
  std::optional<PacketHeader> request = c.TakeControlPacket();
  ASSERT_TRUE(request.has_value());
  EXPECT_EQ(request->op, VIRTIO_VSOCK_OP_REQUEST);
  EXPECT_EQ(request->src_cid, kHostCid);
  EXPECT_EQ(request->dst_cid, kGuestCid);
  EXPECT_EQ(request->src_port, kHostPort);
  EXPECT_EQ(request->dst_port, kGuestPort);
  EXPECT_EQ(request->type, VIRTIO_VSOCK_TYPE_STREAM);
  EXPECT_EQ(request->buf_alloc, kBufAlloc);
  EXPECT_EQ(c.state(), ConnectionState::kRequestSent);
  EXPECT_FALSE(c.HasControlPacket());
  EXPECT_TRUE(c.HostBytes().empty());

  c.OnGuestPacket(FromGuest(VIRTIO_VSOCK_OP_RESPONSE, 1000), {});
  EXPECT_EQ(c.state(), ConnectionState::kEstablished);
  EXPECT_EQ(HostString(c), "OK 262144\n");
  EXPECT_EQ(c.fwd_cnt(), 0u);  // the OK line is not stream data
  EXPECT_EQ(c.GuestCredit(), 1000u);
  EXPECT_TRUE(c.WantsHostData());
}

TEST(ConnectionTest, GuestRefusesWithRst) {
  Connection c = Connection::ToGuest(kGuestCid, kHostPort, kGuestPort);
  c.TakeControlPacket();
  c.OnGuestPacket(FromGuest(VIRTIO_VSOCK_OP_RST), {});
  EXPECT_TRUE(c.closed());
  EXPECT_TRUE(DrainOps(c).empty());  // never answer a RST
  EXPECT_TRUE(c.HostBytes().empty());
}

TEST(ConnectionTest, WrongAnswerToRequestResets) {
  Connection c = Connection::ToGuest(kGuestCid, kHostPort, kGuestPort);
  c.TakeControlPacket();
  SendData(c, "early");
  EXPECT_TRUE(c.closed());
  EXPECT_EQ(DrainOps(c), std::vector<uint16_t>{VIRTIO_VSOCK_OP_RST});
}

TEST(ConnectionTest, AbortBeforeTheGuestHeardOfItSendsNothing) {
  Connection c = Connection::ToGuest(kGuestCid, kHostPort, kGuestPort);
  c.Abort("test");
  EXPECT_TRUE(c.closed());
  EXPECT_TRUE(DrainOps(c).empty());
  Connection d = Established();
  d.Abort("test");
  EXPECT_EQ(DrainOps(d), std::vector<uint16_t>{VIRTIO_VSOCK_OP_RST});
}

TEST(ConnectionTest, GuestConnectsToHost) {
  PacketHeader request = FromGuest(VIRTIO_VSOCK_OP_REQUEST, 4096, 0);
  Connection c = Connection::FromGuest(kGuestCid, request);
  EXPECT_EQ(c.local_port(), kHostPort);
  EXPECT_EQ(c.peer_port(), kGuestPort);
  EXPECT_EQ(c.state(), ConnectionState::kEstablished);
  std::optional<PacketHeader> response = c.TakeControlPacket();
  ASSERT_TRUE(response.has_value());
  EXPECT_EQ(response->op, VIRTIO_VSOCK_OP_RESPONSE);
  EXPECT_EQ(response->dst_port, kGuestPort);
  EXPECT_EQ(c.GuestCredit(), 4096u);
  SendData(c, "hello");
  EXPECT_EQ(HostString(c), "hello");  // no OK line this way
  EXPECT_EQ(c.fwd_cnt(), 5u);
}

TEST(ConnectionTest, CreditStallsAtZeroAndResumesOnUpdate) {
  Connection c = Established(/*guest_buf_alloc=*/100);
  EXPECT_EQ(c.GuestCredit(), 100u);
  PacketHeader h = c.TakeDataHeader(60);
  EXPECT_EQ(h.op, VIRTIO_VSOCK_OP_RW);
  EXPECT_EQ(h.len, 60u);
  EXPECT_EQ(c.GuestCredit(), 40u);
  c.TakeDataHeader(40);
  EXPECT_EQ(c.GuestCredit(), 0u);
  EXPECT_FALSE(c.WantsHostData());
  // The guest consumed 30 bytes.
  c.OnGuestPacket(FromGuest(VIRTIO_VSOCK_OP_CREDIT_UPDATE, 100, 30), {});
  EXPECT_EQ(c.GuestCredit(), 30u);
  EXPECT_TRUE(c.WantsHostData());
  // It grows its buffer.
  c.OnGuestPacket(FromGuest(VIRTIO_VSOCK_OP_CREDIT_UPDATE, 1000, 100), {});
  EXPECT_EQ(c.GuestCredit(), 1000u);
  // ...or shrinks it below what is in flight: no credit, no underflow.
  c.TakeDataHeader(500);
  c.OnGuestPacket(FromGuest(VIRTIO_VSOCK_OP_CREDIT_UPDATE, 10, 100), {});
  EXPECT_EQ(c.GuestCredit(), 0u);
}

TEST(ConnectionTest, CountersWrap) {
  constexpr uint32_t kBig = 0x80000000;
  Connection c = Established(kBig);
  // tx_cnt and the guest's fwd_cnt are 32-bit counters: 5 * 1.5 GiB wraps them.
  uint32_t fwd = 0;
  for (int i = 0; i < 5; ++i) {
    ASSERT_EQ(c.GuestCredit(), kBig) << i;
    c.TakeDataHeader(0x60000000);
    EXPECT_EQ(c.GuestCredit(), kBig - 0x60000000) << i;
    fwd += 0x60000000;
    c.OnGuestPacket(FromGuest(VIRTIO_VSOCK_OP_CREDIT_UPDATE, kBig, fwd), {});
  }
  EXPECT_EQ(c.GuestCredit(), kBig);
}

TEST(ConnectionTest, CreditRequestIsAnswered) {
  Connection c = Established();
  c.OnGuestPacket(FromGuest(VIRTIO_VSOCK_OP_CREDIT_REQUEST), {});
  std::optional<PacketHeader> h = c.TakeControlPacket();
  ASSERT_TRUE(h.has_value());
  EXPECT_EQ(h->op, VIRTIO_VSOCK_OP_CREDIT_UPDATE);
  EXPECT_EQ(h->buf_alloc, kBufAlloc);
  EXPECT_EQ(h->fwd_cnt, 0u);
}

TEST(ConnectionTest, GuestDataIsBufferedUpToItsCreditThenReset) {
  Connection c = Established();
  const std::string chunk(kMaxPayload, 'x');
  for (uint32_t i = 0; i < kBufAlloc / kMaxPayload; ++i) SendData(c, chunk);
  EXPECT_EQ(c.buffered_bytes(), kBufAlloc);
  EXPECT_FALSE(c.closed());
  SendData(c, "y");  // one byte beyond the credit we gave
  EXPECT_TRUE(c.closed());
  EXPECT_EQ(DrainOps(c), std::vector<uint16_t>{VIRTIO_VSOCK_OP_RST});
}

TEST(ConnectionTest, CreditUpdateWhenTheGuestRunsLow) {
  Connection c = Established();
  const std::string chunk(kMaxPayload, 'x');
  // The host reads as fast as the guest sends: 2 packets leave the guest enough credit.
  SendData(c, chunk);
  SendData(c, chunk);
  EXPECT_EQ(HostString(c).size(), 2 * kMaxPayload);
  EXPECT_FALSE(c.HasControlPacket());
  // Two more and its view of our free space (kBufAlloc - 4 * 64 KiB = 0) is below the
  // threshold: tell it what we forwarded.
  SendData(c, chunk);
  SendData(c, chunk);
  HostString(c);
  std::optional<PacketHeader> h = c.TakeControlPacket();
  ASSERT_TRUE(h.has_value());
  EXPECT_EQ(h->op, VIRTIO_VSOCK_OP_CREDIT_UPDATE);
  EXPECT_EQ(h->fwd_cnt, 4 * kMaxPayload);
  // Data to the guest carries fwd_cnt too and replaces a pending update.
  SendData(c, chunk);
  SendData(c, chunk);
  SendData(c, chunk);
  SendData(c, chunk);
  HostString(c);
  EXPECT_TRUE(c.HasControlPacket());
  EXPECT_EQ(c.TakeDataHeader(1).fwd_cnt, 8 * kMaxPayload);
  EXPECT_FALSE(c.HasControlPacket());
}

TEST(ConnectionTest, GuestCloseIsConfirmedWithRstAfterFlush) {
  Connection c = Established();
  SendData(c, "last words");
  c.OnGuestPacket(FromGuest(VIRTIO_VSOCK_OP_SHUTDOWN), {});  // flags 0: nothing changes
  PacketHeader shutdown = FromGuest(VIRTIO_VSOCK_OP_SHUTDOWN);
  shutdown.flags = VIRTIO_VSOCK_SHUTDOWN_SEND | VIRTIO_VSOCK_SHUTDOWN_RCV;
  c.OnGuestPacket(shutdown, {});
  EXPECT_FALSE(c.closed());  // "last words" are not written yet
  EXPECT_FALSE(c.ShouldShutdownHostWrite());
  EXPECT_EQ(HostString(c), "last words");
  EXPECT_TRUE(c.closed());
  EXPECT_EQ(DrainOps(c), std::vector<uint16_t>{VIRTIO_VSOCK_OP_RST});
}

TEST(ConnectionTest, HalfCloseBothWays) {
  Connection c = Established();
  PacketHeader shutdown = FromGuest(VIRTIO_VSOCK_OP_SHUTDOWN);
  shutdown.flags = VIRTIO_VSOCK_SHUTDOWN_SEND;
  SendData(c, "abc");
  c.OnGuestPacket(shutdown, {});
  EXPECT_FALSE(c.ShouldShutdownHostWrite());
  EXPECT_EQ(HostString(c), "abc");
  EXPECT_TRUE(c.ShouldShutdownHostWrite());  // the muxer half-closes the host socket
  // The guest may still receive.
  EXPECT_TRUE(c.WantsHostData());
  // Data after its own SHUTDOWN(SEND) is a protocol violation... tested below; first the host
  // finishes too: SHUTDOWN(SEND|RCV), then wait for the guest's RST.
  c.OnHostEof();
  EXPECT_FALSE(c.WantsHostData());
  std::optional<PacketHeader> h = c.TakeControlPacket();
  ASSERT_TRUE(h.has_value());
  EXPECT_EQ(h->op, VIRTIO_VSOCK_OP_SHUTDOWN);
  EXPECT_EQ(h->flags, uint32_t{VIRTIO_VSOCK_SHUTDOWN_SEND | VIRTIO_VSOCK_SHUTDOWN_RCV});
  EXPECT_EQ(c.state(), ConnectionState::kClosing);
  c.OnGuestPacket(FromGuest(VIRTIO_VSOCK_OP_RST), {});
  EXPECT_TRUE(c.closed());
  EXPECT_TRUE(DrainOps(c).empty());
}

TEST(ConnectionTest, HostEofFirst) {
  Connection c = Established();
  c.OnHostEof();
  std::optional<PacketHeader> h = c.TakeControlPacket();
  ASSERT_TRUE(h.has_value());
  EXPECT_EQ(h->op, VIRTIO_VSOCK_OP_SHUTDOWN);
  EXPECT_EQ(h->flags, uint32_t{VIRTIO_VSOCK_SHUTDOWN_SEND});
  // The guest can still send.
  SendData(c, "reply");
  EXPECT_EQ(HostString(c), "reply");
  PacketHeader shutdown = FromGuest(VIRTIO_VSOCK_OP_SHUTDOWN);
  shutdown.flags = VIRTIO_VSOCK_SHUTDOWN_SEND | VIRTIO_VSOCK_SHUTDOWN_RCV;
  c.OnGuestPacket(shutdown, {});
  EXPECT_TRUE(c.closed());
  EXPECT_EQ(DrainOps(c), std::vector<uint16_t>{VIRTIO_VSOCK_OP_RST});
}

TEST(ConnectionTest, DataAfterShutdownSendResets) {
  Connection c = Established();
  PacketHeader shutdown = FromGuest(VIRTIO_VSOCK_OP_SHUTDOWN);
  shutdown.flags = VIRTIO_VSOCK_SHUTDOWN_SEND;
  c.OnGuestPacket(shutdown, {});
  SendData(c, "zombie");
  EXPECT_TRUE(c.closed());
  EXPECT_EQ(DrainOps(c), std::vector<uint16_t>{VIRTIO_VSOCK_OP_RST});
}

TEST(ConnectionTest, GuestShutdownRcvStopsHostData) {
  Connection c = Established();
  PacketHeader shutdown = FromGuest(VIRTIO_VSOCK_OP_SHUTDOWN);
  shutdown.flags = VIRTIO_VSOCK_SHUTDOWN_RCV;
  c.OnGuestPacket(shutdown, {});
  EXPECT_FALSE(c.WantsHostData());
  EXPECT_EQ(c.GuestCredit(), 0u);
  SendData(c, "still sending");
  EXPECT_EQ(HostString(c), "still sending");
}

TEST(ConnectionTest, RequestOrResponseOnAnOpenStreamResets) {
  for (uint16_t op : {VIRTIO_VSOCK_OP_REQUEST, VIRTIO_VSOCK_OP_RESPONSE}) {
    Connection c = Established();
    c.OnGuestPacket(FromGuest(op), {});
    EXPECT_TRUE(c.closed()) << op;
    EXPECT_EQ(DrainOps(c), std::vector<uint16_t>{VIRTIO_VSOCK_OP_RST});
  }
}

TEST(ConnectionTest, GuestRstDropsBufferedData) {
  Connection c = Established();
  SendData(c, "unwritten");
  c.OnGuestPacket(FromGuest(VIRTIO_VSOCK_OP_RST), {});
  EXPECT_TRUE(c.closed());
  EXPECT_TRUE(DrainOps(c).empty());
  // Nothing more happens to a closed connection.
  SendData(c, "more");
  c.OnHostEof();
  c.Abort("test");
  EXPECT_TRUE(DrainOps(c).empty());
}

}  // namespace
}  // namespace kapsel::vmm::virtio::vsock
