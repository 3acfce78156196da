// Drives a kapsel-agent through its API and stdio streams, as the shim does: over a Unix socket
// (`kapsel-agent --listen unix:PATH`) or through a microVM's hybrid vsock. Used by the agent's
// tests on the host and inside microVMs.
#ifndef KAPSEL_TESTS_SUPPORT_AGENT_SESSION_H_
#define KAPSEL_TESTS_SUPPORT_AGENT_SESSION_H_

#include <memory>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/agent/agent.pb.h"
#include "common/oci/spec.pb.h"
#include "common/ttrpc/client.h"

namespace kapsel::testing {

struct ContainerRun {
  std::string out;
  std::string err;
  int exit_status = -1;
};

class AgentSession {
 public:
  // Dials `endpoint` (common/agent/dialer.h) until the agent answers Health, for up to `timeout`.
  static absl::StatusOr<std::unique_ptr<AgentSession>> Connect(const std::string& endpoint,
                                                               absl::Duration timeout);

  const std::string& endpoint() const { return endpoint_; }
  ttrpc::Client& client() { return *client_; }

  // One Agent RPC.
  absl::Status Call(const std::string& method, const google::protobuf::Message& request,
                    google::protobuf::Message* response,
                    absl::Duration timeout = absl::Seconds(60));

  // Opens one stdio stream of a process.
  absl::StatusOr<UniqueFd> Stdio(const std::string& container_id, const std::string& exec_id,
                                 agent::v1::StdioHello::Stream stream);

  // Create (from `spec` and `rootfs`), attach stdout/stderr (and stdin, fed with `input` then
  // closed), Start, read the output to EOF, Wait, Remove.
  absl::StatusOr<ContainerRun> RunContainer(const std::string& id, const oci::v1::Spec& spec,
                                            const agent::v1::Rootfs& rootfs,
                                            std::optional<std::string> input = std::nullopt);

 private:
  AgentSession(std::string endpoint, std::unique_ptr<ttrpc::Client> client)
      : endpoint_(std::move(endpoint)), client_(std::move(client)) {}
  std::string endpoint_;
  std::unique_ptr<ttrpc::Client> client_;
};

// Reads until EOF (or `timeout`); *reached_eof, if given, tells which came first.
std::string ReadToEof(int fd, absl::Duration timeout, bool* reached_eof = nullptr);

// `runc spec`'s default spec (what most OCI tools start from) with `args` as the process.
absl::StatusOr<oci::v1::Spec> DefaultSpec(const std::vector<std::string>& args);

}  // namespace kapsel::testing

#endif  // KAPSEL_TESTS_SUPPORT_AGENT_SESSION_H_
