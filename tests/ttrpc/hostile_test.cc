// Raw bytes against the server (malformed frames, oversized data, garbage), and the client's wire
// format checked against a hand-driven peer.
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/ttrpc/client.h"
#include "common/ttrpc/frame.h"
#include "common/ttrpc/proto/ttrpc.pb.h"
#include "common/ttrpc/request_codec.h"
#include "common/ttrpc/server.h"
#include "gtest/gtest.h"
#include "tests/ttrpc/echo_service.h"
#include "tests/ttrpc/test_service.pb.h"

namespace kapsel::ttrpc {
namespace {

using ::kapsel::ttrpc::test::EchoRequest;
using ::kapsel::ttrpc::test::EchoResponse;
using ::kapsel::ttrpc::testing::kEchoService;
using ::kapsel::ttrpc::testing::SocketPair;

std::string Header(uint32_t length, uint32_t stream_id, uint8_t type, uint8_t flags = 0) {
  char bytes[kFrameHeaderSize];
  EncodeFrameHeader({length, stream_id, type, flags}, bytes);
  return std::string(bytes, sizeof(bytes));
}

std::string EchoRequestData(const std::string& text) {
  EchoRequest echo;
  echo.set_text(text);
  return *EncodeRequest(kEchoService, "Echo", echo.SerializeAsString(), absl::InfiniteDuration(),
                        {});
}

std::string Frame(uint32_t stream_id, uint8_t type, const std::string& data, uint8_t flags = 0) {
  return Header(static_cast<uint32_t>(data.size()), stream_id, type, flags) + data;
}

bool WriteAll(int fd, const std::string& bytes) {
  size_t done = 0;
  while (done < bytes.size()) {
    ssize_t n = send(fd, bytes.data() + done, bytes.size() - done, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    done += static_cast<size_t>(n);
  }
  return true;
}

// A raw connection to the server.
class RawPeer {
 public:
  explicit RawPeer(Server* server) {
    auto [mine, theirs] = SocketPair();
    fd_ = std::move(mine);
    EXPECT_TRUE(server->ServeConnection(std::move(theirs)).ok());
    reader_ = std::make_unique<FrameReader>(FrameReader::ForFd(fd_.get()));
  }
  int fd() const { return fd_.get(); }
  bool Send(const std::string& bytes) { return WriteAll(fd_.get(), bytes); }

  // The next answer: its stream id and the call's outcome.
  std::pair<uint32_t, absl::StatusOr<std::string>> Answer() {
    absl::StatusOr<ttrpc::Frame> frame = reader_->Read();
    if (!frame.ok()) return {0, frame.status()};
    EXPECT_EQ(frame->header.type, static_cast<uint8_t>(MessageType::kResponse));
    return {frame->header.stream_id, DecodeResponse(frame->data)};
  }
  // The read side of the connection ended (the server closed it).
  bool ClosedByServer() { return absl::IsOutOfRange(reader_->Read().status()); }

  // A valid Echo round trip still works on this connection.
  void ExpectEchoWorks(uint32_t stream_id) {
    ASSERT_TRUE(Send(Frame(stream_id, 1, EchoRequestData("still here"))));
    auto [id, result] = Answer();
    EXPECT_EQ(id, stream_id);
    ASSERT_TRUE(result.ok()) << result.status();
    EchoResponse response;
    ASSERT_TRUE(response.ParseFromString(*result));
    EXPECT_EQ(response.text(), "still here");
  }

 private:
  UniqueFd fd_;
  std::unique_ptr<FrameReader> reader_;
};

class HostileTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(testing::RegisterEchoService(&server_).ok()); }

  // A well-behaved client on another connection is served.
  void ExpectOthersServed() {
    auto [client_end, server_end] = SocketPair();
    ASSERT_TRUE(server_.ServeConnection(std::move(server_end)).ok());
    Client client(std::move(client_end));
    EchoRequest request;
    request.set_text("other");
    EchoResponse response;
    ASSERT_TRUE(client.Call(kEchoService, "Echo", request, &response).ok());
    EXPECT_EQ(response.text(), "other");
  }

  void ExpectConnectionsDrainTo(size_t count) {
    for (int i = 0; i < 500 && server_.connection_count() > count; ++i) {
      absl::SleepFor(absl::Milliseconds(10));
    }
    EXPECT_EQ(server_.connection_count(), count);
  }

