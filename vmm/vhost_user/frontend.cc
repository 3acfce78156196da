#include "vmm/vhost_user/frontend.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "common/status.h"

namespace kapsel::vmm::vhost_user {
namespace {

// Waits until `fd` is ready for `events` or `deadline` passes.
absl::Status WaitFor(int fd, short events, absl::Time deadline, const std::string& what) {
  while (true) {
    const absl::Duration left = deadline - absl::Now();
    if (left <= absl::ZeroDuration()) {
      return absl::DeadlineExceededError(absl::StrCat("vhost-user: ", what, ": timed out"));
    }
    pollfd p{.fd = fd, .events = events, .revents = 0};
    const int ms = static_cast<int>(absl::ToInt64Milliseconds(left)) + 1;
    const int n = poll(&p, 1, ms);
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoError(absl::StrCat("vhost-user: ", what, ": poll"));
    }
    if (n > 0) return absl::OkStatus();  // ready, or HUP/ERR: the I/O call says which
  }
}

}  // namespace

absl::StatusOr<std::unique_ptr<Frontend>> Frontend::Connect(const std::string& path,
                                                            FrontendOptions options) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof(addr.sun_path)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "vhost-user socket '%s': the path must have 1..%d bytes", path, sizeof(addr.sun_path) - 1));
  }
  std::memcpy(addr.sun_path, path.data(), path.size());
  UniqueFd fd(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!fd) return ErrnoError("vhost-user: socket");
  if (connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    const int err = errno;
    std::string hint;
    if (err == ECONNREFUSED) hint = " (nothing listens there: is the backend running?)";
    if (err == ENOENT) hint = " (no such socket: start the backend, e.g. virtiofsd, first)";
    if (err == EAGAIN) hint = " (the backend's listen queue is full)";
    return ErrnoError(err, absl::StrCat("vhost-user: connect to ", path, hint));
  }
  return std::unique_ptr<Frontend>(new Frontend(std::move(fd), options));
}

std::unique_ptr<Frontend> Frontend::FromSocket(UniqueFd socket, FrontendOptions options) {
  const int flags = fcntl(socket.get(), F_GETFL);
  if (flags >= 0) fcntl(socket.get(), F_SETFL, flags | O_NONBLOCK);
  return std::unique_ptr<Frontend>(new Frontend(std::move(socket), options));
}

absl::Status Frontend::Break(absl::Status status) {
  if (broken_.ok()) broken_ = status;
  return status;
}

absl::Status Frontend::WriteAll(Request request, absl::Span<const uint8_t> bytes,
                                absl::Span<const int> fds, absl::Time deadline) {
  const std::string what = absl::StrCat("sending ", RequestName(request));
  size_t done = 0;
  while (done < bytes.size()) {
    RETURN_IF_ERROR(WaitFor(socket_.get(), POLLOUT, deadline, what));
    iovec iov{.iov_base = const_cast<uint8_t*>(bytes.data() + done),
              .iov_len = bytes.size() - done};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxMemRegions)];
    if (done == 0 && !fds.empty()) {
      const size_t fd_bytes = sizeof(int) * fds.size();
      std::memset(control, 0, sizeof(control));
      msg.msg_control = control;
      msg.msg_controllen = CMSG_SPACE(fd_bytes);
      cmsghdr* cmsg = CMSG_FIRSTHDR(&msg);
      cmsg->cmsg_level = SOL_SOCKET;
      cmsg->cmsg_type = SCM_RIGHTS;
      cmsg->cmsg_len = CMSG_LEN(fd_bytes);
      std::memcpy(CMSG_DATA(cmsg), fds.data(), fd_bytes);
    }
    const ssize_t n = sendmsg(socket_.get(), &msg, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EAGAIN || errno == EINTR) continue;
      return ErrnoError(absl::StrCat("vhost-user: ", what,
                                     errno == EPIPE ? " (the backend closed the connection)" : ""));
    }
    done += static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

