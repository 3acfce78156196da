#include "vmm/devices/virtio/vsock/muxer.h"

#include <linux/virtio_vsock.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/timerfd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <optional>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "common/status.h"

namespace kapsel::vmm::virtio::vsock {
namespace {

constexpr int kListenBacklog = 128;
constexpr int kAcceptsPerEvent = 16;
constexpr absl::Duration kTimerPeriod = absl::Milliseconds(500);

// "CONNECT <decimal port>\n" -> the port.
std::optional<uint32_t> ParseConnectLine(absl::string_view line) {
  constexpr absl::string_view kPrefix = "CONNECT ";
  if (!absl::ConsumePrefix(&line, kPrefix) || !absl::ConsumeSuffix(&line, "\n")) return {};
  if (line.empty() || line.size() > 10) return {};
  for (char c : line) {
    if (!absl::ascii_isdigit(static_cast<unsigned char>(c))) return {};
  }
  uint32_t port;
  if (!absl::SimpleAtoi(line, &port)) return {};
  return port;
}

// The RST that answers a guest packet.
PacketHeader RstFor(const PacketHeader& packet, uint64_t guest_cid) {
  PacketHeader h;
  h.src_cid = kHostCid;
  h.dst_cid = guest_cid;
  h.src_port = packet.dst_port;
  h.dst_port = packet.src_port;
  h.type = VIRTIO_VSOCK_TYPE_STREAM;
  h.op = VIRTIO_VSOCK_OP_RST;
  return h;
}

bool Retry(int err) { return err == EAGAIN || err == EWOULDBLOCK || err == EINTR; }

}  // namespace

absl::StatusOr<std::unique_ptr<Muxer>> Muxer::Create(MuxerOptions options, EventLoop* loop) {
  absl::StatusOr<UnixListener> listener = ListenUnix(options.uds_path, kListenBacklog);
  if (!listener.ok()) return Annotate(listener.status(), "vsock");
  UniqueFd timer(timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC));
  if (!timer) {
    RemoveListenerFile(options.uds_path, *listener);
    return ErrnoError("vsock: timerfd_create");
  }
  auto muxer = std::unique_ptr<Muxer>(
      new Muxer(std::move(options), loop, *std::move(listener), std::move(timer)));
  Muxer* raw = muxer.get();
  RETURN_IF_ERROR(
      loop->Add(raw->listener_.fd.get(), EPOLLIN, [raw](uint32_t) { raw->OnAccept(); }));
  RETURN_IF_ERROR(loop->Add(raw->timer_.get(), EPOLLIN, [raw](uint32_t) { raw->OnTimer(); }));
  return muxer;
}

Muxer::Muxer(MuxerOptions options, EventLoop* loop, UnixListener listener, UniqueFd timer)
    : options_(std::move(options)),
      loop_(loop),
      listener_(std::move(listener)),
      timer_(std::move(timer)) {}

Muxer::~Muxer() {
  absl::MutexLock lock(&mu_);
  for (auto& [key, entry] : entries_) (void)loop_->Remove(entry->fd.get());
  entries_.clear();
  for (auto& [fd, client] : clients_) (void)loop_->Remove(fd);
  clients_.clear();
  (void)loop_->Remove(listener_.fd.get());
  (void)loop_->Remove(timer_.get());
  RemoveListenerFile(options_.uds_path, listener_);
}

void Muxer::SetRxReadyCallback(std::function<void()> callback) {
  absl::MutexLock lock(&mu_);
  rx_ready_ = std::move(callback);
}

size_t Muxer::num_connections() {
  absl::MutexLock lock(&mu_);
  return entries_.size();
}

void Muxer::Reset() {
  absl::MutexLock lock(&mu_);
  for (auto& [key, entry] : entries_) (void)loop_->Remove(entry->fd.get());
  entries_.clear();
  host_ports_.clear();
  ready_.clear();
  orphan_rsts_.clear();
}

void Muxer::NotifyIfRxPending() {
  std::function<void()> callback;
  {
    absl::MutexLock lock(&mu_);
    if (ready_.empty() && orphan_rsts_.empty()) return;
    callback = rx_ready_;
  }
  if (callback) callback();
}

// ---- Guest packets.

