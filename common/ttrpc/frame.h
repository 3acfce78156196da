// ttrpc framing: every message on the stream is a 10-byte header followed by `length` bytes of
// data. Header: data length (uint32 big-endian), stream id (uint32 big-endian), message type
// (1 request, 2 response), flags (0).
#ifndef KAPSEL_COMMON_TTRPC_FRAME_H_
#define KAPSEL_COMMON_TTRPC_FRAME_H_

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace kapsel::ttrpc {

inline constexpr size_t kFrameHeaderSize = 10;
// The largest data a message may carry; larger ones are discarded by the reader.
inline constexpr uint32_t kMaxMessageSize = 4 << 20;

enum class MessageType : uint8_t {
  kRequest = 1,
  kResponse = 2,
};

struct FrameHeader {
  uint32_t length = 0;
  uint32_t stream_id = 0;
  uint8_t type = 0;  // a MessageType, or anything a hostile peer sent
  uint8_t flags = 0;
};

void EncodeFrameHeader(const FrameHeader& header, char out[kFrameHeaderSize]);
FrameHeader DecodeFrameHeader(const char in[kFrameHeaderSize]);

struct Frame {
  FrameHeader header;
  // The data; empty when `oversized` (the data was read and dropped to keep the framing).
  std::string data;
  bool oversized = false;
};

// Reads frames from a byte stream through a read(2)-like function (fd, or memory in fuzzers).
// Not thread-safe: one reader per stream.
class FrameReader {
 public:
  // Returns bytes read (0 at end of stream), or -1 with errno set (EINTR is retried).
  using ReadFn = std::function<ssize_t(char* buffer, size_t size)>;

  explicit FrameReader(ReadFn read);
  // Reads from a stream fd it does not own; waits (poll) on EAGAIN.
  static FrameReader ForFd(int fd);

  // The next frame. OutOfRange at a clean end of stream (between frames); DataLoss when the stream
  // ends inside a frame; the errno error when reading fails. After an error, do not call again.
  absl::StatusOr<Frame> Read();

 private:
  // One call of read_, retrying EINTR; 0 at end of stream.
  absl::StatusOr<size_t> ReadOnce(char* buffer, size_t size);
  // Fills buffer_ with at least `want` bytes (want <= kBufferSize); returns false at end of stream.
  absl::StatusOr<bool> Fill(size_t want);
  // Reads up to `size` bytes into `out` from the buffer, then from the stream.
  absl::StatusOr<size_t> ReadSome(char* out, size_t size);
  // Copies/reads exactly `size` bytes into `out` (or discards them when out is null).
  absl::Status ReadExactly(char* out, size_t size);

  static constexpr size_t kBufferSize = 64 * 1024;
  ReadFn read_;
  // Not zero-filled: a page costs memory only once data reaches it, and most frames are small.
  std::unique_ptr<char[]> buffer_;
  size_t begin_ = 0;  // unread data is buffer_[begin_, end_)
  size_t end_ = 0;
};

// Writes one frame (header + data) to a stream fd, looping over partial writes and EINTR. On
// sockets it sends with MSG_NOSIGNAL (a closed peer is EPIPE, not a signal) and MSG_DONTWAIT,
// waiting in poll, so DeadlineExceeded comes at `deadline` however full the socket is (other fds,
// e.g. pipes, block as usual). `written`, if given, receives the bytes written, header included:
// a failure after some bytes leaves the stream unusable. Callers sharing an fd must serialize
// calls. InvalidArgument if data exceeds kMaxMessageSize.
absl::Status WriteFrame(int fd, uint32_t stream_id, MessageType type, absl::string_view data,
                        absl::Time deadline = absl::InfiniteFuture(), size_t* written = nullptr);

}  // namespace kapsel::ttrpc

#endif  // KAPSEL_COMMON_TTRPC_FRAME_H_
