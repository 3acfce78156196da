#include "tests/support/agent_session.h"

#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <thread>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "common/agent/dialer.h"
#include "common/oci/spec.h"
#include "common/status.h"
#include "tests/support/subprocess.h"

namespace kapsel::testing {
namespace {

constexpr char kService[] = "kapsel.agent.v1.Agent";
using agent::v1::StdioHello;

}  // namespace

absl::StatusOr<std::unique_ptr<AgentSession>> AgentSession::Connect(const std::string& endpoint,
                                                                    absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  absl::Status last = absl::DeadlineExceededError("no attempt");
  while (absl::Now() < deadline) {
    absl::StatusOr<UniqueFd> fd = agent::DialAgent(endpoint, absl::Seconds(5));
    if (fd.ok()) {
      auto client = std::make_unique<ttrpc::Client>(*std::move(fd));
      agent::v1::HealthResponse health;
      last = client->Call(kService, "Health", agent::v1::HealthRequest(), &health,
                          ttrpc::CallOptions::WithTimeout(absl::Seconds(5)));
      if (last.ok()) {
        return std::unique_ptr<AgentSession>(new AgentSession(endpoint, std::move(client)));
      }
    } else {
      last = fd.status();
    }
    absl::SleepFor(absl::Milliseconds(100));
  }
  return Annotate(last, absl::StrCat("agent at ", endpoint, " did not answer"));
}

absl::Status AgentSession::Call(const std::string& method, const google::protobuf::Message& request,
                                google::protobuf::Message* response, absl::Duration timeout) {
  return client_->Call(kService, method, request, response,
                       ttrpc::CallOptions::WithTimeout(timeout));
}

absl::StatusOr<UniqueFd> AgentSession::Stdio(const std::string& container_id,
                                             const std::string& exec_id,
                                             StdioHello::Stream stream) {
  return agent::DialStdio(endpoint_, container_id, exec_id, stream, absl::Seconds(10));
}

std::string ReadToEof(int fd, absl::Duration timeout, bool* reached_eof) {
  const absl::Time deadline = absl::Now() + timeout;
  std::string data;
  char buffer[65536];
  if (reached_eof != nullptr) *reached_eof = false;
  while (true) {
    const int64_t ms = absl::ToInt64Milliseconds(deadline - absl::Now());
    pollfd pfd{fd, POLLIN, 0};
    if (ms <= 0 || poll(&pfd, 1, static_cast<int>(ms)) <= 0) return data;
    ssize_t n = read(fd, buffer, sizeof(buffer));
    if (n <= 0) {
      if (reached_eof != nullptr) *reached_eof = n == 0;
      return data;
    }
    data.append(buffer, static_cast<size_t>(n));
  }
}

absl::StatusOr<ContainerRun> AgentSession::RunContainer(const std::string& id,
                                                        const oci::v1::Spec& spec,
                                                        const agent::v1::Rootfs& rootfs,
                                                        std::optional<std::string> input) {
  agent::v1::CreateContainerRequest create;
  create.set_container_id(id);
  *create.mutable_spec() = spec;
  *create.mutable_rootfs() = rootfs;
  create.set_stdin(input.has_value());
  agent::v1::CreateContainerResponse created;
  RETURN_IF_ERROR(Call("CreateContainer", create, &created, absl::Minutes(2)));
  ASSIGN_OR_RETURN(UniqueFd out, Stdio(id, "", StdioHello::STDOUT));
  ASSIGN_OR_RETURN(UniqueFd err, Stdio(id, "", StdioHello::STDERR));
  UniqueFd in;
  if (input.has_value()) {
    ASSIGN_OR_RETURN(in, Stdio(id, "", StdioHello::STDIN));
  }
  agent::v1::ContainerRequest start;
  start.set_container_id(id);
  agent::v1::Empty empty;
  RETURN_IF_ERROR(Call("StartContainer", start, &empty));
  std::thread feeder;
  if (in) {
    feeder = std::thread([&in, &input] {
      size_t done = 0;
      while (done < input->size()) {
        ssize_t n = send(in.get(), input->data() + done, input->size() - done, MSG_NOSIGNAL);
        if (n <= 0) break;
        done += static_cast<size_t>(n);
      }
      shutdown(in.get(), SHUT_WR);  // EOF for the process
    });
  }
  ContainerRun run;
  constexpr absl::Duration kOutputTimeout = absl::Seconds(120);
  bool err_ended = false, out_ended = false;
  std::thread err_reader([&] { run.err = ReadToEof(err.get(), kOutputTimeout, &err_ended); });
  run.out = ReadToEof(out.get(), kOutputTimeout, &out_ended);
  err_reader.join();
  if (feeder.joinable()) {
    shutdown(in.get(), SHUT_RDWR);  // a process that stopped reading must not block the feeder
    feeder.join();
  }
  if (!out_ended || !err_ended) {
    return absl::DeadlineExceededError(absl::StrCat(
        "container ", id, ": its ", out_ended ? "stderr" : "stdout", " did not end within ",
        absl::FormatDuration(kOutputTimeout), " (stdout so far: \"", absl::CHexEscape(run.out),
        "\", stderr so far: \"", absl::CHexEscape(run.err), "\")"));
  }
  agent::v1::ProcessRequest wait;
  wait.set_container_id(id);
  agent::v1::WaitProcessResponse waited;
  RETURN_IF_ERROR(Call("WaitProcess", wait, &waited, absl::Seconds(60)));
  run.exit_status = waited.exit_status();
  agent::v1::RemoveContainerRequest remove;
  remove.set_container_id(id);
  RETURN_IF_ERROR(Call("RemoveContainer", remove, &empty));
  return run;
}

absl::StatusOr<oci::v1::Spec> DefaultSpec(const std::vector<std::string>& args) {
  char dir[] = "/tmp/kapsel-spec-XXXXXX";
  if (mkdtemp(dir) == nullptr) return ErrnoError("mkdtemp");
  const std::string config = absl::StrCat(dir, "/config.json");
  absl::StatusOr<ProcessResult> made =
      RunProcess({"runc", "spec", "--bundle", dir}, absl::Seconds(30));
  absl::StatusOr<oci::v1::Spec> spec = made.ok() && made->exit_code == 0
                                           ? oci::ReadSpecFile(config)
                                           : absl::InternalError("runc spec failed");
  unlink(config.c_str());
  rmdir(dir);
  if (!spec.ok()) return spec.status();
  spec->mutable_process()->set_terminal(false);
  // runc's default lists ambient capabilities that are not inheritable, which the kernel cannot
  // raise (runc skips them quietly); kapsel-agent rejects that combination, so leave them out.
  spec->mutable_process()->mutable_capabilities()->clear_ambient();
  spec->mutable_process()->clear_args();
  for (const std::string& a : args) spec->mutable_process()->add_args(a);
  return spec;
}

}  // namespace kapsel::testing