void Muxer::OnGuestPacket(const PacketHeader& h, absl::Span<const uint8_t> payload) {
  absl::MutexLock lock(&mu_);
  const Key key{h.dst_port, h.src_port};
  auto it = entries_.find(key);
  Entry* entry = it == entries_.end() ? nullptr : it->second.get();
  absl::Status valid = ValidateGuestPacket(h, options_.guest_cid, payload.size());
  if (!valid.ok()) {
    // Misaddressed packets are dropped; anything else malformed resets its stream.
    if (h.src_cid != options_.guest_cid || h.dst_cid != kHostCid) return;
    if (entry != nullptr) {
      entry->conn.Abort(absl::StrCat("a malformed guest packet: ", valid.message()));
      Update(*entry);
    } else if (h.op != VIRTIO_VSOCK_OP_RST) {
      QueueOrphan(RstFor(h, options_.guest_cid));
    }
    return;
  }
  if (entry == nullptr) {
    if (h.op == VIRTIO_VSOCK_OP_REQUEST) {
      ConnectGuestToHost(h);
    } else if (h.op != VIRTIO_VSOCK_OP_RST) {
      QueueOrphan(RstFor(h, options_.guest_cid));
    }
    return;
  }
  if (h.op == VIRTIO_VSOCK_OP_REQUEST) {
    entry->conn.Abort("a second guest REQUEST for an open stream");
  } else {
    entry->conn.OnGuestPacket(h, payload);
    if (!entry->conn.HostBytes().empty() || entry->conn.ShouldShutdownHostWrite()) {
      FlushHost(*entry);
    }
  }
  Update(*entry);
}

void Muxer::ConnectGuestToHost(const PacketHeader& request) {
  if (entries_.size() >= options_.max_connections) {
    QueueOrphan(RstFor(request, options_.guest_cid));
    return;
  }
  absl::StatusOr<UniqueFd> fd = ConnectUnix(absl::StrCat(options_.uds_path, "_", request.dst_port));
  if (!fd.ok() || AddEntry(Connection::FromGuest(options_.guest_cid, request), *std::move(fd),
                           false) == nullptr) {
    QueueOrphan(RstFor(request, options_.guest_cid));
  }
}

void Muxer::QueueOrphan(const PacketHeader& packet) {
  if (orphan_rsts_.size() < options_.max_orphan_rsts) orphan_rsts_.push_back(packet);
}

// ---- Packets for the guest.

bool Muxer::HasRxPacket() {
  absl::MutexLock lock(&mu_);
  return !ready_.empty() || !orphan_rsts_.empty();
}

absl::Span<const uint8_t> Muxer::NextRxPacket(size_t max_bytes) {
  absl::MutexLock lock(&mu_);
  if (max_bytes < kHeaderSize) return {};
  if (!orphan_rsts_.empty()) {
    const size_t size = PutHeader(orphan_rsts_.front());
    orphan_rsts_.pop_front();
    return absl::MakeConstSpan(packet_.data(), size);
  }
  // Each queued entry is looked at once: one that cannot send now (no credit, nothing to read,
  // a buffer too small for data) must not keep this loop busy.
  for (size_t n = ready_.size(); n > 0 && !ready_.empty(); --n) {
    const Key key = ready_.front();
    ready_.pop_front();
    auto it = entries_.find(key);
    if (it == entries_.end()) continue;
    Entry& entry = *it->second;
    entry.in_ready = false;
    const size_t size = TakePacket(entry, max_bytes);
    Update(entry);  // may requeue or remove it
    if (size > 0) return absl::MakeConstSpan(packet_.data(), size);
  }
  return {};
}

size_t Muxer::PutHeader(const PacketHeader& header) {
  const std::array<uint8_t, kHeaderSize> bytes = EncodeHeader(header);
  if (packet_.size() < kHeaderSize) packet_.resize(kHeaderSize);
  std::memcpy(packet_.data(), bytes.data(), kHeaderSize);
  return kHeaderSize;
}

size_t Muxer::TakePacket(Entry& entry, size_t max_bytes) {
  Connection& conn = entry.conn;
  if (conn.HasControlPacket()) {
    std::optional<PacketHeader> h = conn.TakeControlPacket();
    if (h.has_value()) return PutHeader(*h);
  }
  if (!entry.host_readable || !conn.WantsHostData()) return 0;
  const size_t max_payload =
      std::min<size_t>({conn.GuestCredit(), max_bytes - kHeaderSize, kMaxPayload});
  if (max_payload == 0) return 0;
  if (packet_.size() < kHeaderSize + max_payload) packet_.resize(kHeaderSize + max_payload);
  const ssize_t n = recv(entry.fd.get(), packet_.data() + kHeaderSize, max_payload, MSG_DONTWAIT);
  if (n > 0) {
    const PacketHeader h = conn.TakeDataHeader(static_cast<uint32_t>(n));
    PutHeader(h);
    return kHeaderSize + static_cast<size_t>(n);
  }
  if (n < 0 && Retry(errno)) {
    if (errno != EINTR) entry.host_readable = false;
    return 0;
  }
  entry.host_readable = false;
  if (n == 0) {
    conn.OnHostEof();
  } else {
    conn.Abort("reading the host socket failed");
  }
  std::optional<PacketHeader> h = conn.TakeControlPacket();
  return h.has_value() ? PutHeader(*h) : 0;
}

