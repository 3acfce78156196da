#include "shim/pod_network.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/if_ether.h>
#include <linux/if_tun.h>
#include <linux/pkt_cls.h>
#include <linux/tc_act/tc_mirred.h>
#include <net/if.h>
#include <netlink/netlink.h>
#include <netlink/route/act/mirred.h>
#include <netlink/route/addr.h>
#include <netlink/route/classifier.h>
#include <netlink/route/cls/u32.h>
#include <netlink/route/link.h>
#include <netlink/route/qdisc.h>
#include <netlink/route/route.h>
#include <netlink/route/tc.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <functional>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status.h"
#include "shim/log.h"

namespace kapsel::shim {
namespace {

constexpr char kTapNameTemplate[] = "tap%d_kapsel";

absl::Status NlError(int err, const std::string& what) {
  return absl::InternalError(absl::StrCat(what, ": ", nl_geterror(err)));
}

// Runs `fn` on a thread that joined the network namespace at `path`; the caller's threads stay.
absl::Status InNetns(const std::string& path, const std::function<absl::Status()>& fn) {
  UniqueFd ns(open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!ns.valid()) return ErrnoError(absl::StrCat("open network namespace ", path));
  absl::Status status;
  std::thread thread([&] {
    if (setns(ns.get(), CLONE_NEWNET) != 0) {
      status = ErrnoError(absl::StrCat("join network namespace ", path));
      return;
    }
    status = fn();
  });
  thread.join();
  return status;
}

// A connected NETLINK_ROUTE socket in the calling thread's network namespace.
struct NlSocketDeleter {
  void operator()(nl_sock* sk) const { nl_socket_free(sk); }
};
using NlSocket = std::unique_ptr<nl_sock, NlSocketDeleter>;
struct NlCacheDeleter {
  void operator()(nl_cache* c) const { nl_cache_free(c); }
};
using NlCache = std::unique_ptr<nl_cache, NlCacheDeleter>;

absl::StatusOr<NlSocket> ConnectRoute() {
  NlSocket sk(nl_socket_alloc());
  if (sk == nullptr) return absl::ResourceExhaustedError("nl_socket_alloc");
  if (int err = nl_connect(sk.get(), NETLINK_ROUTE); err < 0) {
    return NlError(err, "connect to rtnetlink");
  }
  return sk;
}

std::string Ipv4String(nl_addr* addr) {
  char text[INET_ADDRSTRLEN] = {};
  if (addr == nullptr || nl_addr_get_family(addr) != AF_INET || nl_addr_get_len(addr) != 4) {
    return "";
  }
  inet_ntop(AF_INET, nl_addr_get_binary_addr(addr), text, sizeof(text));
  return text;
}

std::string MacString(nl_addr* addr) {
  if (addr == nullptr || nl_addr_get_len(addr) != ETH_ALEN) return "";
  const auto* b = static_cast<const uint8_t*>(nl_addr_get_binary_addr(addr));
  char text[18];
  snprintf(text, sizeof(text), "%02x:%02x:%02x:%02x:%02x:%02x", b[0], b[1], b[2], b[3], b[4], b[5]);
  return text;
}

// Opens a new tap (named from kTapNameTemplate by the kernel) with the MTU given, and sets it up.
absl::Status CreateTap(uint32_t mtu, PodInterface* interface) {
  UniqueFd tap(open("/dev/net/tun", O_RDWR | O_CLOEXEC));
  if (!tap.valid()) return ErrnoError("open /dev/net/tun");
  struct ifreq ifr = {};
  snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", kTapNameTemplate);
  ifr.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
  if (ioctl(tap.get(), TUNSETIFF, &ifr) != 0) return ErrnoError("create a tap (TUNSETIFF)");
  interface->tap_name = ifr.ifr_name;
  UniqueFd sock(socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  if (!sock.valid()) return ErrnoError("socket");
  if (mtu != 0) {
    ifr.ifr_mtu = static_cast<int>(mtu);
    if (ioctl(sock.get(), SIOCSIFMTU, &ifr) != 0) {
      return ErrnoError(absl::StrCat("set the MTU of ", interface->tap_name, " to ", mtu));
    }
  }
  if (ioctl(sock.get(), SIOCGIFFLAGS, &ifr) != 0) {
    return ErrnoError(absl::StrCat("get the flags of ", interface->tap_name));
  }
  ifr.ifr_flags |= IFF_UP;
  if (ioctl(sock.get(), SIOCSIFFLAGS, &ifr) != 0) {
    return ErrnoError(absl::StrCat("set ", interface->tap_name, " up"));
  }
  interface->tap_ifindex = static_cast<int>(if_nametoindex(interface->tap_name.c_str()));
  if (interface->tap_ifindex == 0) return ErrnoError(absl::StrCat("find ", interface->tap_name));
  interface->tap = std::move(tap);
  return absl::OkStatus();
}

rtnl_tc* Tc(void* object) { return static_cast<rtnl_tc*>(object); }

absl::Status AddIngressQdisc(nl_sock* sk, int ifindex) {
  rtnl_qdisc* qdisc = rtnl_qdisc_alloc();
  if (qdisc == nullptr) return absl::ResourceExhaustedError("rtnl_qdisc_alloc");
  rtnl_tc_set_ifindex(Tc(qdisc), ifindex);
  rtnl_tc_set_parent(Tc(qdisc), TC_H_INGRESS);
  rtnl_tc_set_handle(Tc(qdisc), TC_HANDLE(0xffff, 0));
  int err = rtnl_tc_set_kind(Tc(qdisc), "ingress");
  if (err == 0) err = rtnl_qdisc_add(sk, qdisc, NLM_F_CREATE | NLM_F_EXCL);
  rtnl_qdisc_put(qdisc);
  if (err < 0) return NlError(err, "add an ingress qdisc");
  return absl::OkStatus();
}

void DeleteIngressQdisc(nl_sock* sk, int ifindex) {
  rtnl_qdisc* qdisc = rtnl_qdisc_alloc();
  if (qdisc == nullptr) return;
  rtnl_tc_set_ifindex(Tc(qdisc), ifindex);
  rtnl_tc_set_parent(Tc(qdisc), TC_H_INGRESS);
  rtnl_tc_set_handle(Tc(qdisc), TC_HANDLE(0xffff, 0));
  rtnl_tc_set_kind(Tc(qdisc), "ingress");
  if (int err = rtnl_qdisc_delete(sk, qdisc); err < 0 && err != -NLE_OBJ_NOTFOUND) {
    LogInfo("removing the ingress qdisc of interface ", ifindex, ": ", nl_geterror(err));
  }
  rtnl_qdisc_put(qdisc);
}

// Every frame arriving on `from` leaves through `to` (and is gone from `from`'s stack).
absl::Status AddRedirect(nl_sock* sk, int from, int to) {
  rtnl_cls* cls = rtnl_cls_alloc();
  rtnl_act* act = rtnl_act_alloc();
  absl::Status status;
  if (cls == nullptr || act == nullptr) {
    status = absl::ResourceExhaustedError("rtnl_cls_alloc");
  } else {
    rtnl_tc_set_ifindex(Tc(cls), from);
    rtnl_tc_set_parent(Tc(cls), TC_HANDLE(0xffff, 0));
    rtnl_cls_set_protocol(cls, ETH_P_ALL);
    rtnl_cls_set_prio(cls, 1);
    int err = rtnl_tc_set_kind(Tc(cls), "u32");
    if (err == 0) err = rtnl_u32_add_key_uint32(cls, 0, 0, 0, 0);  // matches every frame
    if (err == 0) err = rtnl_u32_set_cls_terminal(cls);
    if (err == 0) err = rtnl_tc_set_kind(Tc(act), "mirred");
    if (err == 0) err = rtnl_mirred_set_action(act, TCA_EGRESS_REDIR);
    if (err == 0) err = rtnl_mirred_set_policy(act, TC_ACT_STOLEN);
    if (err == 0) err = rtnl_mirred_set_ifindex(act, static_cast<uint32_t>(to));
    if (err == 0) err = rtnl_u32_add_action(cls, act);
    if (err == 0) err = rtnl_cls_add(sk, cls, NLM_F_CREATE | NLM_F_EXCL);
    if (err < 0) status = NlError(err, "add a u32 filter with a mirred redirect");
  }
  if (act != nullptr) rtnl_act_put(act);
  if (cls != nullptr) rtnl_cls_put(cls);
  return status;
}

// The ingress qdisc on `from` (*qdisc_added once it exists) and the redirect of every frame
// arriving there to `to`.
absl::Status Redirect(nl_sock* sk, int from, const std::string& from_name, int to,
                      const std::string& to_name, bool* qdisc_added) {
  absl::Status status = AddIngressQdisc(sk, from);
  if (status.ok()) {
    *qdisc_added = true;
    status = AddRedirect(sk, from, to);
  }
  if (!status.ok()) return Annotate(status, absl::StrCat("redirect ", from_name, " to ", to_name));
  return absl::OkStatus();
}

}  // namespace

bool IsOwnNetworkNamespace(const std::string& netns_path) {
  struct stat own, other;
  return stat("/proc/self/ns/net", &own) == 0 && stat(netns_path.c_str(), &other) == 0 &&
         own.st_dev == other.st_dev && own.st_ino == other.st_ino;
}

absl::StatusOr<std::unique_ptr<PodNetwork>> PodNetwork::Attach(const std::string& netns_path) {
  std::unique_ptr<PodNetwork> network(new PodNetwork(netns_path));
  absl::Status status = InNetns(netns_path, [&]() -> absl::Status {
    ASSIGN_OR_RETURN(NlSocket sk, ConnectRoute());
    nl_cache* raw = nullptr;
    if (int err = rtnl_link_alloc_cache(sk.get(), AF_UNSPEC, &raw); err < 0) {
      return NlError(err, "list links");
    }
    NlCache links(raw);
    if (int err = rtnl_addr_alloc_cache(sk.get(), &raw); err < 0) {
      return NlError(err, "list addresses");
    }
    NlCache addrs(raw);
    if (int err = rtnl_route_alloc_cache(sk.get(), AF_INET, 0, &raw); err < 0) {
      return NlError(err, "list routes");
    }
    NlCache routes(raw);

    for (nl_object* o = nl_cache_get_first(links.get()); o != nullptr; o = nl_cache_get_next(o)) {
      auto* link = reinterpret_cast<rtnl_link*>(o);
      if ((rtnl_link_get_flags(link) & IFF_LOOPBACK) != 0) continue;
      PodInterface interface;
      interface.name = rtnl_link_get_name(link);
      interface.ifindex = rtnl_link_get_ifindex(link);
      interface.mac = MacString(rtnl_link_get_addr(link));
      interface.mtu = rtnl_link_get_mtu(link);
      for (nl_object* a = nl_cache_get_first(addrs.get()); a != nullptr; a = nl_cache_get_next(a)) {
        auto* addr = reinterpret_cast<rtnl_addr*>(a);
        if (rtnl_addr_get_ifindex(addr) != interface.ifindex) continue;
        if (rtnl_addr_get_family(addr) != AF_INET) {
          if (rtnl_addr_get_scope(addr) != RT_SCOPE_LINK) {
            LogInfo("pod network: ", interface.name, ": leaving out a non-IPv4 address");
          }
          continue;
        }
        const std::string ip = Ipv4String(rtnl_addr_get_local(addr));
        if (ip.empty()) continue;
        interface.addresses.push_back(absl::StrCat(ip, "/", rtnl_addr_get_prefixlen(addr)));
      }
      if (interface.addresses.empty()) {
        LogInfo("pod network: ", interface.name, " has no IPv4 address; it stays on the host");
        continue;
      }
      if (interface.mac.empty()) {
        return absl::UnimplementedError(
            absl::StrCat("pod network: interface ", interface.name,
                         " has no Ethernet address (only Ethernet "
                         "interfaces such as veths can be moved into a kapsel VM)"));
      }
      network->interfaces_.push_back(std::move(interface));
    }

    for (nl_object* o = nl_cache_get_first(routes.get()); o != nullptr; o = nl_cache_get_next(o)) {
      auto* route = reinterpret_cast<rtnl_route*>(o);
      if (rtnl_route_get_table(route) != RT_TABLE_MAIN ||
          rtnl_route_get_type(route) != RTN_UNICAST || rtnl_route_get_nnexthops(route) != 1) {
        continue;
      }
      rtnl_nexthop* nh = rtnl_route_nexthop_n(route, 0);
      const PodInterface* via = nullptr;
      for (const PodInterface& i : network->interfaces_) {
        if (i.ifindex == rtnl_route_nh_get_ifindex(nh)) via = &i;
      }
      if (via == nullptr) continue;
      nl_addr* dst = rtnl_route_get_dst(route);
      std::string destination = Ipv4String(dst);
      if (destination.empty()) destination = "0.0.0.0";
      agent::v1::Route r;
      r.set_destination(
          absl::StrCat(destination, "/", dst == nullptr ? 0 : nl_addr_get_prefixlen(dst)));
      r.set_gateway(Ipv4String(rtnl_route_nh_get_gateway(nh)));
      r.set_device(via->name);
      network->routes_.push_back(std::move(r));
    }

    for (PodInterface& interface : network->interfaces_) {
      RETURN_IF_ERROR(CreateTap(interface.mtu, &interface));
      bool tap_qdisc = false;  // goes with the tap
      RETURN_IF_ERROR(Redirect(sk.get(), interface.ifindex, interface.name, interface.tap_ifindex,
                               interface.tap_name, &interface.redirected));
      RETURN_IF_ERROR(Redirect(sk.get(), interface.tap_ifindex, interface.tap_name,
                               interface.ifindex, interface.name, &tap_qdisc));
      LogInfo("pod network: ", interface.name, " (", interface.mac, ", ",
              absl::StrJoin(interface.addresses, " "), ") goes to the VM through ",
              interface.tap_name);
    }
    return absl::OkStatus();
  });
  if (!status.ok()) {
    network->Detach();
    return Annotate(status, absl::StrCat("moving the pod network ", netns_path, " into the VM"));
  }
  return network;
}

PodNetwork::~PodNetwork() { Detach(); }

void PodNetwork::Detach() {
  if (detached_) return;
  detached_ = true;
  bool any = false;
  for (const PodInterface& i : interfaces_) any = any || i.redirected;
  if (!any) return;
  absl::Status status = InNetns(netns_path_, [&]() -> absl::Status {
    ASSIGN_OR_RETURN(NlSocket sk, ConnectRoute());
    for (const PodInterface& i : interfaces_) {
      if (i.redirected) DeleteIngressQdisc(sk.get(), i.ifindex);
    }
    return absl::OkStatus();
  });
  if (!status.ok() && !absl::IsNotFound(status)) {
    LogInfo("pod network: detaching ", netns_path_, ": ", status.message());
  }
}

std::vector<std::string> PodNetwork::VmmNetArgs() const {
  std::vector<std::string> args;
  for (const PodInterface& i : interfaces_) {
    std::string arg = absl::StrCat("fd=", i.tap.get(), ",mac=", i.mac);
    if (i.mtu != 0) absl::StrAppend(&arg, ",mtu=", i.mtu);
    args.push_back(std::move(arg));
  }
  return args;
}

std::vector<int> PodNetwork::tap_fds() const {
  std::vector<int> fds;
  for (const PodInterface& i : interfaces_) fds.push_back(i.tap.get());
  return fds;
}

void PodNetwork::AddTo(agent::v1::CreateSandboxRequest* request) const {
  for (const PodInterface& i : interfaces_) {
    agent::v1::NetworkInterface* out = request->add_interfaces();
    out->set_name(i.name);
    out->set_mac(i.mac);
    out->set_mtu(i.mtu);
    for (const std::string& a : i.addresses) out->add_addresses(a);
  }
  for (const agent::v1::Route& r : routes_) *request->add_routes() = r;
}

}  // namespace kapsel::shim