absl::Status Frontend::ReadAll(Request request, absl::Span<uint8_t> bytes, absl::Time deadline) {
  const std::string what = absl::StrCat("waiting for the reply to ", RequestName(request));
  size_t done = 0;
  while (done < bytes.size()) {
    RETURN_IF_ERROR(WaitFor(socket_.get(), POLLIN, deadline, what));
    iovec iov{.iov_base = bytes.data() + done, .iov_len = bytes.size() - done};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxMemRegions)];
    msg.msg_control = control;
    msg.msg_controllen = sizeof(control);
    const ssize_t n = recvmsg(socket_.get(), &msg, MSG_CMSG_CLOEXEC);
    if (n < 0) {
      if (errno == EAGAIN || errno == EINTR) continue;
      return ErrnoError(absl::StrCat("vhost-user: ", what));
    }
    // No reply we expect carries file descriptors: close any, and refuse the reply.
    bool got_fds = false;
    for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
      if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
      const size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      for (size_t i = 0; i < count; ++i) {
        int fd;
        std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(fd));
        close(fd);
      }
      got_fds = true;
    }
    if (got_fds || (msg.msg_flags & MSG_CTRUNC) != 0) {
      return absl::DataLossError(
          absl::StrCat("vhost-user: the backend sent file descriptors with "
                       "its reply to ",
                       RequestName(request)));
    }
    if (n == 0) {
      return absl::UnavailableError(
          absl::StrCat("vhost-user: the backend closed the connection "
                       "while we were ",
                       what));
    }
    done += static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<uint8_t>> Frontend::ReceiveReply(Request request, uint32_t size) {
  const absl::Time deadline = absl::Now() + options_.timeout;
  uint8_t header_bytes[kHeaderSize];
  if (absl::Status s = ReadAll(request, absl::MakeSpan(header_bytes), deadline); !s.ok()) {
    return Break(s);
  }
  const Header header = DecodeHeader(header_bytes);
  // A wrong header leaves the rest of the stream unparseable: the connection is done.
  if (absl::Status s = CheckReply(header, request, size); !s.ok()) return Break(s);
  std::vector<uint8_t> payload(size);
  if (absl::Status s = ReadAll(request, absl::MakeSpan(payload), deadline); !s.ok()) {
    return Break(s);
  }
  return payload;
}

absl::Status Frontend::SendRequest(Request request, absl::Span<const uint8_t> payload,
                                   absl::Span<const int> fds, bool ack) {
  if (!broken_.ok()) {
    return absl::FailedPreconditionError(
        absl::StrCat("vhost-user: cannot send ", RequestName(request),
                     ": the connection failed earlier: ", broken_.message()));
  }
  if (fds.size() > kMaxMemRegions) {
    return absl::InvalidArgumentError(absl::StrCat("vhost-user: ", RequestName(request), " with ",
                                                   fds.size(), " file descriptors"));
  }
  const bool need_reply = ack && reply_ack_;
  const std::vector<uint8_t> bytes = Encode(request, need_reply ? kFlagNeedReply : 0, payload);
  if (absl::Status s = WriteAll(request, bytes, fds, absl::Now() + options_.timeout); !s.ok()) {
    return Break(s);
  }
  if (!need_reply) return absl::OkStatus();
  ASSIGN_OR_RETURN(std::vector<uint8_t> reply, ReceiveReply(request, sizeof(uint64_t)));
  ASSIGN_OR_RETURN(const uint64_t result, DecodeU64(reply));
  if (result != 0) {
    // The backend refused the message but the stream is intact.
    return absl::InternalError(absl::StrFormat("vhost-user: the backend rejected %s (status %d)",
                                               RequestName(request), result));
  }
  return absl::OkStatus();
}

absl::StatusOr<uint64_t> Frontend::GetFeatures() {
  RETURN_IF_ERROR(SendRequest(Request::kGetFeatures, {}, {}, /*ack=*/false));
  ASSIGN_OR_RETURN(std::vector<uint8_t> reply,
                   ReceiveReply(Request::kGetFeatures, sizeof(uint64_t)));
  return DecodeU64(reply);
}

absl::Status Frontend::SetFeatures(uint64_t features) {
  return SendRequest(Request::kSetFeatures, EncodeU64(features), {}, /*ack=*/true);
}

