// The frame reader and writer: header layout, partial reads, EINTR, end of stream, oversized data.
#include "common/ttrpc/frame.h"

#include <errno.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <string>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"

namespace kapsel::ttrpc {
namespace {

std::string Header(uint32_t length, uint32_t stream_id, uint8_t type, uint8_t flags = 0) {
  char bytes[kFrameHeaderSize];
  EncodeFrameHeader({length, stream_id, type, flags}, bytes);
  return std::string(bytes, sizeof(bytes));
}

std::string RawFrame(uint32_t stream_id, uint8_t type, const std::string& data) {
  return Header(static_cast<uint32_t>(data.size()), stream_id, type) + data;
}

// A reader over `input` that returns at most `chunk` bytes per call and fails with EINTR every
// `eintr_every` calls (0: never).
FrameReader MemoryReader(const std::string& input, size_t chunk, int eintr_every = 0) {
  struct State {
    std::string input;
    size_t offset = 0;
    int calls = 0;
  };
  auto state = std::make_shared<State>();
  state->input = input;
  return FrameReader([state, chunk, eintr_every](char* buffer, size_t size) -> ssize_t {
    if (eintr_every > 0 && ++state->calls % eintr_every == 0) {
      errno = EINTR;
      return -1;
    }
    size_t n = std::min({size, chunk, state->input.size() - state->offset});
    std::memcpy(buffer, state->input.data() + state->offset, n);
    state->offset += n;
    return static_cast<ssize_t>(n);
  });
}

TEST(FrameHeaderTest, BigEndianLayout) {
  EXPECT_EQ(Header(0x01020304, 0x0a0b0c0d, 2, 0),
            std::string("\x01\x02\x03\x04\x0a\x0b\x0c\x0d\x02\x00", 10));
  FrameHeader header = DecodeFrameHeader("\xff\xff\xff\xfe\x80\x00\x00\x01\x07\x05");
  EXPECT_EQ(header.length, 0xfffffffeu);
  EXPECT_EQ(header.stream_id, 0x80000001u);
  EXPECT_EQ(header.type, 7);
  EXPECT_EQ(header.flags, 5);
}

TEST(FrameReaderTest, ReadsFramesInOneByteChunks) {
  std::string big(200 * 1024, 'b');
  std::string input = RawFrame(1, 1, "hello") + RawFrame(3, 2, "") + RawFrame(5, 1, big);
  FrameReader reader = MemoryReader(input, 1);
  absl::StatusOr<Frame> frame = reader.Read();
  ASSERT_TRUE(frame.ok()) << frame.status();
  EXPECT_EQ(frame->header.stream_id, 1u);
  EXPECT_EQ(frame->header.type, 1);
  EXPECT_EQ(frame->data, "hello");
  frame = reader.Read();
  ASSERT_TRUE(frame.ok()) << frame.status();
  EXPECT_EQ(frame->header.stream_id, 3u);
  EXPECT_EQ(frame->data, "");
  frame = reader.Read();
  ASSERT_TRUE(frame.ok()) << frame.status();
  EXPECT_EQ(frame->data, big);
  EXPECT_TRUE(absl::IsOutOfRange(reader.Read().status()));
}

TEST(FrameReaderTest, ReadsLargeChunksAndRetriesEintr) {
  std::string big(3 << 20, 'z');
  std::string input = RawFrame(7, 1, "x") + RawFrame(9, 1, big) + RawFrame(11, 1, "y");
  FrameReader reader = MemoryReader(input, 1 << 20, /*eintr_every=*/2);
  std::vector<std::string> seen;
  while (true) {
    absl::StatusOr<Frame> frame = reader.Read();
    if (!frame.ok()) {
      EXPECT_TRUE(absl::IsOutOfRange(frame.status())) << frame.status();
      break;
    }
    seen.push_back(frame->data);
  }
  ASSERT_EQ(seen.size(), 3u);
  EXPECT_EQ(seen[1], big);
}

TEST(FrameReaderTest, CleanEndVersusTruncation) {
  EXPECT_TRUE(absl::IsOutOfRange(MemoryReader("", 100).Read().status()));
  EXPECT_TRUE(absl::IsDataLoss(MemoryReader(Header(5, 1, 1).substr(0, 7), 100).Read().status()));
  EXPECT_TRUE(absl::IsDataLoss(MemoryReader(Header(5, 1, 1) + "abc", 100).Read().status()));
}

TEST(FrameReaderTest, OversizedDataIsDiscardedAndFramingKept) {
  std::string input = Header(kMaxMessageSize + 1, 1, 1) + std::string(kMaxMessageSize + 1, 'o') +
                      RawFrame(3, 1, "next");
  FrameReader reader = MemoryReader(input, 1 << 16);
  absl::StatusOr<Frame> frame = reader.Read();
  ASSERT_TRUE(frame.ok()) << frame.status();
  EXPECT_TRUE(frame->oversized);
  EXPECT_TRUE(frame->data.empty());
  EXPECT_EQ(frame->header.length, kMaxMessageSize + 1);
  frame = reader.Read();
  ASSERT_TRUE(frame.ok()) << frame.status();
  EXPECT_FALSE(frame->oversized);
  EXPECT_EQ(frame->data, "next");
  // An oversized frame cut short is a truncation.
  EXPECT_TRUE(
      absl::IsDataLoss(MemoryReader(Header(0xffffffff, 1, 1) + "abc", 100).Read().status()));
}

TEST(FrameReaderTest, ExactlyTheLimitIsAccepted) {
  std::string data(kMaxMessageSize, 'l');
  absl::StatusOr<Frame> frame = MemoryReader(RawFrame(1, 1, data), 1 << 20).Read();
  ASSERT_TRUE(frame.ok()) << frame.status();
  EXPECT_FALSE(frame->oversized);
  EXPECT_EQ(frame->data.size(), kMaxMessageSize);
}

int SocketPairOrDie(int fds[2]) {
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0) abort();
  return 0;
}

void NoopHandler(int) {}

TEST(FrameWriterTest, LargeFramesCrossASocketWithEintr) {
  int fds[2];
  SocketPairOrDie(fds);
  // Signals without SA_RESTART make blocked reads and writes fail with EINTR.
  struct sigaction action = {};
  action.sa_handler = NoopHandler;
  struct sigaction old;
  ASSERT_EQ(sigaction(SIGUSR1, &action, &old), 0);

  std::string big(3 << 20, 'w');
  std::thread writer([&] {
    for (int i = 0; i < 4; ++i) {
      EXPECT_TRUE(WriteFrame(fds[0], 2 * i + 1, MessageType::kRequest, big).ok());
    }
    EXPECT_TRUE(WriteFrame(fds[0], 99, MessageType::kResponse, "").ok());
  });
  pthread_t writer_thread = writer.native_handle();
  FrameReader reader = FrameReader::ForFd(fds[1]);
  for (int i = 0; i < 4; ++i) {
    pthread_kill(writer_thread, SIGUSR1);
    absl::StatusOr<Frame> frame = reader.Read();
    ASSERT_TRUE(frame.ok()) << frame.status();
    EXPECT_EQ(frame->header.stream_id, static_cast<uint32_t>(2 * i + 1));
    EXPECT_EQ(frame->data, big);
  }
  absl::StatusOr<Frame> last = reader.Read();
  ASSERT_TRUE(last.ok());
  EXPECT_EQ(last->header.type, 2);
  writer.join();
  close(fds[0]);
  EXPECT_TRUE(absl::IsOutOfRange(reader.Read().status()));
  close(fds[1]);
  sigaction(SIGUSR1, &old, nullptr);
}

TEST(FrameWriterTest, ClosedPeerIsAnErrorNotSigpipe) {
  int fds[2];
  SocketPairOrDie(fds);
  close(fds[1]);
  absl::Status status = WriteFrame(fds[0], 1, MessageType::kRequest, "data");
  EXPECT_FALSE(status.ok());
  close(fds[0]);
}

TEST(FrameWriterTest, WorksOnPipes) {
  int fds[2];
  ASSERT_EQ(pipe(fds), 0);
  ASSERT_TRUE(WriteFrame(fds[1], 5, MessageType::kResponse, "piped").ok());
  close(fds[1]);
  FrameReader reader = FrameReader::ForFd(fds[0]);
  absl::StatusOr<Frame> frame = reader.Read();
  ASSERT_TRUE(frame.ok()) << frame.status();
  EXPECT_EQ(frame->data, "piped");
  EXPECT_EQ(frame->header.stream_id, 5u);
  close(fds[0]);
}

TEST(FrameWriterTest, DeadlineBoundsAWriteNobodyReads) {
  int fds[2];
  SocketPairOrDie(fds);
  size_t written = 0;
  absl::Time start = absl::Now();
  absl::Status status =
      WriteFrame(fds[0], 1, MessageType::kRequest, std::string(kMaxMessageSize, 'd'),
                 absl::Now() + absl::Milliseconds(100), &written);
  EXPECT_TRUE(absl::IsDeadlineExceeded(status)) << status;
  EXPECT_GT(written, 0u);
  EXPECT_LT(written, kMaxMessageSize);
  EXPECT_LT(absl::Now() - start, absl::Seconds(5));
  close(fds[0]);
  close(fds[1]);
}

TEST(FrameWriterTest, RefusesOversizedData) {
  EXPECT_TRUE(absl::IsInvalidArgument(
      WriteFrame(-1, 1, MessageType::kRequest, std::string(kMaxMessageSize + 1, 'x'))));
}

}  // namespace
}  // namespace kapsel::ttrpc
