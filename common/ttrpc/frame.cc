#include "common/ttrpc/frame.h"

#include <errno.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <limits>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/status.h"

namespace kapsel::ttrpc {
namespace {

void PutBigEndian32(uint32_t value, char* out) {
  out[0] = static_cast<char>(value >> 24);
  out[1] = static_cast<char>(value >> 16);
  out[2] = static_cast<char>(value >> 8);
  out[3] = static_cast<char>(value);
}

uint32_t GetBigEndian32(const char* in) {
  const auto* bytes = reinterpret_cast<const unsigned char*>(in);
  return (uint32_t{bytes[0]} << 24) | (uint32_t{bytes[1]} << 16) | (uint32_t{bytes[2]} << 8) |
         uint32_t{bytes[3]};
}

// Waits until fd is ready for `events` or `deadline` passes; false on timeout. An error or hangup
// counts as ready: the next read or write reports it.
bool WaitReady(int fd, short events, absl::Time deadline = absl::InfiniteFuture()) {
  pollfd pfd = {fd, events, 0};
  while (true) {
    int timeout_ms = -1;
    if (deadline != absl::InfiniteFuture()) {
      absl::Duration left = deadline - absl::Now();
      if (left <= absl::ZeroDuration()) return false;
      timeout_ms = static_cast<int>(
          std::min<int64_t>(absl::ToInt64Milliseconds(absl::Ceil(left, absl::Milliseconds(1))),
                            std::numeric_limits<int>::max()));
    }
    int n = poll(&pfd, 1, timeout_ms);
    if (n > 0) return true;
    if (n < 0 && errno != EINTR) return true;
  }
}

}  // namespace

void EncodeFrameHeader(const FrameHeader& header, char out[kFrameHeaderSize]) {
  PutBigEndian32(header.length, out);
  PutBigEndian32(header.stream_id, out + 4);
  out[8] = static_cast<char>(header.type);
  out[9] = static_cast<char>(header.flags);
}

FrameHeader DecodeFrameHeader(const char in[kFrameHeaderSize]) {
  FrameHeader header;
  header.length = GetBigEndian32(in);
  header.stream_id = GetBigEndian32(in + 4);
  header.type = static_cast<uint8_t>(in[8]);
  header.flags = static_cast<uint8_t>(in[9]);
  return header;
}

FrameReader::FrameReader(ReadFn read) : read_(std::move(read)), buffer_(new char[kBufferSize]) {}

FrameReader FrameReader::ForFd(int fd) {
  return FrameReader([fd](char* buffer, size_t size) -> ssize_t {
    while (true) {
      ssize_t n = ::read(fd, buffer, size);
      if (n >= 0) return n;
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        WaitReady(fd, POLLIN);
        continue;
      }
      return -1;
    }
  });
}

absl::StatusOr<size_t> FrameReader::ReadOnce(char* buffer, size_t size) {
  while (true) {
    ssize_t n = read_(buffer, size);
    if (n >= 0) return static_cast<size_t>(n);
    if (errno != EINTR) return ErrnoError("ttrpc: read");
  }
}

absl::StatusOr<bool> FrameReader::Fill(size_t want) {
  if (end_ - begin_ >= want) return true;
  if (begin_ > 0) {
    std::memmove(buffer_.get(), buffer_.get() + begin_, end_ - begin_);
    end_ -= begin_;
    begin_ = 0;
  }
  while (end_ < want) {
    ASSIGN_OR_RETURN(size_t n, ReadOnce(buffer_.get() + end_, kBufferSize - end_));
    if (n == 0) return false;
    end_ += n;
  }
  return true;
}

