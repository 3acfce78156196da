#include "vmm/devices/virtio/vsock/connection.h"

#include <linux/virtio_vsock.h>

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace kapsel::vmm::virtio::vsock {

Connection::Connection(uint64_t guest_cid, uint32_t local_port, uint32_t peer_port,
                       ConnectionState state)
    : guest_cid_(guest_cid), local_port_(local_port), peer_port_(peer_port), state_(state) {}

Connection Connection::ToGuest(uint64_t guest_cid, uint32_t local_port, uint32_t guest_port) {
  Connection c(guest_cid, local_port, guest_port, ConnectionState::kRequestPending);
  c.pending_ = kRequest;
  c.host_initiated_ = true;
  return c;
}

Connection Connection::FromGuest(uint64_t guest_cid, const PacketHeader& request) {
  Connection c(guest_cid, request.dst_port, request.src_port, ConnectionState::kEstablished);
  c.peer_buf_alloc_ = request.buf_alloc;
  c.peer_fwd_cnt_ = request.fwd_cnt;
  c.pending_ = kResponse;
  return c;
}

PacketHeader Connection::MakeHeader(uint16_t op) {
  PacketHeader h;
  h.src_cid = kHostCid;
  h.dst_cid = guest_cid_;
  h.src_port = local_port_;
  h.dst_port = peer_port_;
  h.type = VIRTIO_VSOCK_TYPE_STREAM;
  h.op = op;
  h.buf_alloc = kBufAlloc;
  h.fwd_cnt = fwd_cnt_;
  advertised_fwd_cnt_ = fwd_cnt_;
  return h;
}

void Connection::Reset() {
  state_ = ConnectionState::kClosed;
  pending_ = kRst;
}

void Connection::Abort(absl::string_view why) {
  if (state_ == ConnectionState::kClosed) return;
  if (close_reason_.empty()) close_reason_ = std::string(why);
  const bool guest_knows = state_ != ConnectionState::kRequestPending;
  state_ = ConnectionState::kClosed;
  pending_ = guest_knows ? uint32_t{kRst} : 0;
}

void Connection::OnGuestPacket(const PacketHeader& h, absl::Span<const uint8_t> payload) {
  if (state_ == ConnectionState::kClosed) return;
  if (h.op == VIRTIO_VSOCK_OP_RST) {
    // The guest closed or refused: nothing to answer.
    if (close_reason_.empty()) close_reason_ = "the guest refused or reset the connection (RST)";
    state_ = ConnectionState::kClosed;
    pending_ = 0;
    return;
  }
  peer_buf_alloc_ = h.buf_alloc;
  peer_fwd_cnt_ = h.fwd_cnt;
  switch (state_) {
    case ConnectionState::kRequestPending:
      close_reason_ = absl::StrCat("a guest packet (op ", h.op, ") before our request");
      Reset();  // the guest cannot know this connection yet
      return;
    case ConnectionState::kRequestSent:
      if (h.op != VIRTIO_VSOCK_OP_RESPONSE) {
        close_reason_ = absl::StrCat("the guest answered the request with op ", h.op);
        Reset();
        return;
      }
      state_ = ConnectionState::kEstablished;
      preamble_ = absl::StrCat("OK ", local_port_, "\n");
      return;
    default:
      break;
  }
  switch (h.op) {
    case VIRTIO_VSOCK_OP_RW:
      // Data after the guest's own SHUTDOWN(SEND), or beyond the credit we gave it.
      if (guest_shut_send_ || !buffer_.Append(payload)) {
        Reset();
        return;
      }
      rx_cnt_ += static_cast<uint32_t>(payload.size());
      break;
    case VIRTIO_VSOCK_OP_CREDIT_UPDATE:
      break;  // the credit fields were taken above
    case VIRTIO_VSOCK_OP_CREDIT_REQUEST:
      pending_ |= kCreditUpdate;
      break;
    case VIRTIO_VSOCK_OP_SHUTDOWN:
      guest_shut_send_ |= (h.flags & VIRTIO_VSOCK_SHUTDOWN_SEND) != 0;
      guest_shut_recv_ |= (h.flags & VIRTIO_VSOCK_SHUTDOWN_RCV) != 0;
      break;
    default:  // REQUEST or RESPONSE on an open stream
      Reset();
      return;
  }
  MaybeFinish();
}

void Connection::MaybeFinish() {
  if (!open() || !HostBytes().empty()) return;
  if (guest_shut_send_ && guest_shut_recv_) {
    // Clean close by the guest: everything is written, confirm with RST.
    Reset();
    return;
  }
  if (state_ == ConnectionState::kEstablished && host_eof_ && guest_shut_send_) {
    state_ = ConnectionState::kClosing;
    pending_ |= kShutdown;
    shutdown_flags_ = VIRTIO_VSOCK_SHUTDOWN_SEND | VIRTIO_VSOCK_SHUTDOWN_RCV;
  }
}

std::optional<PacketHeader> Connection::TakeControlPacket() {
  if ((pending_ & kRst) != 0) {
    pending_ = 0;
    return MakeHeader(VIRTIO_VSOCK_OP_RST);
  }
  if (state_ == ConnectionState::kClosed) {
    pending_ = 0;
    return std::nullopt;
  }
  if ((pending_ & kRequest) != 0) {
    pending_ &= ~kRequest;
    state_ = ConnectionState::kRequestSent;
    return MakeHeader(VIRTIO_VSOCK_OP_REQUEST);
  }
  if ((pending_ & kResponse) != 0) {
    pending_ &= ~kResponse;
    return MakeHeader(VIRTIO_VSOCK_OP_RESPONSE);
  }
  if ((pending_ & kCreditUpdate) != 0) {
    pending_ &= ~kCreditUpdate;
    return MakeHeader(VIRTIO_VSOCK_OP_CREDIT_UPDATE);
  }
  if ((pending_ & kShutdown) != 0) {
    pending_ &= ~kShutdown;
    PacketHeader h = MakeHeader(VIRTIO_VSOCK_OP_SHUTDOWN);
    h.flags = shutdown_flags_;
    return h;
  }
  return std::nullopt;
}

uint32_t Connection::GuestCredit() const {
  if (!open() || guest_shut_recv_) return 0;
  const uint32_t in_flight = tx_cnt_ - peer_fwd_cnt_;
  return in_flight >= peer_buf_alloc_ ? 0 : peer_buf_alloc_ - in_flight;
}

bool Connection::WantsHostData() const {
  return state_ == ConnectionState::kEstablished && !host_eof_ && GuestCredit() > 0;
}

PacketHeader Connection::TakeDataHeader(uint32_t len) {
  PacketHeader h = MakeHeader(VIRTIO_VSOCK_OP_RW);
  h.len = len;
  tx_cnt_ += len;
  // This header carries the current fwd_cnt: no separate update needed.
  pending_ &= ~kCreditUpdate;
  return h;
}

absl::Span<const uint8_t> Connection::HostBytes() const {
  if (preamble_written_ < preamble_.size()) {
    return absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(preamble_.data()), preamble_.size())
        .subspan(preamble_written_);
  }
  return buffer_.Front();
}

