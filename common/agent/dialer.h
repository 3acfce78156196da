// Reaching a kapsel-agent from the host: its API endpoint and its stdio streams.
//
// An endpoint is either
//   unix:PATH             the agent serves on Unix sockets (`kapsel-agent --listen unix:PATH`):
//                         the API at PATH, stdio at PATH.stdio;
//   hvsock:PATH:PORT      the agent in a microVM, through kapsel-vmm's hybrid vsock socket PATH:
//                         the API on guest port PORT, stdio on PORT + 1.
#ifndef KAPSEL_COMMON_AGENT_DIALER_H_
#define KAPSEL_COMMON_AGENT_DIALER_H_

#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/agent/agent.pb.h"
#include "common/unique_fd.h"

namespace kapsel::agent {

// A connected stream to the agent's API.
absl::StatusOr<UniqueFd> DialAgent(const std::string& endpoint, absl::Duration timeout);

// A connected stdio stream for one process's stream, after the StdioHello was sent.
absl::StatusOr<UniqueFd> DialStdio(const std::string& endpoint, const std::string& container_id,
                                   const std::string& exec_id, v1::StdioHello::Stream stream,
                                   absl::Duration timeout);

// Connects to a hybrid vsock socket (kapsel-vmm --vsock CID,PATH) and opens guest port `port`
// (the CONNECT/OK handshake). Unavailable when nothing listens on that port in the guest.
absl::StatusOr<UniqueFd> DialHybridVsock(const std::string& uds_path, uint32_t port,
                                         absl::Duration timeout);

}  // namespace kapsel::agent

#endif  // KAPSEL_COMMON_AGENT_DIALER_H_
