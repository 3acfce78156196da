// libFuzzer target: arbitrary bytes as the inbound stream of a server connection. Every input goes
// through the frame reader, request decoding and dispatch to the echo handlers synchronously (in
// memory, chunked reads); one input in four also goes through a real Server over a socketpair.
#include <sys/socket.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>

#include "absl/time/clock.h"
#include "common/ttrpc/frame.h"
#include "common/ttrpc/handler_registry.h"
#include "common/ttrpc/request_codec.h"
#include "common/ttrpc/server.h"
#include "tests/ttrpc/echo_service.h"
#include "tests/ttrpc/fuzz_input.h"

namespace kapsel::ttrpc {
namespace {

const HandlerRegistry& Registry() {
  static const HandlerRegistry* registry = [] {
    auto* r = new HandlerRegistry;
    if (!testing::RegisterEchoService(r, /*with_slow=*/false).ok()) abort();
    return r;
  }();
  return *registry;
}

void InMemory(const uint8_t* data, size_t size) {
  FrameReader reader = testing::FuzzInputReader(data, size);
  while (true) {
    absl::StatusOr<Frame> frame = reader.Read();
    if (!frame.ok()) break;
    absl::StatusOr<InboundRequest> request = DecodeRequestFrame(*frame, absl::Now());
    std::string response;
    if (request.ok()) {
      absl::StatusOr<std::string> result = Registry().Invoke(request->payload, request->context);
      response = result.ok() ? EncodeResponse(absl::OkStatus(), *result)
                             : EncodeResponse(result.status(), "");
    } else {
      response = EncodeResponse(request.status(), "");
    }
    if (response.size() > kMaxMessageSize) abort();
    (void)DecodeResponse(response);
  }
}

void OverSocket(const uint8_t* data, size_t size) {
  // A server per input, shut down at the end: nothing outlives the input (no thread runs when
  // libFuzzer exits, and leak checks see balanced allocations).
  Server server(ServerOptions{.max_threads = 8, .max_requests_per_connection = 16});
  if (!testing::RegisterEchoService(&server, /*with_slow=*/false).ok()) abort();
  int fds[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0) abort();
  if (!server.ServeConnection(UniqueFd(fds[1])).ok()) abort();
  std::thread writer([&] {
    size_t done = 0;
    while (done < size) {
      ssize_t n = send(fds[0], data + done, size - done, MSG_NOSIGNAL);
      if (n <= 0) break;
      done += static_cast<size_t>(n);
    }
    shutdown(fds[0], SHUT_WR);
  });
  // Read answers until the server ends the connection.
  char buffer[65536];
  while (read(fds[0], buffer, sizeof(buffer)) > 0) {
  }
  writer.join();
  close(fds[0]);
  server.Shutdown();
}

}  // namespace
}  // namespace kapsel::ttrpc

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  kapsel::ttrpc::InMemory(data, size);
  if (size > 0 && data[size - 1] % 4 == 0) kapsel::ttrpc::OverSocket(data, size);
  return 0;
}