absl::StatusOr<uint64_t> Frontend::GetProtocolFeatures() {
  RETURN_IF_ERROR(SendRequest(Request::kGetProtocolFeatures, {}, {}, /*ack=*/false));
  ASSIGN_OR_RETURN(std::vector<uint8_t> reply,
                   ReceiveReply(Request::kGetProtocolFeatures, sizeof(uint64_t)));
  return DecodeU64(reply);
}

absl::Status Frontend::SetProtocolFeatures(uint64_t features) {
  // REPLY_ACK applies from the next message on (this one is sent before the backend knows).
  RETURN_IF_ERROR(
      SendRequest(Request::kSetProtocolFeatures, EncodeU64(features), {}, /*ack=*/false));
  reply_ack_ = (features & (uint64_t{1} << kProtocolFeatureReplyAck)) != 0;
  return absl::OkStatus();
}

absl::Status Frontend::SetOwner() { return SendRequest(Request::kSetOwner, {}, {}, /*ack=*/true); }

absl::StatusOr<uint64_t> Frontend::GetQueueNum() {
  RETURN_IF_ERROR(SendRequest(Request::kGetQueueNum, {}, {}, /*ack=*/false));
  ASSIGN_OR_RETURN(std::vector<uint8_t> reply,
                   ReceiveReply(Request::kGetQueueNum, sizeof(uint64_t)));
  return DecodeU64(reply);
}

absl::Status Frontend::SetMemTable(absl::Span<const MemRegion> regions, absl::Span<const int> fds) {
  if (regions.size() != fds.size()) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "vhost-user: SET_MEM_TABLE with %d regions but %d fds", regions.size(), fds.size()));
  }
  ASSIGN_OR_RETURN(std::vector<uint8_t> payload, EncodeMemTable(regions));
  return SendRequest(Request::kSetMemTable, payload, fds, /*ack=*/true);
}

absl::Status Frontend::SetVringNum(uint32_t index, uint32_t num) {
  return SendRequest(Request::kSetVringNum, EncodeVringState({index, num}), {}, /*ack=*/true);
}

absl::Status Frontend::SetVringAddr(const VringAddr& addr) {
  return SendRequest(Request::kSetVringAddr, EncodeVringAddr(addr), {}, /*ack=*/true);
}

absl::Status Frontend::SetVringBase(uint32_t index, uint32_t base) {
  return SendRequest(Request::kSetVringBase, EncodeVringState({index, base}), {}, /*ack=*/true);
}

absl::StatusOr<uint32_t> Frontend::GetVringBase(uint32_t index) {
  RETURN_IF_ERROR(SendRequest(Request::kGetVringBase, EncodeVringState({index, 0}), {},
                              /*ack=*/false));
  ASSIGN_OR_RETURN(std::vector<uint8_t> reply, ReceiveReply(Request::kGetVringBase, 8));
  ASSIGN_OR_RETURN(VringState state, DecodeVringState(reply));
  if (state.index != index) {
    return Break(absl::DataLossError(absl::StrFormat(
        "vhost-user: GET_VRING_BASE for ring %d answered for ring %d", index, state.index)));
  }
  return state.num;
}

absl::Status Frontend::SetVringKick(uint32_t index, int fd) {
  const int fds[] = {fd};
  return SendRequest(Request::kSetVringKick, EncodeU64(VringFileValue(index, fd >= 0)),
                     fd >= 0 ? absl::MakeConstSpan(fds) : absl::Span<const int>(), /*ack=*/true);
}

absl::Status Frontend::SetVringCall(uint32_t index, int fd) {
  const int fds[] = {fd};
  return SendRequest(Request::kSetVringCall, EncodeU64(VringFileValue(index, fd >= 0)),
                     fd >= 0 ? absl::MakeConstSpan(fds) : absl::Span<const int>(), /*ack=*/true);
}

absl::Status Frontend::SetVringEnable(uint32_t index, bool enable) {
  return SendRequest(Request::kSetVringEnable, EncodeVringState({index, enable ? 1u : 0u}), {},
                     /*ack=*/true);
}

}  // namespace kapsel::vmm::vhost_user
