#include "common/ttrpc/address.h"

#include <errno.h>
#include <sys/socket.h>

#include <cstddef>
#include <cstring>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "common/status.h"

namespace kapsel::ttrpc {

absl::StatusOr<UnixAddress> ParseUnixAddress(absl::string_view address) {
  absl::string_view path = address;
  if (!absl::ConsumePrefix(&path, "unix://")) absl::ConsumePrefix(&path, "unix:");
  if (path.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("ttrpc: no socket path in \"", address, "\""));
  }
  if (absl::StrContains(path, "://")) {
    return absl::InvalidArgumentError(
        absl::StrCat("ttrpc: not a Unix socket address: \"", address, "\""));
  }
  UnixAddress result;
  result.addr.sun_family = AF_UNIX;
  const bool abstract = path[0] == '@';
  // A path needs room for its terminating NUL; an abstract name does not.
  const size_t room = sizeof(result.addr.sun_path) - (abstract ? 0 : 1);
  if (path.size() > room) {
    return absl::InvalidArgumentError(
        absl::StrCat("ttrpc: socket path \"", path, "\" is longer than ", room, " bytes"));
  }
  std::memcpy(result.addr.sun_path, path.data(), path.size());
  if (abstract) result.addr.sun_path[0] = '\0';
  result.length =
      static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + path.size() + (abstract ? 0 : 1));
  return result;
}

absl::StatusOr<UniqueFd> ListenUnix(absl::string_view address, int backlog) {
  ASSIGN_OR_RETURN(UnixAddress unix_address, ParseUnixAddress(address));
  UniqueFd fd(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd) return ErrnoError("ttrpc: socket");
  if (bind(fd.get(), reinterpret_cast<const sockaddr*>(&unix_address.addr), unix_address.length) <
      0) {
    if (errno == EADDRINUSE) {
      return absl::AlreadyExistsError(absl::StrCat("ttrpc: bind ", address, ": address in use"));
    }
    return ErrnoError(absl::StrCat("ttrpc: bind ", address));
  }
  if (listen(fd.get(), backlog) < 0) return ErrnoError(absl::StrCat("ttrpc: listen ", address));
  return fd;
}

absl::StatusOr<UniqueFd> DialUnix(absl::string_view address) {
  ASSIGN_OR_RETURN(UnixAddress unix_address, ParseUnixAddress(address));
  UniqueFd fd(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd) return ErrnoError("ttrpc: socket");
  while (connect(fd.get(), reinterpret_cast<const sockaddr*>(&unix_address.addr),
                 unix_address.length) < 0) {
    if (errno == EINTR) continue;
    return ErrnoError(absl::StrCat("ttrpc: connect ", address));
  }
  return fd;
}

}  // namespace kapsel::ttrpc
