// The echo service the ttrpc tests, fuzzer and benchmarks serve, and small test helpers.
#ifndef KAPSEL_TESTS_TTRPC_ECHO_SERVICE_H_
#define KAPSEL_TESTS_TTRPC_ECHO_SERVICE_H_

#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/ttrpc/handler_registry.h"
#include "common/ttrpc/server.h"
#include "common/unique_fd.h"

namespace kapsel::ttrpc::testing {

inline constexpr char kEchoService[] = "kapsel.test.Echo";

// Methods of kEchoService (requests are EchoRequest, responses EchoResponse, except Reverse):
//   Echo:    text, blob, metadata, deadline and connection back.
//   Fail:    answers Status(code, text).
//   Slow:    waits sleep_ms (less if cancelled), then answers like Echo.
//   Reverse: raw handler; answers the payload bytes reversed.
//   Huge:    answers a blob of 5 MiB (over the message limit).
// `with_slow` = false leaves Slow and Huge out (for the fuzzer: no input may make it wait).
absl::Status RegisterEchoService(HandlerRegistry* registry, bool with_slow = true);
absl::Status RegisterEchoService(Server* server, bool with_slow = true);

// A connected pair of stream sockets (close-on-exec).
std::pair<UniqueFd, UniqueFd> SocketPair();

// A fresh directory under $TMPDIR or /tmp, removed with its contents on destruction.
class TempDir {
 public:
  TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  ~TempDir();
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

}  // namespace kapsel::ttrpc::testing

#endif  // KAPSEL_TESTS_TTRPC_ECHO_SERVICE_H_
