// The host side of hybrid vsock: Unix stream sockets, non-blocking and close-on-exec.
#ifndef KAPSEL_VMM_DEVICES_VIRTIO_VSOCK_UNIX_SOCKET_H_
#define KAPSEL_VMM_DEVICES_VIRTIO_VSOCK_UNIX_SOCKET_H_

#include <sys/types.h>

#include <string>

#include "absl/status/statusor.h"
#include "common/unique_fd.h"

namespace kapsel::vmm::virtio::vsock {

struct UnixListener {
  UniqueFd fd;
  // The socket file's identity, so that only our own file is removed at exit.
  dev_t dev = 0;
  ino_t ino = 0;
};

// Listens at `path`. A socket file nobody listens on (left by a process that died) is replaced;
// AlreadyExists if a process listens there, FailedPrecondition if the path is something else.
absl::StatusOr<UnixListener> ListenUnix(const std::string& path, int backlog);

// Removes the socket file at `path` if it is still the one `listener` created.
void RemoveListenerFile(const std::string& path, const UnixListener& listener);

// Connects to the Unix stream socket at `path`; fails rather than waits when the listener's backlog
// is full.
absl::StatusOr<UniqueFd> ConnectUnix(const std::string& path);

}  // namespace kapsel::vmm::virtio::vsock

#endif  // KAPSEL_VMM_DEVICES_VIRTIO_VSOCK_UNIX_SOCKET_H_
