#include "tests/vmm/net/test_tap.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/if_packet.h>
#include <linux/if_tun.h>
#include <net/if.h>
#include <poll.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>

#include "absl/strings/str_cat.h"
#include "common/status.h"

namespace kapsel::vmm::virtio::testing {

absl::Status EnterPrivateNetns() {
  if (unshare(CLONE_NEWNET) != 0) return ErrnoError("unshare(CLONE_NEWNET)");
  // /proc/sys/net shows the namespace of the process that opens it. Absent without IPv6.
  for (const char* path : {"/proc/sys/net/ipv6/conf/default/disable_ipv6",
                           "/proc/sys/net/ipv6/conf/all/disable_ipv6"}) {
    UniqueFd fd(open(path, O_WRONLY | O_CLOEXEC));
    if (fd) (void)!write(fd.get(), "1", 1);
  }
  return absl::OkStatus();
}

absl::StatusOr<UniqueFd> CreateTap(const std::string& name, int flags) {
  UniqueFd fd(open("/dev/net/tun", O_RDWR | O_CLOEXEC));
  if (!fd) return ErrnoError("open /dev/net/tun");
  ifreq ifr{};
  std::strncpy(ifr.ifr_name, name.c_str(), IFNAMSIZ - 1);
  ifr.ifr_flags = static_cast<short>(flags);
  if (ioctl(fd.get(), TUNSETIFF, &ifr) != 0) return ErrnoError("TUNSETIFF " + name);
  return fd;
}

std::vector<uint8_t> TestFrame(size_t size, uint8_t seed) {
  std::vector<uint8_t> frame(size);
  const uint8_t dst[6] = {0x02, 0, 0, 0, 0, 0x01};
  const uint8_t src[6] = {0x02, 0, 0, 0, 0, 0x02};
  std::memcpy(frame.data(), dst, 6);
  std::memcpy(frame.data() + 6, src, 6);
  frame[12] = kTestEtherType >> 8;
  frame[13] = kTestEtherType & 0xff;
  for (size_t i = 14; i < size; ++i) frame[i] = static_cast<uint8_t>(seed + i);
  return frame;
}

absl::StatusOr<TestTap> TestTap::Create(const std::string& name) {
  ASSIGN_OR_RETURN(UniqueFd fd, CreateTap(name, IFF_TAP | IFF_NO_PI | IFF_VNET_HDR));
  UniqueFd ctl(socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  if (!ctl) return ErrnoError("socket(AF_INET)");
  ifreq ifr{};
  std::strncpy(ifr.ifr_name, name.c_str(), IFNAMSIZ - 1);
  if (ioctl(ctl.get(), SIOCGIFFLAGS, &ifr) != 0) return ErrnoError("SIOCGIFFLAGS " + name);
  ifr.ifr_flags |= IFF_UP | IFF_NOARP;
  if (ioctl(ctl.get(), SIOCSIFFLAGS, &ifr) != 0) return ErrnoError("SIOCSIFFLAGS " + name);
  const int index = static_cast<int>(if_nametoindex(name.c_str()));
  if (index == 0) return ErrnoError("if_nametoindex " + name);
  UniqueFd packet(socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, htons(kTestEtherType)));
  if (!packet) return ErrnoError("socket(AF_PACKET)");
  sockaddr_ll addr{};
  addr.sll_family = AF_PACKET;
  addr.sll_protocol = htons(kTestEtherType);
  addr.sll_ifindex = index;
  if (bind(packet.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    return ErrnoError("bind(AF_PACKET) to " + name);
  }
  return TestTap(std::move(fd), std::move(packet), name);
}

absl::Status TestTap::Inject(const std::vector<uint8_t>& frame) {
  const ssize_t n = send(packet_.get(), frame.data(), frame.size(), 0);
  if (n < 0) return ErrnoError("send on the packet socket");
  if (static_cast<size_t>(n) != frame.size()) {
    return absl::InternalError(absl::StrCat("sent ", n, " of ", frame.size(), " bytes"));
  }
  return absl::OkStatus();
}

std::vector<uint8_t> TestTap::Receive(int timeout_ms) {
  pollfd p{packet_.get(), POLLIN, 0};
  if (poll(&p, 1, timeout_ms) != 1) return {};
  std::vector<uint8_t> frame(70000);
  const ssize_t n = recv(packet_.get(), frame.data(), frame.size(), MSG_DONTWAIT);
  if (n <= 0) return {};
  frame.resize(static_cast<size_t>(n));
  return frame;
}

}  // namespace kapsel::vmm::virtio::testing
