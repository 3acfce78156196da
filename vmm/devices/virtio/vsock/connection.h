// One vsock stream between the guest and a host Unix socket, as a state machine without I/O: the
// muxer feeds it the guest's packets and what happened on the host socket, and takes from it the
// packets to send to the guest and the bytes to write to the host socket.
//
// Flow control (virtio 1.x 5.10.6.3): every packet to the guest advertises our receive buffer
// (kBufAlloc) and fwd_cnt, the bytes we have written to the host socket; guest data beyond that
// credit resets the connection. Data to the guest never exceeds the credit the guest advertised
// (its buf_alloc minus the bytes in flight, tx_cnt - its fwd_cnt).
//
// Shutdown: a guest SHUTDOWN(SEND) becomes a half-close of the host socket once the buffered
// bytes are written; a guest SHUTDOWN(SEND|RCV) is answered with RST once they are. End of file
// on the host socket becomes SHUTDOWN(SEND) to the guest; when both directions are finished we
// send SHUTDOWN(SEND|RCV) and wait for the guest's RST (state kClosing; the muxer times it out).
#ifndef KAPSEL_VMM_DEVICES_VIRTIO_VSOCK_CONNECTION_H_
#define KAPSEL_VMM_DEVICES_VIRTIO_VSOCK_CONNECTION_H_

#include <cstdint>
#include <optional>
#include <string>

#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "vmm/devices/virtio/vsock/byte_ring.h"
#include "vmm/devices/virtio/vsock/packet.h"

namespace kapsel::vmm::virtio::vsock {

// Our receive buffer per connection: guest bytes not yet written to the host socket.
inline constexpr uint32_t kBufAlloc = 256 * 1024;
// A CREDIT_UPDATE goes out once the guest's view of our free buffer falls below this and we have
// forwarded bytes it does not know about.
inline constexpr uint32_t kCreditUpdateThreshold = 64 * 1024;

enum class ConnectionState {
  kRequestPending,  // host-initiated: REQUEST not yet handed to the guest
  kRequestSent,     // host-initiated: waiting for the guest's RESPONSE (or RST)
  kEstablished,
  kClosing,  // we sent SHUTDOWN(SEND|RCV) and wait for the guest's RST
  kClosed,   // finished; at most a final RST is left to send
};

class Connection {
 public:
  // A host program asked (CONNECT) for guest port `guest_port`; we use `local_port` as ours.
  static Connection ToGuest(uint64_t guest_cid, uint32_t local_port, uint32_t guest_port);
  // The guest's REQUEST (already validated) reached a host socket: we answer RESPONSE.
  static Connection FromGuest(uint64_t guest_cid, const PacketHeader& request);

  ConnectionState state() const { return state_; }
  bool closed() const { return state_ == ConnectionState::kClosed; }
  uint32_t local_port() const { return local_port_; }
  uint32_t peer_port() const { return peer_port_; }

  // ---- Guest side.
  // A packet from the guest for this connection, already validated (ValidateGuestPacket).
  void OnGuestPacket(const PacketHeader& header, absl::Span<const uint8_t> payload);
  bool HasControlPacket() const { return pending_ != 0; }
  // The next control packet for the guest (REQUEST, RESPONSE, CREDIT_UPDATE, SHUTDOWN, RST).
  std::optional<PacketHeader> TakeControlPacket();
  // Payload bytes the guest can take now (its credit); 0 unless the stream is open both ways.
  uint32_t GuestCredit() const;
  // Whether data from the host socket can go to the guest now (open, not at EOF, credit > 0).
  bool WantsHostData() const;
  // The RW header for `len` (<= GuestCredit()) bytes read from the host socket.
  PacketHeader TakeDataHeader(uint32_t len);

  // ---- Host side.
  // The next bytes to write to the host socket ("OK <port>\n" first for host-initiated streams).
  absl::Span<const uint8_t> HostBytes() const;
  // The host socket accepted the first n bytes of HostBytes().
  void OnHostWritten(size_t n);
  // True once the guest has shut down its sending side and every byte is written: the muxer
  // half-closes the host socket (shutdown(SHUT_WR)).
  bool ShouldShutdownHostWrite() const;
  // The host socket reached end of file.
  void OnHostEof();
  // The host socket failed or went away, or a timeout expired: RST to the guest (unless it never
  // heard of the connection) and closed. `why` becomes close_reason() unless one is set.
  void Abort(absl::string_view why);
  // Why a connection closed before it was established, for the host program that asked for it.
  const std::string& close_reason() const { return close_reason_; }
  // A host-initiated connection that closed before its "OK" line: its host program is still
  // waiting for an answer (the muxer sends it "ERR <close_reason>\n").
  bool ClosedBeforeOk() const { return closed() && host_initiated_ && preamble_.empty(); }

  // Guest bytes buffered for the host socket (for tests).
  size_t buffered_bytes() const { return buffer_.size(); }
  uint32_t fwd_cnt() const { return fwd_cnt_; }

 private:
  enum Pending : uint32_t {
    kRequest = 1,
    kResponse = 2,
    kCreditUpdate = 4,
    kShutdown = 8,
    kRst = 16,
  };

  Connection(uint64_t guest_cid, uint32_t local_port, uint32_t peer_port, ConnectionState state);
  PacketHeader MakeHeader(uint16_t op);
  // Guest protocol violation or refusal: RST and closed.
  void Reset();
  // Moves on when a shutdown is complete (see the file comment).
  void MaybeFinish();
  bool open() const {
    return state_ == ConnectionState::kEstablished || state_ == ConnectionState::kClosing;
  }

  uint64_t guest_cid_;
  uint32_t local_port_;
  uint32_t peer_port_;
  ConnectionState state_;
  uint32_t pending_ = 0;         // Pending bits
  uint32_t shutdown_flags_ = 0;  // for the pending SHUTDOWN

  // Host-bound bytes: the CONNECT answer, then guest data.
  std::string preamble_;
  size_t preamble_written_ = 0;
  bool host_initiated_ = false;
  std::string close_reason_;
  ByteRing buffer_{kBufAlloc};

  // Counters (wrapping, as on the wire).
  uint32_t fwd_cnt_ = 0;             // guest bytes written to the host socket
  uint32_t advertised_fwd_cnt_ = 0;  // fwd_cnt in the last packet to the guest
  uint32_t rx_cnt_ = 0;              // guest bytes received
  uint32_t tx_cnt_ = 0;              // bytes sent to the guest
  uint32_t peer_buf_alloc_ = 0;
  uint32_t peer_fwd_cnt_ = 0;

  bool guest_shut_send_ = false;  // the guest will send no more
  bool guest_shut_recv_ = false;  // the guest will receive no more
  bool host_eof_ = false;         // the host socket will send no more
};

}  // namespace kapsel::vmm::virtio::vsock

#endif  // KAPSEL_VMM_DEVICES_VIRTIO_VSOCK_CONNECTION_H_
