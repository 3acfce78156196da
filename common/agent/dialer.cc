#include "common/agent/dialer.h"

#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/status.h"
#include "common/ttrpc/address.h"
#include "google/protobuf/util/delimited_message_util.h"

namespace kapsel::agent {
namespace {

// Reads one line (up to `max` bytes) before `deadline`.
absl::StatusOr<std::string> ReadLine(int fd, size_t max, absl::Time deadline) {
  std::string line;
  while (line.size() < max) {
    const int64_t ms = absl::ToInt64Milliseconds(deadline - absl::Now());
    pollfd pfd{fd, POLLIN, 0};
    if (ms <= 0 || poll(&pfd, 1, static_cast<int>(ms)) <= 0) {
      return absl::DeadlineExceededError("no answer to CONNECT in time");
    }
    char c;
    ssize_t n = read(fd, &c, 1);
    if (n <= 0) return absl::UnavailableError("connection closed (nothing listens on that port?)");
    if (c == '\n') return line;
    line.push_back(c);
  }
  return absl::InvalidArgumentError("answer to CONNECT too long");
}

bool WriteAll(int fd, const std::string& data) {
  size_t done = 0;
  while (done < data.size()) {
    ssize_t n = send(fd, data.data() + done, data.size() - done, MSG_NOSIGNAL);
    if (n <= 0) return false;
    done += static_cast<size_t>(n);
  }
  return true;
}

struct Endpoint {
  bool hybrid;
  std::string path;
  uint32_t port;
};

absl::StatusOr<Endpoint> ParseEndpoint(const std::string& endpoint) {
  if (absl::StartsWith(endpoint, "unix:")) return Endpoint{false, endpoint.substr(5), 0};
  if (absl::StartsWith(endpoint, "hvsock:")) {
    const size_t colon = endpoint.rfind(':');
    uint32_t port;
    if (colon > 7 && absl::SimpleAtoi(endpoint.substr(colon + 1), &port)) {
      return Endpoint{true, endpoint.substr(7, colon - 7), port};
    }
  }
  return absl::InvalidArgumentError(
      absl::StrCat("agent endpoint '", endpoint, "': want unix:PATH or hvsock:PATH:PORT"));
}

}  // namespace

absl::StatusOr<UniqueFd> DialHybridVsock(const std::string& uds_path, uint32_t port,
                                         absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  ASSIGN_OR_RETURN(UniqueFd fd, ttrpc::DialUnix(uds_path));
  if (!WriteAll(fd.get(), absl::StrCat("CONNECT ", port, "\n"))) {
    return ErrnoError(absl::StrCat("hybrid vsock ", uds_path, ": sending CONNECT"));
  }
  absl::StatusOr<std::string> answer = ReadLine(fd.get(), 256, deadline);
  if (!answer.ok()) {
    return Annotate(answer.status(), absl::StrCat("hybrid vsock ", uds_path, " port ", port));
  }
  if (!absl::StartsWith(*answer, "OK ")) {
    return absl::UnavailableError(
        absl::StrCat("hybrid vsock ", uds_path, " port ", port, ": answered '", *answer, "'"));
  }
  return fd;
}

absl::StatusOr<UniqueFd> DialAgent(const std::string& endpoint, absl::Duration timeout) {
  ASSIGN_OR_RETURN(Endpoint e, ParseEndpoint(endpoint));
  if (e.hybrid) return DialHybridVsock(e.path, e.port, timeout);
  return ttrpc::DialUnix(e.path);
}

absl::StatusOr<UniqueFd> DialStdio(const std::string& endpoint, const std::string& container_id,
                                   const std::string& exec_id, v1::StdioHello::Stream stream,
                                   absl::Duration timeout) {
  ASSIGN_OR_RETURN(Endpoint e, ParseEndpoint(endpoint));
  UniqueFd fd;
  if (e.hybrid) {
    ASSIGN_OR_RETURN(fd, DialHybridVsock(e.path, e.port + 1, timeout));
  } else {
    ASSIGN_OR_RETURN(fd, ttrpc::DialUnix(e.path + ".stdio"));
  }
  v1::StdioHello hello;
  hello.set_container_id(container_id);
  hello.set_exec_id(exec_id);
  hello.set_stream(stream);
  if (!google::protobuf::util::SerializeDelimitedToFileDescriptor(hello, fd.get())) {
    return ErrnoError("stdio: sending the hello");
  }
  return fd;
}

}  // namespace kapsel::agent
