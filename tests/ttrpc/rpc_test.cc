// Client and server together, over socketpairs and Unix socket paths.
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "common/ttrpc/address.h"
#include "common/ttrpc/client.h"
#include "common/ttrpc/frame.h"
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
using ::kapsel::ttrpc::testing::TempDir;

EchoRequest Text(const std::string& text) {
  EchoRequest request;
  request.set_text(text);
  return request;
}

class RpcTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(testing::RegisterEchoService(&server_).ok()); }

  // A client on one end of a socketpair whose other end the server serves.
  std::unique_ptr<Client> Connect() {
    auto [client_end, server_end] = SocketPair();
    EXPECT_TRUE(server_.ServeConnection(std::move(server_end)).ok());
    return std::make_unique<Client>(std::move(client_end));
  }

  Server server_;
};

TEST_F(RpcTest, TypedCallOverSocketpair) {
  std::unique_ptr<Client> client = Connect();
  EchoRequest request = Text("hello");
  request.set_blob(std::string("\0\1\2", 3));
  EchoResponse response;
  ASSERT_TRUE(client->Call(kEchoService, "Echo", request, &response).ok());
  EXPECT_EQ(response.text(), "hello");
  EXPECT_EQ(response.blob(), std::string("\0\1\2", 3));
  EXPECT_EQ(response.deadline_in_ms(), -1);
  EXPECT_EQ(response.connection_id(), 1u);
  EXPECT_FALSE(response.cancelled());
}

TEST_F(RpcTest, RawHandlerAndRawCall) {
  std::unique_ptr<Client> client = Connect();
  absl::StatusOr<std::string> answer = client->CallRaw(kEchoService, "Reverse", "abc");
  ASSERT_TRUE(answer.ok()) << answer.status();
  EXPECT_EQ(*answer, "cba");
  answer = client->CallRaw(kEchoService, "Reverse", "");
  ASSERT_TRUE(answer.ok()) << answer.status();
  EXPECT_EQ(*answer, "");
}

TEST_F(RpcTest, UnixSocketPaths) {
  TempDir dir;
  const std::string path = dir.path() + "/ttrpc.sock";
  absl::StatusOr<UniqueFd> listener = ListenUnix("unix://" + path);
  ASSERT_TRUE(listener.ok()) << listener.status();
  EXPECT_TRUE(absl::IsAlreadyExists(ListenUnix(path).status()));
  ASSERT_TRUE(server_.Start(std::move(*listener)).ok());

  for (const std::string& address : {"unix://" + path, "unix:" + path, path}) {
    absl::StatusOr<std::unique_ptr<Client>> client = Client::Dial(address);
    ASSERT_TRUE(client.ok()) << address << ": " << client.status();
    EchoResponse response;
    ASSERT_TRUE((*client)->Call(kEchoService, "Echo", Text(address), &response).ok());
    EXPECT_EQ(response.text(), address);
  }
  EXPECT_FALSE(Client::Dial(dir.path() + "/missing.sock").ok());
}

TEST_F(RpcTest, AbstractSocket) {
  const std::string address = absl::StrCat("@kapsel-ttrpc-test-", getpid());
  absl::StatusOr<UniqueFd> listener = ListenUnix(address);
  ASSERT_TRUE(listener.ok()) << listener.status();
  ASSERT_TRUE(server_.Start(std::move(*listener)).ok());
  absl::StatusOr<std::unique_ptr<Client>> client = Client::Dial(address);
  ASSERT_TRUE(client.ok()) << client.status();
  EchoResponse response;
  ASSERT_TRUE((*client)->Call(kEchoService, "Echo", Text("abstract"), &response).ok());
  EXPECT_EQ(response.text(), "abstract");
}

TEST_F(RpcTest, ErrorsPropagateWithCodeAndMessage) {
  std::unique_ptr<Client> client = Connect();
  for (absl::StatusCode code : {absl::StatusCode::kNotFound, absl::StatusCode::kInvalidArgument,
                                absl::StatusCode::kFailedPrecondition, absl::StatusCode::kInternal,
                                absl::StatusCode::kUnauthenticated}) {
    EchoRequest request = Text(absl::StrCat("failure ", static_cast<int>(code)));
    request.set_code(static_cast<int>(code));
    EchoResponse response;
    absl::Status status = client->Call(kEchoService, "Fail", request, &response);
    EXPECT_EQ(status, absl::Status(code, request.text()));
  }
}