  Server server_;
};

TEST_F(HostileTest, WrongTypeByteIsAnsweredAndTheConnectionGoesOn) {
  RawPeer peer(&server_);
  for (uint8_t type : {0, 2, 7, 255}) {
    ASSERT_TRUE(peer.Send(Frame(11, type, EchoRequestData("typed"))));
    auto [id, result] = peer.Answer();
    EXPECT_EQ(id, 11u);
    EXPECT_TRUE(absl::IsInvalidArgument(result.status())) << result.status();
  }
  peer.ExpectEchoWorks(13);
}

TEST_F(HostileTest, OversizedMessageIsDiscardedAndAnsweredResourceExhausted) {
  RawPeer peer(&server_);
  const uint32_t length = kMaxMessageSize + 1024 * 1024;
  ASSERT_TRUE(peer.Send(Header(length, 5, 1) + std::string(length, 'o')));
  auto [id, result] = peer.Answer();
  EXPECT_EQ(id, 5u);
  EXPECT_TRUE(absl::IsResourceExhausted(result.status())) << result.status();
  // The framing held: the same connection serves the next request.
  peer.ExpectEchoWorks(7);
}

TEST_F(HostileTest, EvenStreamIdIsInvalidArgument) {
  RawPeer peer(&server_);
  ASSERT_TRUE(peer.Send(Frame(2, 1, EchoRequestData("even"))));
  auto [id, result] = peer.Answer();
  EXPECT_EQ(id, 2u);
  EXPECT_TRUE(absl::IsInvalidArgument(result.status())) << result.status();
  peer.ExpectEchoWorks(3);
}

TEST_F(HostileTest, ProtobufGarbageIsInvalidArgument) {
  RawPeer peer(&server_);
  // Not a Request at all.
  ASSERT_TRUE(peer.Send(Frame(1, 1, "\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01")));
  auto [id, result] = peer.Answer();
  EXPECT_EQ(id, 1u);
  EXPECT_TRUE(absl::IsInvalidArgument(result.status())) << result.status();
  // A Request whose payload is not an EchoRequest.
  ASSERT_TRUE(peer.Send(Frame(3, 1,
                              *EncodeRequest(kEchoService, "Echo",
                                             "\x0a\x7f"
                                             "abc",
                                             absl::InfiniteDuration(), {}))));
  std::tie(id, result) = peer.Answer();
  EXPECT_EQ(id, 3u);
  EXPECT_TRUE(absl::IsInvalidArgument(result.status())) << result.status();
  // An empty request names no service.
  ASSERT_TRUE(peer.Send(Frame(5, 1, "")));
  std::tie(id, result) = peer.Answer();
  EXPECT_EQ(id, 5u);
  EXPECT_TRUE(absl::IsUnimplemented(result.status())) << result.status();
  peer.ExpectEchoWorks(7);
}

TEST_F(HostileTest, NonzeroFlagsAreIgnored) {
  RawPeer peer(&server_);
  ASSERT_TRUE(peer.Send(Frame(1, 1, EchoRequestData("flags"), /*flags=*/0x06)));
  auto [id, result] = peer.Answer();
  EXPECT_EQ(id, 1u);
  EXPECT_TRUE(result.ok()) << result.status();
}

TEST_F(HostileTest, TruncatedFrameThenCloseEndsOnlyThatConnection) {
  {
    RawPeer peer(&server_);
    peer.ExpectEchoWorks(1);
    ASSERT_TRUE(peer.Send(Header(100, 3, 1) + "only ten b"));
    ASSERT_EQ(shutdown(peer.fd(), SHUT_WR), 0);
    EXPECT_TRUE(peer.ClosedByServer());
  }
  {
    RawPeer peer(&server_);
    ASSERT_TRUE(peer.Send(Header(0xffffffff, 1, 1) + "abc"));
    ASSERT_EQ(shutdown(peer.fd(), SHUT_WR), 0);
    EXPECT_TRUE(peer.ClosedByServer());
  }
  {
    RawPeer peer(&server_);
    ASSERT_TRUE(peer.Send("\x00\x00\x00"));  // half a header
    ASSERT_EQ(shutdown(peer.fd(), SHUT_WR), 0);
    EXPECT_TRUE(peer.ClosedByServer());
  }
  ExpectConnectionsDrainTo(0);
  ExpectOthersServed();
}

TEST_F(HostileTest, RandomGarbageNeverHurtsTheServer) {
  std::mt19937 random(4);
  for (int round = 0; round < 20; ++round) {
    RawPeer peer(&server_);
    std::string bytes;
    // Random frames with small lengths (so they complete), then pure noise.
    for (int i = 0; i < 20; ++i) {
      std::string data(random() % 64, '\0');
      for (char& c : data) c = static_cast<char>(random());
      bytes += Header(static_cast<uint32_t>(data.size()), static_cast<uint32_t>(random()),
                      static_cast<uint8_t>(random() % 4)) +
               data;
    }
    for (int i = 0; i < 200; ++i) bytes += static_cast<char>(random());
    peer.Send(bytes);
    shutdown(peer.fd(), SHUT_WR);
    // Drain whatever the server answers until it closes.
    while (peer.Answer().second.status().code() != absl::StatusCode::kOutOfRange) {
    }
  }
  ExpectConnectionsDrainTo(0);
  ExpectOthersServed();
}

TEST(HostileServerTest, PeerThatNeverReadsLosesItsConnection) {
  ServerOptions options;
  options.write_timeout = absl::Milliseconds(300);
  options.max_threads = 8;
  Server server(options);
  ASSERT_TRUE(testing::RegisterEchoService(&server).ok());
  RawPeer peer(&server);
  // Answers that are never read fill the socket buffer; handlers give up writing after the
  // write timeout and the connection is dropped, so it cannot hold the handler threads.
  std::string bytes;
  EchoRequest echo;
  echo.set_blob(std::string(256 * 1024, 'f'));
  std::string data =
      *EncodeRequest(kEchoService, "Echo", echo.SerializeAsString(), absl::InfiniteDuration(), {});
  for (uint32_t id = 1; id < 80; id += 2) bytes += Frame(id, 1, data);
  std::thread writer([&] { peer.Send(bytes); });
  for (int i = 0; i < 500 && server.connection_count() > 0; ++i) {
    absl::SleepFor(absl::Milliseconds(10));
  }
  EXPECT_EQ(server.connection_count(), 0u);
  writer.join();
  // Every handler thread is free again.
  auto [client_end, server_end] = SocketPair();
  ASSERT_TRUE(server.ServeConnection(std::move(server_end)).ok());
  Client client(std::move(client_end));
  std::vector<std::thread> callers;
  std::atomic<int> good{0};
  for (int i = 0; i < 8; ++i) {
    callers.emplace_back([&] {
      EchoRequest request;
      request.set_sleep_ms(100);
      EchoResponse response;
      if (client.Call(kEchoService, "Slow", request, &response).ok()) ++good;
    });
  }
  for (std::thread& caller : callers) caller.join();
  EXPECT_EQ(good.load(), 8);
}

// The client as seen from a hand-driven server end.
TEST(ClientWireTest, StreamIdsRequestFieldsAndOddAnswers) {
  auto [client_end, peer_end] = SocketPair();
  Client client(std::move(client_end));
  FrameReader reader = FrameReader::ForFd(peer_end.get());

  std::vector<absl::StatusOr<std::string>> results(3);
  std::vector<std::thread> callers;
  for (int i = 0; i < 3; ++i) {
    // One at a time so the stream ids are assigned in order.
    callers.emplace_back([&, i] {
      CallOptions options = CallOptions::WithTimeout(absl::Seconds(30));
      options.metadata = {{"containerd-namespace-ttrpc", "ns"}};
      results[i] = client.CallRaw("svc.S", absl::StrCat("M", i), absl::StrCat("p", i), options);
    });
    absl::StatusOr<ttrpc::Frame> frame = reader.Read();
    ASSERT_TRUE(frame.ok()) << frame.status();
    EXPECT_EQ(frame->header.stream_id, static_cast<uint32_t>(1 + 2 * i));
    EXPECT_EQ(frame->header.type, 1);
    EXPECT_EQ(frame->header.flags, 0);
    ::ttrpc::Request request;
    ASSERT_TRUE(request.ParseFromString(frame->data));
    EXPECT_EQ(request.service(), "svc.S");
    EXPECT_EQ(request.method(), absl::StrCat("M", i));
    EXPECT_EQ(request.payload(), absl::StrCat("p", i));
    EXPECT_GT(request.timeout_nano(), 29'000'000'000);
    ASSERT_EQ(request.metadata_size(), 1);
    EXPECT_EQ(request.metadata(0).value(), "ns");
  }
  // Noise the client must ignore: an answer to no call, a request-typed frame.
  ASSERT_TRUE(WriteFrame(peer_end.get(), 99, MessageType::kResponse,
                         EncodeResponse(absl::OkStatus(), "stray"))
                  .ok());
  ASSERT_TRUE(WriteFrame(peer_end.get(), 1, MessageType::kRequest, "junk").ok());
  // Answers out of order; stream 3 gets an oversized frame.
  ASSERT_TRUE(WriteFrame(peer_end.get(), 5, MessageType::kResponse,
                         EncodeResponse(absl::AbortedError("five"), ""))
                  .ok());
  ASSERT_TRUE(WriteAll(peer_end.get(),
                       Header(kMaxMessageSize + 1, 3, 2) + std::string(kMaxMessageSize + 1, 'x')));
  ASSERT_TRUE(
      WriteFrame(peer_end.get(), 1, MessageType::kResponse, EncodeResponse(absl::OkStatus(), "one"))
          .ok());
  for (std::thread& caller : callers) caller.join();
  ASSERT_TRUE(results[0].ok()) << results[0].status();
  EXPECT_EQ(*results[0], "one");
  EXPECT_TRUE(absl::IsResourceExhausted(results[1].status())) << results[1].status();
  EXPECT_EQ(results[2].status(), absl::AbortedError("five"));

  // The peer closing fails a pending call with Unavailable.
  std::thread last(
      [&] { EXPECT_TRUE(absl::IsUnavailable(client.CallRaw("svc.S", "M", "").status())); });
  ASSERT_TRUE(reader.Read().ok());
  peer_end.reset();
  last.join();
}

}  // namespace
}  // namespace kapsel::ttrpc
