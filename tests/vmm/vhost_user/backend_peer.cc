#include "tests/vmm/vhost_user/backend_peer.h"

#include <poll.h>
#include <sys/socket.h>

#include <cstring>

#include "absl/time/clock.h"

namespace kapsel::vmm::vhost_user::testing {
namespace {

// Reads exactly `len` bytes, collecting SCM_RIGHTS fds; false on EOF/timeout.
bool ReadExact(int fd, uint8_t* buf, size_t len, absl::Time deadline, std::vector<UniqueFd>* fds) {
  size_t done = 0;
  while (done < len) {
    const int64_t ms = absl::ToInt64Milliseconds(deadline - absl::Now());
    if (ms <= 0) return false;
    pollfd p{.fd = fd, .events = POLLIN, .revents = 0};
    if (poll(&p, 1, static_cast<int>(ms)) <= 0) continue;
    iovec iov{.iov_base = buf + done, .iov_len = len - done};
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * 16)];
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof(control);
    const ssize_t n = recvmsg(fd, &msg, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) continue;
    if (n <= 0) return false;
    for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
      if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
      const size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      for (size_t i = 0; i < count; ++i) {
        int received;
        std::memcpy(&received, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
        fds->emplace_back(received);
      }
    }
    done += static_cast<size_t>(n);
  }
  return true;
}

}  // namespace

std::optional<Received> ReadMessage(int fd, absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  Received received;
  uint8_t header_bytes[kHeaderSize];
  if (!ReadExact(fd, header_bytes, sizeof(header_bytes), deadline, &received.fds)) {
    return std::nullopt;
  }
  const Header header = DecodeHeader(header_bytes);
  if (header.size > 4096) return std::nullopt;
  received.message.request = header.request;
  received.message.flags = header.flags;
  received.message.payload.resize(header.size);
  if (!ReadExact(fd, received.message.payload.data(), header.size, deadline, &received.fds)) {
    return std::nullopt;
  }
  return received;
}

void WriteRaw(int fd, uint32_t request, uint32_t flags, const std::vector<uint8_t>& payload) {
  std::vector<uint8_t> bytes(kHeaderSize);
  const uint32_t size = static_cast<uint32_t>(payload.size());
  std::memcpy(bytes.data(), &request, 4);
  std::memcpy(bytes.data() + 4, &flags, 4);
  std::memcpy(bytes.data() + 8, &size, 4);
  bytes.insert(bytes.end(), payload.begin(), payload.end());
  [[maybe_unused]] ssize_t n = send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL);
}

void Reply(int fd, Request request, const std::vector<uint8_t>& payload) {
  WriteRaw(fd, static_cast<uint32_t>(request), kVersion | kFlagReply, payload);
}

std::pair<UniqueFd, UniqueFd> SocketPair() {
  int fds[2] = {-1, -1};
  socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds);
  return {UniqueFd(fds[0]), UniqueFd(fds[1])};
}

}  // namespace kapsel::vmm::vhost_user::testing
