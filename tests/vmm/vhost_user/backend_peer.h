// The backend's side of a vhost-user socket for tests: reads the frontend's messages (with their
// file descriptors) and writes replies, raw, so tests can also send malformed ones.
#ifndef KAPSEL_TESTS_VMM_VHOST_USER_BACKEND_PEER_H_
#define KAPSEL_TESTS_VMM_VHOST_USER_BACKEND_PEER_H_

#include <cstdint>
#include <optional>
#include <vector>

#include "absl/time/time.h"
#include "common/unique_fd.h"
#include "vmm/vhost_user/message.h"

namespace kapsel::vmm::vhost_user::testing {

struct Received {
  Message message;
  std::vector<UniqueFd> fds;
};

// Reads one message from `fd` (nullopt on EOF, timeout or a malformed header).
std::optional<Received> ReadMessage(int fd, absl::Duration timeout = absl::Seconds(5));
// Writes a raw header + payload.
void WriteRaw(int fd, uint32_t request, uint32_t flags, const std::vector<uint8_t>& payload);
// Writes a well-formed reply (version 1, reply flag) to `request`.
void Reply(int fd, Request request, const std::vector<uint8_t>& payload);
inline void ReplyU64(int fd, Request request, uint64_t value) {
  Reply(fd, request, EncodeU64(value));
}

// A connected stream socketpair: [0] for the frontend, [1] for the test's backend.
std::pair<UniqueFd, UniqueFd> SocketPair();

}  // namespace kapsel::vmm::vhost_user::testing

#endif  // KAPSEL_TESTS_VMM_VHOST_USER_BACKEND_PEER_H_