// ---- Connection bookkeeping.

Muxer::Entry* Muxer::AddEntry(Connection conn, UniqueFd fd, bool host_initiated) {
  const Key key{conn.local_port(), conn.peer_port()};
  auto entry = std::make_unique<Entry>(std::move(conn));
  entry->fd = std::move(fd);
  entry->host_initiated = host_initiated;
  if (!loop_
           ->Add(entry->fd.get(), EPOLLONESHOT,
                 [this, key](uint32_t events) { OnHostEvent(key, events); })
           .ok()) {
    return nullptr;
  }
  Entry* raw = entry.get();
  entries_[key] = std::move(entry);
  if (host_initiated) host_ports_.insert(key.local_port);
  Update(*raw);
  return raw;
}

void Muxer::Update(Entry& entry) {
  Connection& conn = entry.conn;
  const Key key{conn.local_port(), conn.peer_port()};
  if (conn.closed()) {
    if (conn.ClosedBeforeOk()) {
      // The host program waits for its answer: say why instead of only closing.
      const std::string line =
          absl::StrCat("ERR ", conn.close_reason().empty() ? "closed" : conn.close_reason(), "\n");
      (void)send(entry.fd.get(), line.data(), line.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    }
    if (std::optional<PacketHeader> rst = conn.TakeControlPacket()) QueueOrphan(*rst);
    Remove(key);
    return;
  }
  uint32_t desired = 0;
  switch (conn.state()) {
    case ConnectionState::kRequestPending:
    case ConnectionState::kRequestSent:
      // Only notice the host program going away (data it sent early waits in the socket).
      desired = entry.host_readable ? 0u : uint32_t{EPOLLRDHUP};
      break;
    default:
      if (conn.WantsHostData() && !entry.host_readable) desired |= EPOLLIN | EPOLLRDHUP;
      if (!conn.HostBytes().empty()) desired |= EPOLLOUT;
      break;
  }
  if (desired != 0 && desired != entry.armed) {
    if (loop_->Modify(entry.fd.get(), desired | EPOLLONESHOT).ok()) entry.armed = desired;
  }

  const bool timed =
      conn.state() == ConnectionState::kRequestSent || conn.state() == ConnectionState::kClosing;
  if (!timed) {
    entry.deadline = absl::InfiniteFuture();
  } else if (entry.deadline == absl::InfiniteFuture()) {
    entry.deadline = absl::Now() + options_.guest_timeout;
    ArmTimer();
  }

  const bool has_work = conn.HasControlPacket() || (entry.host_readable && conn.WantsHostData());
  if (has_work && !entry.in_ready) {
    entry.in_ready = true;
    ready_.push_back(key);
  }
}

void Muxer::Remove(Key key) {
  auto it = entries_.find(key);
  if (it == entries_.end()) return;
  (void)loop_->Remove(it->second->fd.get());
  if (it->second->host_initiated) host_ports_.erase(key.local_port);
  if (it->second->in_ready) ready_.erase(std::find(ready_.begin(), ready_.end(), key));
  entries_.erase(it);
}

uint32_t Muxer::AllocatePort() {
  // At most max_connections ports are in use, so this ends quickly.
  while (true) {
    const uint32_t port = next_port_;
    next_port_ = next_port_ == UINT32_MAX ? kFirstHostPort : next_port_ + 1;
    if (!host_ports_.contains(port)) return port;
  }
}

// ---- Host sockets.

void Muxer::FlushHost(Entry& entry) {
  Connection& conn = entry.conn;
  while (true) {
    absl::Span<const uint8_t> bytes = conn.HostBytes();
    if (bytes.empty()) break;
    const ssize_t n = send(entry.fd.get(), bytes.data(), bytes.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0) {
      conn.OnHostWritten(static_cast<size_t>(n));
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && Retry(errno)) return;  // EPOLLOUT will call again
    conn.Abort("writing the host socket failed");
    return;
  }
  if (conn.ShouldShutdownHostWrite() && !entry.host_write_shut) {
    shutdown(entry.fd.get(), SHUT_WR);
    entry.host_write_shut = true;
  }
}

void Muxer::OnHostEvent(Key key, uint32_t events) {
  {
    absl::MutexLock lock(&mu_);
    auto it = entries_.find(key);
    if (it == entries_.end()) return;
    Entry& entry = *it->second;
    entry.armed = 0;
    const ConnectionState state = entry.conn.state();
    if (state == ConnectionState::kRequestPending || state == ConnectionState::kRequestSent) {
      char byte;
      const ssize_t n = recv(entry.fd.get(), &byte, 1, MSG_PEEK | MSG_DONTWAIT);
      if (n == 0 || (n < 0 && !Retry(errno))) {
        entry.conn.Abort("the host program went away");
      } else if (n > 0) {
        entry.host_readable = true;  // early data: read once established
      }
    } else {
      if ((events & (EPOLLOUT | EPOLLERR | EPOLLHUP)) != 0) FlushHost(entry);
      if ((events & (EPOLLIN | EPOLLRDHUP | EPOLLERR | EPOLLHUP)) != 0) entry.host_readable = true;
    }
    Update(entry);
  }
  NotifyIfRxPending();
}

void Muxer::OnAccept() {
  {
    absl::MutexLock lock(&mu_);
    for (int i = 0; i < kAcceptsPerEvent; ++i) {
      UniqueFd fd(accept4(listener_.fd.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC));
      if (!fd) break;
      if (clients_.size() >= options_.max_pending_clients ||
          entries_.size() >= options_.max_connections) {
        continue;  // refused: closed here
      }
      const int raw = fd.get();
      if (!loop_->Add(raw, EPOLLIN, [this, raw](uint32_t) { OnClientReadable(raw); }).ok()) {
        continue;
      }
      auto client = std::make_unique<PendingClient>();
      client->fd = std::move(fd);
      client->deadline = absl::Now() + options_.connect_line_timeout;
      clients_[raw] = std::move(client);
      ArmTimer();
    }
  }
  NotifyIfRxPending();
}

void Muxer::OnClientReadable(int fd) {
  {
    absl::MutexLock lock(&mu_);
    auto it = clients_.find(fd);
    if (it == clients_.end()) return;
    ReadConnectLine(*it->second);
  }
  NotifyIfRxPending();
}

void Muxer::ReadConnectLine(PendingClient& client) {
  const int fd = client.fd.get();
  char buf[kMaxConnectLine];
  const size_t want = kMaxConnectLine - client.line.size();
  // Peek first so that nothing after the newline (the program's first data) is consumed.
  const ssize_t n = recv(fd, buf, want, MSG_PEEK | MSG_DONTWAIT);
  if (n < 0 && Retry(errno)) return;
  if (n <= 0) {
    DropClient(fd);
    return;
  }
  const char* newline = static_cast<const char*>(std::memchr(buf, '\n', static_cast<size_t>(n)));
  const size_t take = newline != nullptr ? static_cast<size_t>(newline - buf + 1) : n;
  if (recv(fd, buf, take, MSG_DONTWAIT) != static_cast<ssize_t>(take)) {
    DropClient(fd);
    return;
  }
  client.line.append(buf, take);
  if (newline == nullptr) {
    if (client.line.size() >= kMaxConnectLine) DropClient(fd);
    return;
  }
  std::optional<uint32_t> port = ParseConnectLine(client.line);
  if (!port.has_value() || entries_.size() >= options_.max_connections) {
    DropClient(fd);
    return;
  }
  // The socket becomes the connection's: re-register it with the connection's handler.
  (void)loop_->Remove(fd);
  UniqueFd stream = std::move(client.fd);
  clients_.erase(fd);
  AddEntry(Connection::ToGuest(options_.guest_cid, AllocatePort(), *port), std::move(stream), true);
}

void Muxer::DropClient(int fd) {
  (void)loop_->Remove(fd);
  clients_.erase(fd);
}

// ---- Timeouts.

void Muxer::ArmTimer() {
  if (timer_armed_) return;
  itimerspec spec{};
  spec.it_value = absl::ToTimespec(kTimerPeriod);
  spec.it_interval = spec.it_value;
  if (timerfd_settime(timer_.get(), 0, &spec, nullptr) == 0) timer_armed_ = true;
}

void Muxer::OnTimer() {
  {
    absl::MutexLock lock(&mu_);
    uint64_t expirations;
    [[maybe_unused]] ssize_t r = read(timer_.get(), &expirations, sizeof(expirations));
    const absl::Time now = absl::Now();
    std::vector<int> late_clients;
    for (auto& [fd, client] : clients_) {
      if (client->deadline <= now) late_clients.push_back(fd);
    }
    for (int fd : late_clients) DropClient(fd);
    std::vector<Key> late;
    bool waiting = !clients_.empty();
    for (auto& [key, entry] : entries_) {
      if (entry->deadline <= now) {
        late.push_back(key);
      } else if (entry->deadline != absl::InfiniteFuture()) {
        waiting = true;
      }
    }
    for (const Key& key : late) {
      auto it = entries_.find(key);
      if (it == entries_.end()) continue;
      it->second->conn.Abort("the guest did not answer in time");
      Update(*it->second);
    }
    if (!waiting) {
      itimerspec off{};
      timerfd_settime(timer_.get(), 0, &off, nullptr);
      timer_armed_ = false;
    }
  }
  NotifyIfRxPending();
}

}  // namespace kapsel::vmm::virtio::vsock
