#include "vmm/devices/virtio/net/tap.h"

#include <fcntl.h>
#include <linux/if_tun.h>
#include <net/if.h>
#include <sys/ioctl.h>

#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status.h"

namespace kapsel::vmm::virtio {

absl::StatusOr<Tap> AdoptTap(UniqueFd fd) {
  const int raw = fd.get();
  const int fd_flags = fcntl(raw, F_GETFD);
  if (fd_flags < 0) return ErrnoError(absl::StrCat("fd ", raw, " is not open"));
  ifreq ifr{};
  if (ioctl(raw, TUNGETIFF, &ifr) != 0) {
    return ErrnoError(
        absl::StrCat("fd ", raw, " is not an attached tun/tap device (ioctl TUNGETIFF)"));
  }
  std::string name(ifr.ifr_name, strnlen(ifr.ifr_name, sizeof(ifr.ifr_name)));
  const int flags = ifr.ifr_flags;
  std::vector<std::string> wrong;
  if ((flags & IFF_TAP) == 0) wrong.push_back("not IFF_TAP (a tun device carries no Ethernet)");
  if ((flags & IFF_NO_PI) == 0) wrong.push_back("IFF_NO_PI is not set");
  if ((flags & IFF_VNET_HDR) == 0) wrong.push_back("IFF_VNET_HDR is not set");
  if (!wrong.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("fd ", raw, " (", name, ") is not usable: ", absl::StrJoin(wrong, ", "),
                     "; open it with IFF_TAP|IFF_NO_PI|IFF_VNET_HDR"));
  }
  int header_size = kNetHeaderSize;
  if (ioctl(raw, TUNSETVNETHDRSZ, &header_size) != 0) {
    return ErrnoError(absl::StrCat("tap ", name, ": ioctl TUNSETVNETHDRSZ ", header_size));
  }
  RETURN_IF_ERROR(SetTapOffload(raw, name, 0));
  const int fl = fcntl(raw, F_GETFL);
  if (fl < 0 || fcntl(raw, F_SETFL, fl | O_NONBLOCK) != 0) {
    return ErrnoError(absl::StrCat("tap ", name, ": setting O_NONBLOCK"));
  }
  if (fcntl(raw, F_SETFD, fd_flags | FD_CLOEXEC) != 0) {
    return ErrnoError(absl::StrCat("tap ", name, ": setting FD_CLOEXEC"));
  }
  return Tap{std::move(fd), std::move(name)};
}

absl::StatusOr<Tap> OpenTap(const std::string& name) {
  if (name.empty() || name.size() >= IFNAMSIZ) {
    return absl::InvalidArgumentError(
        absl::StrCat("tap name '", name, "' must have 1..", IFNAMSIZ - 1, " bytes"));
  }
  if (name.find_first_of("/: \t\n") != std::string::npos || name == "." || name == "..") {
    return absl::InvalidArgumentError(absl::StrCat("'", name, "' is not an interface name"));
  }
  UniqueFd fd(open("/dev/net/tun", O_RDWR | O_CLOEXEC | O_NONBLOCK));
  if (!fd) return ErrnoError("open /dev/net/tun");
  ifreq ifr{};
  std::memcpy(ifr.ifr_name, name.data(), name.size());
  ifr.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
  if (ioctl(fd.get(), TUNSETIFF, &ifr) != 0) {
    return ErrnoError(absl::StrCat("tap ", name, ": ioctl TUNSETIFF"));
  }
  return AdoptTap(std::move(fd));
}

absl::Status SetTapOffload(int fd, const std::string& name, unsigned flags) {
  if (ioctl(fd, TUNSETOFFLOAD, static_cast<unsigned long>(flags)) != 0) {
    return ErrnoError(absl::StrCat("tap ", name, ": ioctl TUNSETOFFLOAD 0x", absl::Hex(flags)));
  }
  return absl::OkStatus();
}

}  // namespace kapsel::vmm::virtio
