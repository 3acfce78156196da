// libFuzzer target: arbitrary bytes as what a ttrpc server answers a client. The shim is the
// client of the guest agent, so these are bytes a hostile guest chooses. Every input goes through
// the frame reader and response decoding in memory (chunked reads); one input in four also
// answers a real Client over a socketpair with three calls in flight, which must each end (with
// any status) and leave the client closed once the bytes run out.
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "common/ttrpc/client.h"
#include "common/ttrpc/frame.h"
#include "common/ttrpc/request_codec.h"
#include "tests/ttrpc/echo_service.h"
#include "tests/ttrpc/fuzz_input.h"
#include "tests/ttrpc/test_service.pb.h"

namespace kapsel::ttrpc {
namespace {

void InMemory(const uint8_t* data, size_t size) {
  FrameReader reader = testing::FuzzInputReader(data, size);
  while (true) {
    absl::StatusOr<Frame> frame = reader.Read();
    if (!frame.ok()) break;
    if (frame->oversized && !frame->data.empty()) abort();
    absl::StatusOr<std::string> payload = DecodeResponse(frame->data);
    if (!payload.ok()) continue;
    if (payload->size() > kMaxMessageSize) abort();
    test::EchoResponse response;
    (void)response.ParseFromString(*payload);
  }
}

void OverSocket(const uint8_t* data, size_t size) {
  int fds[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0) abort();
  const int server = fds[1];
  // The "server": waits for the first request, so the answers meet calls in flight, then sends
  // the input and closes its side.
  std::thread answer([&] {
    char header[10];
    size_t got = 0;
    while (got < sizeof(header)) {
      ssize_t n = read(server, header + got, sizeof(header) - got);
      if (n <= 0) break;
      got += static_cast<size_t>(n);
    }
    size_t done = 0;
    while (done < size) {
      ssize_t n = send(server, data + done, size - done, MSG_NOSIGNAL);
      if (n <= 0) break;
      done += static_cast<size_t>(n);
    }
    shutdown(server, SHUT_WR);
    // Drain the client's requests until it closes.
    char sink[4096];
    while (read(server, sink, sizeof(sink)) > 0) {
    }
  });
  {
    Client client{UniqueFd(fds[0])};
    std::vector<std::thread> calls;
    for (int i = 0; i < 3; ++i) {
      calls.emplace_back([&client, i] {
        test::EchoRequest request;
        request.set_text(std::string(static_cast<size_t>(i) * 7, 'x'));
        test::EchoResponse response;
        (void)client.Call(testing::kEchoService, "Echo", request, &response,
                          CallOptions::WithTimeout(absl::Seconds(5)));
      });
    }
    for (std::thread& call : calls) call.join();
    // The input is all the server ever says: once it is read, the connection ended.
    if (!client.closed()) {
      const absl::Time until = absl::Now() + absl::Seconds(5);
      while (!client.closed() && absl::Now() < until) absl::SleepFor(absl::Milliseconds(1));
      if (!client.closed()) abort();
    }
  }
  answer.join();
  close(server);
}

}  // namespace
}  // namespace kapsel::ttrpc

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  kapsel::ttrpc::InMemory(data, size);
  if (size > 0 && data[size - 1] % 4 == 0) kapsel::ttrpc::OverSocket(data, size);
  return 0;
}
