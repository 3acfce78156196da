#include "vmm/devices/virtio/vsock/unix_socket.h"

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "common/status.h"

namespace kapsel::vmm::virtio::vsock {
namespace {

absl::StatusOr<sockaddr_un> Address(const std::string& path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof(addr.sun_path)) {
    return absl::InvalidArgumentError(absl::StrCat("Unix socket path '", path, "' must be 1..",
                                                   sizeof(addr.sun_path) - 1, " bytes"));
  }
  std::memcpy(addr.sun_path, path.data(), path.size());
  return addr;
}

absl::StatusOr<UniqueFd> StreamSocket() {
  UniqueFd fd(socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!fd) return ErrnoError("socket(AF_UNIX)");
  return fd;
}

}  // namespace

absl::StatusOr<UnixListener> ListenUnix(const std::string& path, int backlog) {
  ASSIGN_OR_RETURN(sockaddr_un addr, Address(path));
  struct stat st;
  if (lstat(path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) {
      return absl::FailedPreconditionError(
          absl::StrCat(path, " exists and is not a socket: not replacing it"));
    }
    ASSIGN_OR_RETURN(UniqueFd probe, StreamSocket());
    if (connect(probe.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) == 0 ||
        errno == EAGAIN) {
      return absl::AlreadyExistsError(absl::StrCat(path, " is in use by another process"));
    }
    if (errno != ECONNREFUSED) return ErrnoError(absl::StrCat("probing ", path));
    if (unlink(path.c_str()) != 0 && errno != ENOENT) {
      return ErrnoError(absl::StrCat("removing the stale socket ", path));
    }
  } else if (errno != ENOENT) {
    return ErrnoError(absl::StrCat("lstat ", path));
  }
  UnixListener listener;
  ASSIGN_OR_RETURN(listener.fd, StreamSocket());
  if (bind(listener.fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) != 0) {
    return ErrnoError(absl::StrCat("bind ", path));
  }
  if (listen(listener.fd.get(), backlog) != 0 || lstat(path.c_str(), &st) != 0) {
    absl::Status error = ErrnoError(absl::StrCat("listen ", path));
    unlink(path.c_str());
    return error;
  }
  listener.dev = st.st_dev;
  listener.ino = st.st_ino;
  return listener;
}

void RemoveListenerFile(const std::string& path, const UnixListener& listener) {
  struct stat st;
  if (lstat(path.c_str(), &st) == 0 && st.st_dev == listener.dev && st.st_ino == listener.ino) {
    unlink(path.c_str());
  }
}

absl::StatusOr<UniqueFd> ConnectUnix(const std::string& path) {
  ASSIGN_OR_RETURN(sockaddr_un addr, Address(path));
  ASSIGN_OR_RETURN(UniqueFd fd, StreamSocket());
  if (connect(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) != 0) {
    return ErrnoError(absl::StrCat("connect ", path));
  }
  return fd;
}

}  // namespace kapsel::vmm::virtio::vsock
