// Unix socket addresses as containerd writes them: "unix:///run/x.sock", "unix:/run/x.sock", a
// plain path, or "@name" (also "unix://@name") for the abstract namespace.
#ifndef KAPSEL_COMMON_TTRPC_ADDRESS_H_
#define KAPSEL_COMMON_TTRPC_ADDRESS_H_

#include <sys/socket.h>
#include <sys/un.h>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/unique_fd.h"

namespace kapsel::ttrpc {

struct UnixAddress {
  sockaddr_un addr = {};
  socklen_t length = 0;
};

// InvalidArgument for an empty address, another scheme, or a path too long for sockaddr_un.
absl::StatusOr<UnixAddress> ParseUnixAddress(absl::string_view address);

// A listening stream socket (close-on-exec) bound to `address`. A path that exists is an error
// (AlreadyExists): callers decide whether to remove a stale socket.
absl::StatusOr<UniqueFd> ListenUnix(absl::string_view address, int backlog = 128);

// A stream socket (close-on-exec) connected to `address`.
absl::StatusOr<UniqueFd> DialUnix(absl::string_view address);

}  // namespace kapsel::ttrpc

#endif  // KAPSEL_COMMON_TTRPC_ADDRESS_H_