TEST_F(RpcTest, UnknownServiceOrMethodIsUnimplemented) {
  std::unique_ptr<Client> client = Connect();
  EchoResponse response;
  absl::Status status = client->Call("no.Such", "Echo", Text("x"), &response);
  EXPECT_TRUE(absl::IsUnimplemented(status)) << status;
  EXPECT_NE(status.message().find("no.Such"), absl::string_view::npos) << status;
  status = client->Call(kEchoService, "Nope", Text("x"), &response);
  EXPECT_TRUE(absl::IsUnimplemented(status)) << status;
  EXPECT_NE(status.message().find("Nope"), absl::string_view::npos) << status;
}

TEST_F(RpcTest, UndecodablePayloadIsInvalidArgument) {
  std::unique_ptr<Client> client = Connect();
  absl::StatusOr<std::string> answer = client->CallRaw(kEchoService, "Echo", "\xff\xff\xff");
  EXPECT_TRUE(absl::IsInvalidArgument(answer.status())) << answer.status();
  // And an answer the caller cannot decode is Internal.
  EchoResponse response;
  EXPECT_TRUE(absl::IsInternal(client->Call(kEchoService, "Reverse", Text("abc"), &response)));
}

TEST_F(RpcTest, DuplicateRegistrationIsRefused) {
  EXPECT_TRUE(absl::IsAlreadyExists(server_.Register(
      kEchoService, "Echo",
      [](const std::string& p, const CallContext&) { return absl::StatusOr<std::string>(p); })));
}

TEST_F(RpcTest, MetadataRoundTrip) {
  std::unique_ptr<Client> client = Connect();
  CallOptions options;
  options.metadata = {
      {std::string(kNamespaceMetadataKey), "kapseltest"}, {"k", "1"}, {"k", "2"}, {"empty", ""}};
  EchoResponse response;
  ASSERT_TRUE(client->Call(kEchoService, "Echo", Text("m"), &response, options).ok());
  ASSERT_EQ(response.metadata_size(), 4);
  EXPECT_EQ(response.metadata(0), "containerd-namespace-ttrpc=kapseltest");
  EXPECT_EQ(response.metadata(1), "k=1");
  EXPECT_EQ(response.metadata(2), "k=2");
  EXPECT_EQ(response.metadata(3), "empty=");
}

TEST_F(RpcTest, HandlerSeesTheDeadline) {
  std::unique_ptr<Client> client = Connect();
  EchoResponse response;
  ASSERT_TRUE(client
                  ->Call(kEchoService, "Echo", Text("d"), &response,
                         CallOptions::WithTimeout(absl::Seconds(5)))
                  .ok());
  EXPECT_GT(response.deadline_in_ms(), 3000);
  EXPECT_LE(response.deadline_in_ms(), 5000);
}

TEST_F(RpcTest, SlowHandlerGivesDeadlineExceededAndTheConnectionGoesOn) {
  std::unique_ptr<Client> client = Connect();
  EchoRequest slow = Text("slow");
  slow.set_sleep_ms(1500);
  EchoResponse response;
  absl::Time start = absl::Now();
  absl::Status status = client->Call(kEchoService, "Slow", slow, &response,
                                     CallOptions::WithTimeout(absl::Milliseconds(100)));
  EXPECT_TRUE(absl::IsDeadlineExceeded(status)) << status;
  EXPECT_LT(absl::Now() - start, absl::Seconds(1));
  // The late answer arrives and is dropped; the next calls get their own answers.
  for (int i = 0; i < 3; ++i) {
    slow.set_sleep_ms(i == 0 ? 1600 : 0);
    slow.set_text(absl::StrCat("next ", i));
    ASSERT_TRUE(client->Call(kEchoService, "Slow", slow, &response).ok());
    EXPECT_EQ(response.text(), slow.text());
  }
  EXPECT_TRUE(absl::IsDeadlineExceeded(client->Call(
      kEchoService, "Echo", slow, &response, CallOptions::WithTimeout(absl::ZeroDuration()))));
}

