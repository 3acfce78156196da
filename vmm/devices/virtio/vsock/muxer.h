// The host side of a hybrid vsock device: every connection between the guest and host Unix
// sockets, keyed by (our port, the guest's port).
//
//   Host -> guest: a program connects to `uds_path` and writes "CONNECT <guest port>\n" (at most
//   kMaxConnectLine bytes, within connect_line_timeout). We pick a local port (from 2^30 up),
//   send the guest a REQUEST, and on its RESPONSE write "OK <local port>\n" to the program; then
//   bytes flow both ways. A guest RST (nothing listening) closes the program's socket.
//
//   Guest -> host: a REQUEST to port N connects to the Unix socket "<uds_path>_<N>"; if nothing
//   listens there, the guest gets RST.
//
// The sockets are served by the VMM's event loop. Packets for the guest wait here until the
// device has rx buffers: at most a few control packets per connection (as flags), data read from
// a host socket only when a buffer is being filled, and a bounded list of RSTs for packets that
// match no connection. Guest data waits in its connection's bounded buffer (Connection).
//
// Thread-safe: the device calls in from vCPU threads (reset) and the event loop; the socket
// handlers run on the event loop. Lock order: the device's lock, then the muxer's. The rx-ready
// callback is called without the muxer's lock.
#ifndef KAPSEL_VMM_DEVICES_VIRTIO_VSOCK_MUXER_H_
#define KAPSEL_VMM_DEVICES_VIRTIO_VSOCK_MUXER_H_

#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "common/unique_fd.h"
#include "vmm/devices/virtio/vsock/connection.h"
#include "vmm/devices/virtio/vsock/packet.h"
#include "vmm/devices/virtio/vsock/unix_socket.h"
#include "vmm/event_loop.h"

namespace kapsel::vmm::virtio::vsock {

// The first local port given to host-initiated connections.
inline constexpr uint32_t kFirstHostPort = uint32_t{1} << 30;
// Longest accepted "CONNECT <port>\n" line.
inline constexpr size_t kMaxConnectLine = 32;

struct MuxerOptions {
  uint64_t guest_cid = 3;
  std::string uds_path;
  size_t max_connections = 1024;
  // Accepted host sockets that have not sent their CONNECT line yet.
  size_t max_pending_clients = 64;
  size_t max_orphan_rsts = 256;
  absl::Duration connect_line_timeout = absl::Seconds(5);
  // For the guest's answer to a REQUEST, and for its RST after our SHUTDOWN.
  absl::Duration guest_timeout = absl::Seconds(10);
};

class Muxer {
 public:
  // Listens on options.uds_path (see ListenUnix) and registers with `loop`, which must outlive
  // the muxer.
  static absl::StatusOr<std::unique_ptr<Muxer>> Create(MuxerOptions options, EventLoop* loop);
  ~Muxer();

  Muxer(const Muxer&) = delete;
  Muxer& operator=(const Muxer&) = delete;

  // Called on the event loop when packets for the guest become pending.
  void SetRxReadyCallback(std::function<void()> callback);

  // A packet from the guest's tx queue: the header and the bytes that followed it (the device
  // passes at most kMaxPayload + 1 of them, enough to detect an oversized packet).
  void OnGuestPacket(const PacketHeader& header, absl::Span<const uint8_t> payload);

  // Whether a packet for the guest may be pending (NextRxPacket can still find nothing).
  bool HasRxPacket();
  // The next packet for the guest, header and payload, at most `max_bytes` long (an rx buffer's
  // size, >= kHeaderSize); empty when nothing is pending. Valid until the next call.
  absl::Span<const uint8_t> NextRxPacket(size_t max_bytes);

  // The device was reset: drops every connection (closing their host sockets). The listener and
  // host sockets still sending their CONNECT line stay.
  void Reset();

  size_t num_connections();

 private:
  struct Key {
    uint32_t local_port;
    uint32_t peer_port;
    bool operator==(const Key&) const = default;
    template <typename H>
    friend H AbslHashValue(H h, const Key& k) {
      return H::combine(std::move(h), k.local_port, k.peer_port);
    }
  };
  struct Entry {
    explicit Entry(Connection c) : conn(std::move(c)) {}
    Connection conn;
    UniqueFd fd;
    uint32_t armed = 0;          // events the fd is armed for (EPOLLONESHOT), 0 when disarmed
    bool host_readable = false;  // the host socket may have data (or EOF) to read
    bool host_write_shut = false;
    bool in_ready = false;  // queued in ready_
    bool host_initiated = false;
    absl::Time deadline = absl::InfiniteFuture();
  };
  struct PendingClient {
    UniqueFd fd;
    std::string line;
    absl::Time deadline;
  };

  Muxer(MuxerOptions options, EventLoop* loop, UnixListener listener, UniqueFd timer);

  void OnAccept() ABSL_LOCKS_EXCLUDED(mu_);
  void OnClientReadable(int fd) ABSL_LOCKS_EXCLUDED(mu_);
  void OnHostEvent(Key key, uint32_t events) ABSL_LOCKS_EXCLUDED(mu_);
  void OnTimer() ABSL_LOCKS_EXCLUDED(mu_);
  // Calls the rx-ready callback if packets are pending. Called at the end of every handler.
  void NotifyIfRxPending() ABSL_LOCKS_EXCLUDED(mu_);

  // Reads from a pending client; on a complete line it becomes a connection or is dropped.
  void ReadConnectLine(PendingClient& client) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void DropClient(int fd) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void ConnectHostToGuest(int fd, uint32_t guest_port) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void ConnectGuestToHost(const PacketHeader& request) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Adds a connection with its host socket; false (socket closed) if registration fails.
  Entry* AddEntry(Connection conn, UniqueFd fd, bool host_initiated)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  uint32_t AllocatePort() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Queues a packet that belongs to no connection (a RST); dropped beyond max_orphan_rsts.
  void QueueOrphan(const PacketHeader& packet) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // Writes buffered guest bytes to the host socket.
  void FlushHost(Entry& entry) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // After any change to an entry: removes it if closed, else re-arms its fd, queues it for the rx
  // path and keeps its deadline.
  void Update(Entry& entry) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Remove(Key key) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void ArmTimer() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // Fills packet_ with a packet from `entry` if it has one; returns its size (0: none).
  size_t TakePacket(Entry& entry, size_t max_bytes) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  size_t PutHeader(const PacketHeader& header) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const MuxerOptions options_;
  EventLoop* const loop_;
  const UnixListener listener_;
  const UniqueFd timer_;  // timerfd: connect-line and guest timeouts

  absl::Mutex mu_;
  std::function<void()> rx_ready_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<Key, std::unique_ptr<Entry>> entries_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_set<uint32_t> host_ports_ ABSL_GUARDED_BY(mu_);  // local ports in use
  uint32_t next_port_ ABSL_GUARDED_BY(mu_) = kFirstHostPort;
  absl::flat_hash_map<int, std::unique_ptr<PendingClient>> clients_ ABSL_GUARDED_BY(mu_);
  std::deque<Key> ready_ ABSL_GUARDED_BY(mu_);  // entries with something for the guest
  std::deque<PacketHeader> orphan_rsts_ ABSL_GUARDED_BY(mu_);
  bool timer_armed_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<uint8_t> packet_ ABSL_GUARDED_BY(mu_);  // the packet NextRxPacket returned
};

}  // namespace kapsel::vmm::virtio::vsock

#endif  // KAPSEL_VMM_DEVICES_VIRTIO_VSOCK_MUXER_H_