absl::StatusOr<size_t> FrameReader::ReadSome(char* out, size_t size) {
  if (end_ > begin_) {
    size_t n = std::min(size, end_ - begin_);
    if (out != nullptr) std::memcpy(out, buffer_.get() + begin_, n);
    begin_ += n;
    return n;
  }
  if (out != nullptr && size >= kBufferSize) {
    // Large data goes straight to its destination.
    return ReadOnce(out, size);
  }
  begin_ = end_ = 0;
  ASSIGN_OR_RETURN(size_t n, ReadOnce(buffer_.get(), kBufferSize));
  if (n == 0) return 0;
  end_ = n;
  return ReadSome(out, size);
}

absl::Status FrameReader::ReadExactly(char* out, size_t size) {
  size_t done = 0;
  while (done < size) {
    ASSIGN_OR_RETURN(size_t n, ReadSome(out == nullptr ? nullptr : out + done, size - done));
    if (n == 0) {
      return absl::DataLossError(
          absl::StrCat("ttrpc: stream ended inside a frame (", done, " of ", size, " data bytes)"));
    }
    done += n;
  }
  return absl::OkStatus();
}

absl::StatusOr<Frame> FrameReader::Read() {
  ASSIGN_OR_RETURN(bool complete, Fill(kFrameHeaderSize));
  if (!complete) {
    if (end_ == begin_) return absl::OutOfRangeError("ttrpc: end of stream");
    return absl::DataLossError(absl::StrCat("ttrpc: stream ended inside a frame header (",
                                            end_ - begin_, " of ", kFrameHeaderSize, " bytes)"));
  }
  Frame frame;
  frame.header = DecodeFrameHeader(buffer_.get() + begin_);
  begin_ += kFrameHeaderSize;
  if (frame.header.length > kMaxMessageSize) {
    frame.oversized = true;
    RETURN_IF_ERROR(ReadExactly(nullptr, frame.header.length));
    return frame;
  }
  frame.data.resize(frame.header.length);
  RETURN_IF_ERROR(ReadExactly(frame.data.data(), frame.data.size()));
  return frame;
}

absl::Status WriteFrame(int fd, uint32_t stream_id, MessageType type, absl::string_view data,
                        absl::Time deadline, size_t* written) {
  size_t sent = 0;
  if (written != nullptr) *written = 0;
  if (data.size() > kMaxMessageSize) {
    return absl::InvalidArgumentError(absl::StrCat(
        "ttrpc: message of ", data.size(), " bytes exceeds the limit of ", kMaxMessageSize));
  }
  char header[kFrameHeaderSize];
  EncodeFrameHeader({static_cast<uint32_t>(data.size()), stream_id, static_cast<uint8_t>(type), 0},
                    header);
  const size_t total = kFrameHeaderSize + data.size();
  iovec iov[2] = {{header, sizeof(header)}, {const_cast<char*>(data.data()), data.size()}};
  iovec* next = iov;
  int count = data.empty() ? 1 : 2;
  bool is_socket = true;
  while (count > 0) {
    ssize_t n;
    if (is_socket) {
      msghdr msg = {};
      msg.msg_iov = next;
      msg.msg_iovlen = static_cast<size_t>(count);
      // Never blocks inside sendmsg, so the deadline holds even on a blocking socket.
      n = ::sendmsg(fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
      if (n < 0 && errno == ENOTSOCK) {
        is_socket = false;
        continue;
      }
    } else {
      n = ::writev(fd, next, count);
    }
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        if (!WaitReady(fd, POLLOUT, deadline)) {
          return absl::DeadlineExceededError(
              absl::StrCat("ttrpc: write timed out after ", sent, " of ", total, " bytes"));
        }
        continue;
      }
      return ErrnoError("ttrpc: write");
    }
    auto done = static_cast<size_t>(n);
    sent += done;
    if (written != nullptr) *written = sent;
    while (count > 0 && done >= next->iov_len) {
      done -= next->iov_len;
      ++next;
      --count;
    }
    if (count > 0) {
      next->iov_base = static_cast<char*>(next->iov_base) + done;
      next->iov_len -= done;
    }
  }
  return absl::OkStatus();
}

}  // namespace kapsel::ttrpc
