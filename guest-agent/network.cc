#include "guest-agent/network.h"

#include <arpa/inet.h>
#include <net/if.h>
#include <net/if_arp.h>
#include <net/route.h>
#include <netinet/in.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "common/status.h"
#include "common/unique_fd.h"

namespace kapsel::agent {
namespace {

constexpr uint32_t kMinMtu = 68;  // IPv4's minimum
constexpr uint32_t kMaxMtu = 65535;

using Mac = std::array<uint8_t, 6>;

// An IPv4 address (network byte order) and prefix length.
struct Cidr {
  in_addr_t address = 0;
  int prefix = 0;
};

in_addr_t Netmask(int prefix) { return prefix == 0 ? 0 : htonl(~uint32_t{0} << (32 - prefix)); }

int HexDigit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// "02:42:ac:11:00:02" (either case).
bool ParseMac(absl::string_view text, Mac* mac) {
  if (text.size() != 3 * mac->size() - 1) return false;
  for (size_t i = 0; i < mac->size(); ++i) {
    if (i > 0 && text[3 * i - 1] != ':') return false;
    const int high = HexDigit(text[3 * i]);
    const int low = HexDigit(text[3 * i + 1]);
    if (high < 0 || low < 0) return false;
    (*mac)[i] = static_cast<uint8_t>(high * 16 + low);
  }
  return true;
}

std::string FormatMac(const Mac& mac) {
  std::string text;
  for (uint8_t byte : mac) {
    absl::StrAppend(&text, text.empty() ? "" : ":", absl::Hex(byte, absl::kZeroPad2));
  }
  return text;
}

bool ParseIpv4(const std::string& text, in_addr_t* address) {
  in_addr parsed;
  if (inet_pton(AF_INET, text.c_str(), &parsed) != 1) return false;
  *address = parsed.s_addr;
  return true;
}

std::string FormatIpv4(in_addr_t address) {
  const uint32_t host = ntohl(address);
  return absl::StrCat(host >> 24, ".", (host >> 16) & 0xff, ".", (host >> 8) & 0xff, ".",
                      host & 0xff);
}

// "10.88.0.5/16": a dotted quad and a decimal prefix of 0..32.
bool ParseCidr(absl::string_view text, Cidr* cidr) {
  const size_t slash = text.find('/');
  if (slash == absl::string_view::npos) return false;
  const absl::string_view prefix = text.substr(slash + 1);
  if (prefix.empty() || prefix.size() > 2) return false;
  int value = 0;
  for (char c : prefix) {
    if (c < '0' || c > '9') return false;
    value = value * 10 + (c - '0');
  }
  if (value > 32) return false;
  cidr->prefix = value;
  return ParseIpv4(std::string(text.substr(0, slash)), &cidr->address);
}

// Not 0.0.0.0, not multicast, reserved (240/4) or broadcast: the kernel refuses those on a device.
bool IsUnicast(in_addr_t address) {
  const uint32_t host = ntohl(address);
  return host != 0 && (host >> 29) != 7;
}

// What the kernel accepts as a device name (dev_valid_name), without ':' (our alias labels).
bool ValidName(const std::string& name) {
  if (name.empty() || name.size() >= IFNAMSIZ || name == "." || name == "..") return false;
  for (char c : name) {
    if (c == '/' || c == ':' || isspace(static_cast<unsigned char>(c))) return false;
  }
  return true;
}

// The label of a device's `index`th address: NAME, then NAME:1, NAME:2...
std::string AddressLabel(const std::string& name, int index) {
  return index == 0 ? name : absl::StrCat(name, ":", index);
}

std::string RouteText(const v1::Route& route) {
  return absl::StrCat("route ", route.destination(), route.gateway().empty() ? "" : " via ",
                      route.gateway(), " dev ", route.device());
}

ifreq Request(absl::string_view name) {
  ifreq request;
  memset(&request, 0, sizeof(request));
  memcpy(request.ifr_name, name.data(), std::min(name.size(), size_t{IFNAMSIZ - 1}));
  return request;
}

void SetInet(sockaddr* out, in_addr_t address) {
  sockaddr_in in;
  memset(&in, 0, sizeof(in));
  in.sin_family = AF_INET;
  in.sin_addr.s_addr = address;
  memcpy(out, &in, sizeof(in));
}

absl::Status Ioctl(int fd, unsigned long request, void* argument, absl::string_view what) {
  if (ioctl(fd, request, argument) != 0) return ErrnoError(what);
  return absl::OkStatus();
}

absl::Status SetUp(int fd, const std::string& name, bool up) {
  ifreq request = Request(name);
  RETURN_IF_ERROR(Ioctl(fd, SIOCGIFFLAGS, &request, "SIOCGIFFLAGS"));
  if (((request.ifr_flags & IFF_UP) != 0) == up) return absl::OkStatus();
  request.ifr_flags =
      static_cast<short>(up ? request.ifr_flags | IFF_UP : request.ifr_flags & ~IFF_UP);
  return Ioctl(fd, SIOCSIFFLAGS, &request, up ? "SIOCSIFFLAGS up" : "SIOCSIFFLAGS down");
}

absl::Status Rename(int fd, const std::string& from, const std::string& to) {
  ifreq request = Request(from);
  memcpy(request.ifr_newname, to.data(), std::min(to.size(), size_t{IFNAMSIZ - 1}));
  return Ioctl(fd, SIOCSIFNAME, &request, absl::StrCat("SIOCSIFNAME ", from, " -> ", to));
}

absl::Status SetAddress(int fd, const std::string& label, const Cidr& cidr) {
  ifreq request = Request(label);
  SetInet(&request.ifr_addr, cidr.address);
  RETURN_IF_ERROR(Ioctl(fd, SIOCSIFADDR, &request,
                        absl::StrCat("SIOCSIFADDR ", label, " ", FormatIpv4(cidr.address))));
  request = Request(label);
  SetInet(&request.ifr_netmask, Netmask(cidr.prefix));
  return Ioctl(fd, SIOCSIFNETMASK, &request,
               absl::StrCat("SIOCSIFNETMASK ", label, " /", cidr.prefix));
}

struct Link {
  std::string name;
  Mac mac{};
};

// Every link with an Ethernet address, in index order.
absl::StatusOr<std::vector<Link>> EthernetLinks(int fd) {
  struct FreeNameIndex {
    void operator()(struct if_nameindex* names) const { if_freenameindex(names); }
  };
  std::unique_ptr<struct if_nameindex, FreeNameIndex> names(if_nameindex());
  if (names == nullptr) return ErrnoError("if_nameindex");
  std::vector<Link> links;
  for (const struct if_nameindex* entry = names.get(); entry->if_index != 0; ++entry) {
    ifreq request = Request(entry->if_name);
    if (ioctl(fd, SIOCGIFHWADDR, &request) != 0) {
      if (errno == ENODEV) continue;  // gone since the listing
      return ErrnoError(absl::StrCat("SIOCGIFHWADDR ", entry->if_name));
    }
    if (request.ifr_hwaddr.sa_family != ARPHRD_ETHER) continue;
    Link link;
    link.name = entry->if_name;
    memcpy(link.mac.data(), request.ifr_hwaddr.sa_data, link.mac.size());
    links.push_back(std::move(link));
  }
  return links;
}

// An interface of the request, parsed, with the link that has its MAC.
struct Plan {
  const v1::NetworkInterface* interface = nullptr;
  Mac mac{};
  std::vector<Cidr> addresses;
  std::string current_name;  // the link's name now (FindLinks, then as renamed)
};

absl::Status ValidateInterface(int index, const v1::NetworkInterface& interface, Plan* plan) {
  if (!ValidName(interface.name())) {
    return absl::InvalidArgumentError(absl::StrCat("interfaces[", index, "]: bad name '",
                                                   interface.name(), "' (want 1 to ", IFNAMSIZ - 1,
                                                   " bytes without '/', ':' or whitespace)"));
  }
  const std::string context = absl::StrCat("interface ", interface.name(), ": ");
  if (!ParseMac(interface.mac(), &plan->mac) || (plan->mac[0] & 1) != 0 || plan->mac == Mac{}) {
    return absl::InvalidArgumentError(
        absl::StrCat(context, "bad mac '", interface.mac(),
                     "' (want a unicast Ethernet address like 02:42:ac:11:00:02)"));
  }
  if (interface.mtu() != 0 && (interface.mtu() < kMinMtu || interface.mtu() > kMaxMtu)) {
    return absl::InvalidArgumentError(absl::StrCat(context, "mtu ", interface.mtu(),
                                                   " is out of range (0, or ", kMinMtu, " to ",
                                                   kMaxMtu, ")"));
  }
  for (int i = 0; i < interface.addresses_size(); ++i) {
    const std::string& text = interface.addresses(i);
    Cidr cidr;
    if (!ParseCidr(text, &cidr) || cidr.prefix == 0 || !IsUnicast(cidr.address)) {
      return absl::InvalidArgumentError(
          absl::StrCat(context, "bad address '", text,
                       "' (want a unicast IPv4 address with a prefix of 1 to 32, like "
                       "10.88.0.5/16)"));
    }
    const std::string label = AddressLabel(interface.name(), i);
    if (label.size() >= IFNAMSIZ) {
      return absl::InvalidArgumentError(absl::StrCat(context, "address '", text, "' needs label '",
                                                     label, "', longer than ", IFNAMSIZ - 1,
                                                     " bytes: shorten the name"));
    }
    plan->addresses.push_back(cidr);
  }
  plan->interface = &interface;
  return absl::OkStatus();
}

absl::Status ValidateRoute(int index, const v1::Route& route, const std::vector<Plan>& plans) {
  const std::string context = absl::StrCat("routes[", index, "] (", RouteText(route), "): ");
  Cidr destination;
  if (!ParseCidr(route.destination(), &destination)) {
    return absl::InvalidArgumentError(absl::StrCat(
        context, "bad destination '", route.destination(),
        "' (want an IPv4 CIDR with a prefix of 0 to 32, like 10.0.0.0/8 or 0.0.0.0/0)"));
  }
  if ((destination.address & ~Netmask(destination.prefix)) != 0) {
    return absl::InvalidArgumentError(absl::StrCat(context, "destination '", route.destination(),
                                                   "' has bits set beyond its prefix"));
  }
  in_addr_t gateway;
  if (!route.gateway().empty() && (!ParseIpv4(route.gateway(), &gateway) || !IsUnicast(gateway))) {
    return absl::InvalidArgumentError(
        absl::StrCat(context, "bad gateway '", route.gateway(),
                     "' (want a unicast IPv4 address, or nothing for an on-link route)"));
  }
  for (const Plan& plan : plans) {
    if (plan.interface->name() == route.device()) return absl::OkStatus();
  }
  return absl::InvalidArgumentError(
      absl::StrCat(context, "device '", route.device(), "' is not one of the interfaces"));
}

absl::StatusOr<std::vector<Plan>> Validate(const NetworkInterfaces& interfaces,
                                           const Routes& routes) {
  std::vector<Plan> plans(interfaces.size());
  for (int i = 0; i < interfaces.size(); ++i) {
    RETURN_IF_ERROR(ValidateInterface(i, interfaces[i], &plans[i]));
    for (int j = 0; j < i; ++j) {
      if (interfaces[j].name() == interfaces[i].name()) {
        return absl::InvalidArgumentError(absl::StrCat(
            "interfaces[", j, "] and [", i, "] are both named '", interfaces[i].name(), "'"));
      }
      if (plans[j].mac == plans[i].mac) {
        return absl::InvalidArgumentError(absl::StrCat("interfaces ", interfaces[j].name(), " and ",
                                                       interfaces[i].name(), " both have mac ",
                                                       FormatMac(plans[i].mac)));
      }
    }
  }
  for (int i = 0; i < routes.size(); ++i) RETURN_IF_ERROR(ValidateRoute(i, routes[i], plans));
  return plans;
}

// Finds each plan's link by MAC.
absl::Status FindLinks(int fd, std::vector<Plan>& plans) {
  ASSIGN_OR_RETURN(std::vector<Link> links, EthernetLinks(fd));
  for (Plan& plan : plans) {
    const Link* found = nullptr;
    for (const Link& link : links) {
      if (link.mac != plan.mac) continue;
      if (found != nullptr) {
        return absl::FailedPreconditionError(
            absl::StrCat("interface ", plan.interface->name(), ": links ", found->name, " and ",
                         link.name, " both have mac ", FormatMac(plan.mac)));
      }
      found = &link;
    }
    if (found == nullptr) {
      std::vector<std::string> seen;
      for (const Link& link : links) {
        seen.push_back(absl::StrCat(link.name, " ", FormatMac(link.mac)));
      }
      return absl::NotFoundError(absl::StrCat(
          "interface ", plan.interface->name(), ": no link has mac ", FormatMac(plan.mac),
          " (links seen: ", seen.empty() ? "none" : absl::StrJoin(seen, ", "), ")"));
    }
    plan.current_name = found->name;
  }
  return absl::OkStatus();
}

absl::Status ConfigureInterface(int fd, Plan& plan) {
  const v1::NetworkInterface& interface = *plan.interface;
  RETURN_IF_ERROR(SetUp(fd, plan.current_name, false));
  if (plan.current_name != interface.name()) {
    RETURN_IF_ERROR(Rename(fd, plan.current_name, interface.name()));
    plan.current_name = interface.name();
  }
  if (interface.mtu() != 0) {
    ifreq request = Request(interface.name());
    request.ifr_mtu = static_cast<int>(interface.mtu());
    RETURN_IF_ERROR(Ioctl(fd, SIOCSIFMTU, &request, absl::StrCat("SIOCSIFMTU ", interface.mtu())));
  }
  for (size_t i = 0; i < plan.addresses.size(); ++i) {
    RETURN_IF_ERROR(
        SetAddress(fd, AddressLabel(interface.name(), static_cast<int>(i)), plan.addresses[i]));
  }
  return SetUp(fd, interface.name(), true);
}

// The kernel made this route itself (an address's subnet on the device): adding it again through
// SIOCADDRT would add a second entry, not fail.
bool IsConnectedRoute(const v1::Route& route, const Cidr& destination,
                      const std::vector<Plan>& plans) {
  if (!route.gateway().empty()) return false;
  for (const Plan& plan : plans) {
    if (plan.interface->name() != route.device()) continue;
    for (const Cidr& address : plan.addresses) {
      // A /32 address has no subnet route.
      if (address.prefix < 32 && address.prefix == destination.prefix &&
          (address.address & Netmask(address.prefix)) == destination.address) {
        return true;
      }
    }
  }
  return false;
}

absl::Status AddRoute(int fd, const v1::Route& route, const std::vector<Plan>& plans) {
  Cidr destination;
  ParseCidr(route.destination(), &destination);  // validated
  if (IsConnectedRoute(route, destination, plans)) return absl::OkStatus();
  rtentry entry;
  memset(&entry, 0, sizeof(entry));
  SetInet(&entry.rt_dst, destination.address);
  SetInet(&entry.rt_genmask, Netmask(destination.prefix));
  entry.rt_flags = RTF_UP;
  if (destination.prefix == 32) entry.rt_flags |= RTF_HOST;
  if (!route.gateway().empty()) {
    in_addr_t gateway = 0;
    ParseIpv4(route.gateway(), &gateway);  // validated
    SetInet(&entry.rt_gateway, gateway);
    entry.rt_flags |= RTF_GATEWAY;
  }
  std::string device = route.device();
  entry.rt_dev = device.data();
  if (ioctl(fd, SIOCADDRT, &entry) != 0 && errno != EEXIST) {
    return ErrnoError(absl::StrCat(RouteText(route), ": SIOCADDRT"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status ValidateNetwork(const NetworkInterfaces& interfaces, const Routes& routes) {
  return Validate(interfaces, routes).status();
}

absl::Status ConfigureNetwork(const NetworkInterfaces& interfaces, const Routes& routes) {
  ASSIGN_OR_RETURN(std::vector<Plan> plans, Validate(interfaces, routes));
  UniqueFd fd(socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  if (!fd) return ErrnoError("network: socket");
  RETURN_IF_ERROR(FindLinks(fd.get(), plans));
  RETURN_IF_ERROR(Annotate(SetUp(fd.get(), "lo", true), "lo"));
  // Devices whose name changes first move to a temporary name, down: one may hold another's new
  // name (the kernel named them eth0 and eth1, the pod wants them the other way round).
  for (size_t i = 0; i < plans.size(); ++i) {
    Plan& plan = plans[i];
    if (plan.current_name == plan.interface->name()) continue;
    const std::string temporary = absl::StrCat("kapsel-tmp", i);
    absl::Status moved = SetUp(fd.get(), plan.current_name, false);
    if (moved.ok()) moved = Rename(fd.get(), plan.current_name, temporary);
    RETURN_IF_ERROR(Annotate(moved, absl::StrCat("interface ", plan.interface->name())));
    plan.current_name = temporary;
  }
  for (Plan& plan : plans) {
    RETURN_IF_ERROR(Annotate(ConfigureInterface(fd.get(), plan),
                             absl::StrCat("interface ", plan.interface->name())));
  }
  // On-link routes first: a gateway must be reachable when its route is added.
  std::vector<const v1::Route*> ordered;
  for (const v1::Route& route : routes) ordered.push_back(&route);
  std::stable_partition(ordered.begin(), ordered.end(),
                        [](const v1::Route* route) { return route->gateway().empty(); });
  for (const v1::Route* route : ordered) RETURN_IF_ERROR(AddRoute(fd.get(), *route, plans));
  return absl::OkStatus();
}

}  // namespace kapsel::agent