TEST_F(RpcTest, HundredConcurrentCallsOnOneConnection) {
  std::unique_ptr<Client> client = Connect();
  constexpr int kThreads = 5;
  constexpr int kCallsPerThread = 20;
  std::atomic<int> good{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kCallsPerThread; ++i) {
        EchoRequest request = Text(absl::StrCat("t", t, "-", i));
        // Different delays make answers come back out of order.
        request.set_sleep_ms((t * 7 + i * 13) % 20);
        request.set_blob(std::string(static_cast<size_t>(i) * 1000, static_cast<char>('a' + t)));
        EchoResponse response;
        absl::Status status = client->Call(kEchoService, "Slow", request, &response);
        if (status.ok() && response.text() == request.text() && response.blob() == request.blob()) {
          ++good;
        } else {
          ADD_FAILURE() << status << " " << response.text() << " for " << request.text();
        }
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_EQ(good.load(), kThreads * kCallsPerThread);
}

TEST_F(RpcTest, ConcurrentCallsReallyOverlap) {
  std::unique_ptr<Client> client = Connect();
  // 20 calls sleeping 300 ms each finish in far less than 20 * 300 ms.
  absl::Time start = absl::Now();
  std::vector<std::thread> threads;
  for (int i = 0; i < 20; ++i) {
    threads.emplace_back([&] {
      EchoRequest request = Text("overlap");
      request.set_sleep_ms(300);
      EchoResponse response;
      EXPECT_TRUE(client->Call(kEchoService, "Slow", request, &response).ok());
    });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_LT(absl::Now() - start, absl::Seconds(3));
}

TEST_F(RpcTest, ManyConnections) {
  TempDir dir;
  const std::string path = dir.path() + "/many.sock";
  absl::StatusOr<UniqueFd> listener = ListenUnix(path);
  ASSERT_TRUE(listener.ok()) << listener.status();
  ASSERT_TRUE(server_.Start(std::move(*listener)).ok());
  constexpr int kClients = 30;
  std::vector<std::thread> threads;
  std::atomic<int> good{0};
  for (int c = 0; c < kClients; ++c) {
    threads.emplace_back([&, c] {
      absl::StatusOr<std::unique_ptr<Client>> client = Client::Dial(path);
      ASSERT_TRUE(client.ok()) << client.status();
      for (int i = 0; i < 10; ++i) {
        EchoRequest request = Text(absl::StrCat(c, "/", i));
        EchoResponse response;
        if ((*client)->Call(kEchoService, "Echo", request, &response).ok() &&
            response.text() == request.text()) {
          ++good;
        }
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_EQ(good.load(), kClients * 10);
  // Closed clients' connections are forgotten by the server.
  for (int i = 0; i < 500 && server_.connection_count() > 0; ++i)
    absl::SleepFor(absl::Milliseconds(10));
  EXPECT_EQ(server_.connection_count(), 0u);
}

TEST_F(RpcTest, ShutdownWithCallsInFlight) {
  TempDir dir;
  const std::string path = dir.path() + "/shutdown.sock";
  absl::StatusOr<UniqueFd> listener = ListenUnix(path);
  ASSERT_TRUE(listener.ok()) << listener.status();
  ASSERT_TRUE(server_.Start(std::move(*listener)).ok());
  std::vector<std::unique_ptr<Client>> clients;
  clients.push_back(Connect());
  clients.push_back(*Client::Dial(path));
  std::vector<std::thread> threads;
  std::atomic<int> unavailable{0};
  for (int i = 0; i < 10; ++i) {
    threads.emplace_back([&, i] {
      EchoRequest request = Text("forever");
      request.set_sleep_ms(60'000);
      EchoResponse response;
      absl::Status status = clients[i % 2]->Call(kEchoService, "Slow", request, &response);
      if (absl::IsUnavailable(status)) ++unavailable;
    });
  }
  // Let the calls reach their handlers.
  absl::SleepFor(absl::Milliseconds(200));
  absl::Time start = absl::Now();
  server_.Shutdown();
  for (std::thread& thread : threads) thread.join();
  EXPECT_LT(absl::Now() - start, absl::Seconds(5));
  EXPECT_EQ(unavailable.load(), 10);
  EchoResponse response;
  EXPECT_TRUE(absl::IsUnavailable(clients[0]->Call(kEchoService, "Echo", Text("x"), &response)));
  EXPECT_FALSE(Client::Dial(path).ok());
  auto [a, b] = SocketPair();
  EXPECT_TRUE(absl::IsFailedPrecondition(server_.ServeConnection(std::move(a))));
  server_.Shutdown();  // idempotent
}

TEST_F(RpcTest, RunAfterResponseRunsOnceTheAnswerIsOut) {
  // The hook waits for the client to have its answer: had it run before the answer was written,
  // the client would still be waiting when the hook gives up.
  absl::Notification client_answered, hook_done;
  std::vector<std::string> order;
  bool answer_was_out = false;
  ASSERT_TRUE((server_.RegisterMethod<EchoRequest, EchoResponse>(
                   kEchoService, "Then",
                   [&](const EchoRequest& request, const CallContext& context) {
                     context.RunAfterResponse([&] {
                       answer_was_out =
                           client_answered.WaitForNotificationWithTimeout(absl::Seconds(10));
                       order.push_back("first");
                     });
                     context.RunAfterResponse([&] {
                       order.push_back("second");
                       hook_done.Notify();
                     });
                     EchoResponse response;
                     response.set_text(request.text());
                     return response;
                   }))
                  .ok());
  std::unique_ptr<Client> client = Connect();
  EchoResponse response;
  ASSERT_TRUE(client->Call(kEchoService, "Then", Text("x"), &response).ok());
  EXPECT_EQ(response.text(), "x");
  client_answered.Notify();
  ASSERT_TRUE(hook_done.WaitForNotificationWithTimeout(absl::Seconds(20)));
  EXPECT_TRUE(answer_was_out);
  EXPECT_EQ(order, (std::vector<std::string>{"first", "second"}));
}

TEST_F(RpcTest, ClientCloseFailsPendingCalls) {
  std::unique_ptr<Client> client = Connect();
  std::thread caller([&] {
    EchoRequest request = Text("pending");
    request.set_sleep_ms(60'000);
    EchoResponse response;
    EXPECT_TRUE(absl::IsUnavailable(client->Call(kEchoService, "Slow", request, &response)));
  });
  absl::SleepFor(absl::Milliseconds(100));
  client->Close();
  caller.join();
  EXPECT_TRUE(client->closed());
  EchoResponse response;
  EXPECT_TRUE(absl::IsUnavailable(client->Call(kEchoService, "Echo", Text("x"), &response)));
}

TEST_F(RpcTest, ServerSideCancellationWhenClientGoes) {
  absl::Notification started;
  absl::Notification cancelled;
  ASSERT_TRUE(server_
                  .Register(kEchoService, "WaitForCancel",
                            [&](const std::string&, const CallContext& context) {
                              started.Notify();
                              if (context.WaitForCancellation(absl::Now() + absl::Seconds(30))) {
                                cancelled.Notify();
                              }
                              return absl::StatusOr<std::string>("");
                            })
                  .ok());
  std::unique_ptr<Client> client = Connect();
  std::thread caller([&] { (void)client->CallRaw(kEchoService, "WaitForCancel", ""); });
  ASSERT_TRUE(started.WaitForNotificationWithTimeout(absl::Seconds(30)));
  client->Close();
  caller.join();
  EXPECT_TRUE(cancelled.WaitForNotificationWithTimeout(absl::Seconds(5)));
}

TEST_F(RpcTest, RequestThatCannotBeSentInTime) {
  // The peer never reads: the request cannot leave within the call's timeout.
  auto [client_end, peer_end] = SocketPair();
  Client client(std::move(client_end));
  std::string payload(kMaxMessageSize - 1024, 'p');
  absl::Time start = absl::Now();
  absl::StatusOr<std::string> answer = client.CallRaw(
      kEchoService, "Reverse", payload, CallOptions::WithTimeout(absl::Milliseconds(200)));
  EXPECT_TRUE(absl::IsDeadlineExceeded(answer.status())) << answer.status();
  EXPECT_LT(absl::Now() - start, absl::Seconds(5));
}

TEST_F(RpcTest, SizeLimits) {
  std::unique_ptr<Client> client = Connect();
  EchoResponse response;
  EchoRequest big = Text("big");
  big.set_blob(std::string(kMaxMessageSize, 'b'));
  EXPECT_TRUE(absl::IsResourceExhausted(client->Call(kEchoService, "Echo", big, &response)));
  EXPECT_TRUE(absl::IsResourceExhausted(client->Call(kEchoService, "Huge", Text("h"), &response)));
  // Just under the limit works both ways.
  big.set_blob(std::string(kMaxMessageSize - 1024, 'b'));
  ASSERT_TRUE(client->Call(kEchoService, "Echo", big, &response).ok());
  EXPECT_EQ(response.blob().size(), big.blob().size());
}

TEST_F(RpcTest, ServerGoneMeansUnavailable) {
  auto [client_end, server_end] = SocketPair();
  Client client(std::move(client_end));
  server_end.reset();
  EchoResponse response;
  absl::Status status = client.Call(kEchoService, "Echo", Text("x"), &response);
  EXPECT_TRUE(absl::IsUnavailable(status)) << status;
}

}  // namespace
}  // namespace kapsel::ttrpc