void Connection::OnHostWritten(size_t n) {
  const size_t from_preamble = std::min(n, preamble_.size() - preamble_written_);
  preamble_written_ += from_preamble;
  n -= from_preamble;
  n = std::min(n, buffer_.size());
  buffer_.Consume(n);
  fwd_cnt_ += static_cast<uint32_t>(n);
  // The guest believes it may still send kBufAlloc - (rx_cnt - advertised_fwd_cnt) bytes.
  const int64_t guest_view_free =
      int64_t{kBufAlloc} - static_cast<uint32_t>(rx_cnt_ - advertised_fwd_cnt_);
  if (fwd_cnt_ != advertised_fwd_cnt_ && guest_view_free < kCreditUpdateThreshold && open() &&
      !guest_shut_send_) {
    pending_ |= kCreditUpdate;
  }
  MaybeFinish();
}

bool Connection::ShouldShutdownHostWrite() const {
  return open() && guest_shut_send_ && HostBytes().empty();
}

void Connection::OnHostEof() {
  if (!open() || host_eof_) return;
  host_eof_ = true;
  pending_ |= kShutdown;
  shutdown_flags_ |= VIRTIO_VSOCK_SHUTDOWN_SEND;
  MaybeFinish();
}

}  // namespace kapsel::vmm::virtio::vsock
