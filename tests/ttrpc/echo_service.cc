#include "tests/ttrpc/echo_service.h"

#include <stdlib.h>
#include <sys/socket.h>

#include <algorithm>
#include <filesystem>
#include <functional>
#include <system_error>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/status.h"
#include "tests/ttrpc/test_service.pb.h"

namespace kapsel::ttrpc::testing {
namespace {

using ::kapsel::ttrpc::test::EchoRequest;
using ::kapsel::ttrpc::test::EchoResponse;
using RegisterFn = std::function<absl::Status(absl::string_view, absl::string_view, RawHandler)>;

EchoResponse Reflect(const EchoRequest& request, const CallContext& context) {
  EchoResponse response;
  response.set_text(request.text());
  response.set_blob(request.blob());
  for (const auto& [key, value] : context.metadata) {
    response.add_metadata(absl::StrCat(key, "=", value));
  }
  response.set_deadline_in_ms(context.deadline == absl::InfiniteFuture()
                                  ? -1
                                  : absl::ToInt64Milliseconds(context.deadline - absl::Now()));
  response.set_connection_id(context.connection_id);
  response.set_cancelled(context.IsCancelled());
  return response;
}

absl::Status Register(const RegisterFn& add, bool with_slow) {
  RETURN_IF_ERROR(add(kEchoService, "Echo",
                      MakeRawHandler<EchoRequest, EchoResponse>(
                          [](const EchoRequest& request,
                             const CallContext& context) -> absl::StatusOr<EchoResponse> {
                            return Reflect(request, context);
                          })));
  RETURN_IF_ERROR(
      add(kEchoService, "Fail",
          MakeRawHandler<EchoRequest, EchoResponse>(
              [](const EchoRequest& request, const CallContext&) -> absl::StatusOr<EchoResponse> {
                return absl::Status(static_cast<absl::StatusCode>(request.code()), request.text());
              })));
  RETURN_IF_ERROR(
      add(kEchoService, "Reverse",
          [](const std::string& payload, const CallContext&) -> absl::StatusOr<std::string> {
            return std::string(payload.rbegin(), payload.rend());
          }));
  if (!with_slow) return absl::OkStatus();
  RETURN_IF_ERROR(add(kEchoService, "Slow",
                      MakeRawHandler<EchoRequest, EchoResponse>(
                          [](const EchoRequest& request,
                             const CallContext& context) -> absl::StatusOr<EchoResponse> {
                            context.WaitForCancellation(absl::Now() +
                                                        absl::Milliseconds(request.sleep_ms()));
                            return Reflect(request, context);
                          })));
  return add(kEchoService, "Huge",
             MakeRawHandler<EchoRequest, EchoResponse>(
                 [](const EchoRequest&, const CallContext&) -> absl::StatusOr<EchoResponse> {
                   EchoResponse response;
                   response.set_blob(std::string(5 << 20, 'x'));
                   return response;
                 }));
}

}  // namespace

absl::Status RegisterEchoService(HandlerRegistry* registry, bool with_slow) {
  return Register(
      [registry](absl::string_view service, absl::string_view method, RawHandler handler) {
        return registry->Register(service, method, std::move(handler));
      },
      with_slow);
}

absl::Status RegisterEchoService(Server* server, bool with_slow) {
  return Register(
      [server](absl::string_view service, absl::string_view method, RawHandler handler) {
        return server->Register(service, method, std::move(handler));
      },
      with_slow);
}

std::pair<UniqueFd, UniqueFd> SocketPair() {
  int fds[2] = {-1, -1};
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0) abort();
  return {UniqueFd(fds[0]), UniqueFd(fds[1])};
}

TempDir::TempDir() {
  const char* base = getenv("TMPDIR");
  std::string pattern =
      absl::StrCat(base != nullptr && *base != '\0' ? base : "/tmp", "/kapsel-ttrpc-XXXXXX");
  if (mkdtemp(pattern.data()) == nullptr) abort();
  path_ = pattern;
}

TempDir::~TempDir() {
  std::error_code ignored;
  std::filesystem::remove_all(path_, ignored);
}

}  // namespace kapsel::ttrpc::testing
