#include "guest-agent/container/sync_channel.h"

#include <poll.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "common/status.h"

namespace kapsel::agent {

int SendSyncMessage(int socket, const SyncMessage& message, int fd) {
  iovec iov{const_cast<SyncMessage*>(&message), sizeof message};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))];
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  if (fd >= 0) {
    memset(control, 0, sizeof control);
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    cmsghdr* cmsg = CMSG_FIRSTHDR(&msg);
    cmsg->cmsg_level = SOL_SOCKET;
    cmsg->cmsg_type = SCM_RIGHTS;
    cmsg->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(cmsg), &fd, sizeof fd);
  }
  for (;;) {
    ssize_t n = sendmsg(socket, &msg, MSG_NOSIGNAL);
    if (n == static_cast<ssize_t>(sizeof message)) return 0;
    if (n < 0 && errno == EINTR) continue;
    return n < 0 ? errno : EMSGSIZE;
  }
}

int ReceiveSyncMessage(int socket, SyncMessage* message, int* fd) {
  *fd = -1;
  iovec iov{message, sizeof *message};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))];
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof control;
  ssize_t n;
  do {
    n = recvmsg(socket, &msg, MSG_CMSG_CLOEXEC);
  } while (n < 0 && errno == EINTR);
  if (n < 0) return -errno;
  for (cmsghdr* cmsg = CMSG_FIRSTHDR(&msg); cmsg != nullptr; cmsg = CMSG_NXTHDR(&msg, cmsg)) {
    if (cmsg->cmsg_level == SOL_SOCKET && cmsg->cmsg_type == SCM_RIGHTS &&
        cmsg->cmsg_len >= CMSG_LEN(sizeof(int))) {
      memcpy(fd, CMSG_DATA(cmsg), sizeof(int));
    }
  }
  if (n == 0) return 0;
  if (n != static_cast<ssize_t>(sizeof *message) || (msg.msg_flags & MSG_CTRUNC) != 0) {
    if (*fd >= 0) close(*fd);
    *fd = -1;
    return -EBADMSG;
  }
  message->text[sizeof message->text - 1] = '\0';
  return 1;
}

absl::StatusOr<std::optional<ReceivedMessage>> ReceiveSyncMessageWithTimeout(
    int socket, absl::Duration timeout) {
  absl::Time deadline = absl::Now() + timeout;
  for (;;) {
    pollfd pfd{socket, POLLIN, 0};
    int64_t ms = absl::ToInt64Milliseconds(deadline - absl::Now());
    if (ms < 0) ms = 0;
    int rc = poll(&pfd, 1, static_cast<int>(ms));
    if (rc < 0 && errno == EINTR) continue;
    if (rc < 0) return ErrnoError("poll on the container sync socket");
    if (rc == 0) {
      return absl::DeadlineExceededError(absl::StrCat(
          "the container process did not answer within ", absl::FormatDuration(timeout)));
    }
    ReceivedMessage received;
    int fd = -1;
    int n = ReceiveSyncMessage(socket, &received.message, &fd);
    received.fd.reset(fd);
    if (n < 0) return ErrnoError(-n, "reading the container sync socket");
    if (n == 0) return std::nullopt;
    return received;
  }
}

absl::Status SyncMessageStatus(const SyncMessage& message, absl::string_view who) {
  std::string text = absl::StrCat(who, ": ", message.text);
  if (message.err != 0) return ErrnoError(message.err, text);
  return absl::FailedPreconditionError(text);
}

}  // namespace kapsel::agent
