// ttrpc round trips and bulk throughput between a client and a server in this process, over a
// socketpair and over a Unix socket path.
#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "benchmark/benchmark.h"
#include "common/ttrpc/address.h"
#include "common/ttrpc/client.h"
#include "common/ttrpc/server.h"
#include "tests/ttrpc/echo_service.h"
#include "tests/ttrpc/test_service.pb.h"

namespace kapsel::ttrpc {
namespace {

using ::kapsel::ttrpc::test::EchoRequest;
using ::kapsel::ttrpc::test::EchoResponse;
using ::kapsel::ttrpc::testing::kEchoService;

enum Transport { kSocketpair, kUnixPath };

// A server and one client connection, shared by the benchmark threads.
struct Setup {
  explicit Setup(Transport transport) {
    if (!testing::RegisterEchoService(&server).ok()) abort();
    // Discards the payload: measures the client -> server direction alone.
    if (!server
             .Register("kapsel.bench.Sink", "Sink",
                       [](const std::string&, const CallContext&) {
                         return absl::StatusOr<std::string>("");
                       })
             .ok()) {
      abort();
    }
    if (transport == kSocketpair) {
      auto [client_end, server_end] = testing::SocketPair();
      if (!server.ServeConnection(std::move(server_end)).ok()) abort();
      client = std::make_unique<Client>(std::move(client_end));
    } else {
      const std::string path = dir.path() + "/bench.sock";
      absl::StatusOr<UniqueFd> listener = ListenUnix(path);
      if (!listener.ok() || !server.Start(std::move(*listener)).ok()) abort();
      client = std::move(Client::Dial(path).value());
    }
  }

  testing::TempDir dir;
  Server server;
  std::unique_ptr<Client> client;
};

Client& SharedClient(Transport transport) {
  // Built on first use, destroyed at exit (which removes the socket directory).
  static std::unique_ptr<Setup> setups[2];
  static absl::Mutex mu;
  absl::MutexLock lock(&mu);
  if (setups[transport] == nullptr) setups[transport] = std::make_unique<Setup>(transport);
  return *setups[transport]->client;
}

void BM_RoundTrip(benchmark::State& state, Transport transport) {
  Client& client = SharedClient(transport);
  EchoRequest request;
  request.set_text("ping");
  EchoResponse response;
  for (auto _ : state) {
    absl::Status status = client.Call(kEchoService, "Echo", request, &response);
    if (!status.ok()) state.SkipWithError(std::string(status.message()).c_str());
  }
}
BENCHMARK_CAPTURE(BM_RoundTrip, socketpair, kSocketpair)->UseRealTime()->ThreadRange(1, 4);
BENCHMARK_CAPTURE(BM_RoundTrip, unix_socket, kUnixPath)->UseRealTime()->ThreadRange(1, 4);

void BM_Upload1MiB(benchmark::State& state, Transport transport) {
  Client& client = SharedClient(transport);
  const std::string payload(1 << 20, 'u');
  for (auto _ : state) {
    absl::StatusOr<std::string> answer = client.CallRaw("kapsel.bench.Sink", "Sink", payload);
    if (!answer.ok()) state.SkipWithError(std::string(answer.status().message()).c_str());
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * payload.size());
}
BENCHMARK_CAPTURE(BM_Upload1MiB, socketpair, kSocketpair)->UseRealTime();
BENCHMARK_CAPTURE(BM_Upload1MiB, unix_socket, kUnixPath)->UseRealTime();

void BM_Echo1MiB(benchmark::State& state, Transport transport) {
  Client& client = SharedClient(transport);
  EchoRequest request;
  request.set_blob(std::string(1 << 20, 'e'));
  EchoResponse response;
  for (auto _ : state) {
    absl::Status status = client.Call(kEchoService, "Echo", request, &response);
    if (!status.ok()) state.SkipWithError(std::string(status.message()).c_str());
  }
  // Both directions.
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * 2 * request.blob().size());
}
BENCHMARK_CAPTURE(BM_Echo1MiB, socketpair, kSocketpair)->UseRealTime();
BENCHMARK_CAPTURE(BM_Echo1MiB, unix_socket, kUnixPath)->UseRealTime();

}  // namespace
}  // namespace kapsel::ttrpc
