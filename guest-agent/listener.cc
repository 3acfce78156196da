#include "guest-agent/listener.h"

#include <linux/vm_sockets.h>
#include <sys/socket.h>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "common/ttrpc/address.h"

namespace kapsel::agent {
namespace {

absl::StatusOr<uint32_t> VsockPort(absl::string_view address) {
  uint32_t port;
  if (!absl::SimpleAtoi(address.substr(6), &port)) {
    return absl::InvalidArgumentError(absl::StrCat("bad vsock address '", address, "'"));
  }
  return port;
}

}  // namespace

absl::StatusOr<UniqueFd> Listen(absl::string_view address) {
  if (absl::StartsWith(address, "unix:")) return ttrpc::ListenUnix(address);
  if (!absl::StartsWith(address, "vsock:")) {
    return absl::InvalidArgumentError(
        absl::StrCat("listen address '", address, "': want unix:PATH or vsock:PORT"));
  }
  ASSIGN_OR_RETURN(uint32_t port, VsockPort(address));
  UniqueFd fd(socket(AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd) return ErrnoError("socket(AF_VSOCK)");
  sockaddr_vm addr{};
  addr.svm_family = AF_VSOCK;
  addr.svm_cid = VMADDR_CID_ANY;
  addr.svm_port = port;
  if (bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    return ErrnoError(absl::StrCat("bind ", address));
  }
  if (listen(fd.get(), 128) != 0) return ErrnoError(absl::StrCat("listen ", address));
  return fd;
}

absl::StatusOr<std::string> StdioAddressFor(absl::string_view api_address) {
  if (absl::StartsWith(api_address, "unix:")) return absl::StrCat(api_address, ".stdio");
  if (absl::StartsWith(api_address, "vsock:")) {
    ASSIGN_OR_RETURN(uint32_t port, VsockPort(api_address));
    return absl::StrCat("vsock:", port + 1);
  }
  return absl::InvalidArgumentError(
      absl::StrCat("listen address '", api_address, "': want unix:PATH or vsock:PORT"));
}

}  // namespace kapsel::agent
