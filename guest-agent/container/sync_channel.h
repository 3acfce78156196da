// Messages between the agent and a container's child processes, over a SOCK_SEQPACKET socket pair
// (one message per packet, an fd passed with SCM_RIGHTS where a message carries one). The send and
// receive functions allocate nothing: the child side uses them.
#ifndef KAPSEL_GUEST_AGENT_CONTAINER_SYNC_CHANNEL_H_
#define KAPSEL_GUEST_AGENT_CONTAINER_SYNC_CHANNEL_H_

#include <cstdint>
#include <optional>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/unique_fd.h"

namespace kapsel::agent {

enum class SyncType : uint32_t {
  // child -> agent
  kLaunched = 1,   // value: the new process's pid; fd: its pidfd
  kError = 2,      // err: errno (0 for none); text: what failed
  kPtyMaster = 3,  // fd: the pty master
  kReady = 4,      // the init is set up and waits for kStart
  // agent -> child
  // The agent has the process's pid (from the launcher) and wrote its id maps if it has a new
  // user namespace: the process may go on. It says nothing before this, so that nothing it
  // sends can overtake the launcher's kLaunched.
  kProceed = 10,
  kStart = 11,  // exec the process
};

struct SyncMessage {
  SyncType type = SyncType::kError;
  int32_t err = 0;
  int64_t value = 0;
  char text[480] = {};
};

// Sends one message, with fd attached when fd >= 0. Returns 0 or an errno value.
int SendSyncMessage(int socket, const SyncMessage& message, int fd = -1);
// Receives one message; *fd gets an attached fd (or -1). Returns 1 for a message, 0 at end of
// stream, or minus an errno value.
int ReceiveSyncMessage(int socket, SyncMessage* message, int* fd);

// Agent side: a message, or nullopt at end of stream; DeadlineExceeded after `timeout`.
struct ReceivedMessage {
  SyncMessage message;
  UniqueFd fd;
};
absl::StatusOr<std::optional<ReceivedMessage>> ReceiveSyncMessageWithTimeout(
    int socket, absl::Duration timeout);

// The status a kError message carries.
absl::Status SyncMessageStatus(const SyncMessage& message, absl::string_view who);

}  // namespace kapsel::agent

#endif  // KAPSEL_GUEST_AGENT_CONTAINER_SYNC_CHANNEL_H_
