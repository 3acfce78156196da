// The agent's pod network setup (guest-agent/network.h) applied for real on this machine: each test
// runs in its own network and UTS namespaces (unshare in SetUp; needs root), where veth pairs made
// with `ip` stand in for the VM's virtio-net devices. What the ioctls did is read back with ioctls
// and /proc/net/route. Nothing reaches the host's namespaces: the process leaves them for good
// before the first `ip` command, and a namespace goes away with its last user.
#include "guest-agent/network.h"

#include <arpa/inet.h>
#include <net/if.h>
#include <net/route.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstring>
#include <fstream>
#include <functional>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/unique_fd.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "guest-agent/agent_service.h"
#include "guest-agent/process_table.h"
#include "tests/support/subprocess.h"

namespace kapsel::agent {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::StartsWith;
using ::testing::UnorderedElementsAre;

constexpr char kMacA[] = "02:00:00:00:0a:01";
constexpr char kPeerMacA[] = "02:00:00:00:0a:02";
constexpr char kMacB[] = "02:00:00:00:0b:01";
constexpr char kPeerMacB[] = "02:00:00:00:0b:02";

struct LinkState {
  int index = 0;
  bool up = false;
  int mtu = 0;
  std::string mac;
};

std::string Dotted(in_addr_t address) {
  char text[INET_ADDRSTRLEN] = "";
  in_addr in{address};
  inet_ntop(AF_INET, &in, text, sizeof(text));
  return text;
}

ifreq Request(const std::string& name) {
  ifreq request;
  memset(&request, 0, sizeof(request));
  strncpy(request.ifr_name, name.c_str(), IFNAMSIZ - 1);
  return request;
}

class NetworkTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (unshare(CLONE_NEWNET | CLONE_NEWUTS) != 0) {
      if (errno == EPERM) GTEST_SKIP() << "needs root for private network namespaces";
      FAIL() << "unshare(CLONE_NEWNET | CLONE_NEWUTS): " << strerror(errno);
    }
    private_namespace_ = true;
    socket_.reset(socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    ASSERT_TRUE(socket_.valid()) << strerror(errno);
  }

  // `ip ARGS...` in this test's namespace.
  void Ip(std::vector<std::string> args) {
    ASSERT_TRUE(private_namespace_) << "refusing to change the host's network";
    args.insert(args.begin(), "ip");
    absl::StatusOr<testing::ProcessResult> result = testing::RunProcess(args, absl::Seconds(10));
    ASSERT_TRUE(result.ok()) << result.status();
    ASSERT_EQ(result->exit_code, 0) << absl::StrJoin(args, " ") << ": " << result->err;
  }

  // A veth pair: `name` (down, the device to configure) and `peer` (up, so `name` gets a carrier).
  void AddVeth(const std::string& name, const std::string& mac, const std::string& peer,
               const std::string& peer_mac) {
    Ip({"link", "add", name, "address", mac, "type", "veth", "peer", "name", peer, "address",
        peer_mac});
    Ip({"link", "set", peer, "up"});
  }

  // Index 0: no such link.
  LinkState Link(const std::string& name) {
    LinkState state;
    state.index = static_cast<int>(if_nametoindex(name.c_str()));
    if (state.index == 0) return state;
    ifreq request = Request(name);
    EXPECT_EQ(ioctl(socket_.get(), SIOCGIFFLAGS, &request), 0) << name;
    state.up = (request.ifr_flags & IFF_UP) != 0;
    request = Request(name);
    EXPECT_EQ(ioctl(socket_.get(), SIOCGIFMTU, &request), 0) << name;
    state.mtu = request.ifr_mtu;
    request = Request(name);
    EXPECT_EQ(ioctl(socket_.get(), SIOCGIFHWADDR, &request), 0) << name;
    for (int i = 0; i < 6; ++i) {
      absl::StrAppend(
          &state.mac, i == 0 ? "" : ":",
          absl::Hex(static_cast<uint8_t>(request.ifr_hwaddr.sa_data[i]), absl::kZeroPad2));
    }
    return state;
  }

  // "10.88.0.5 255.255.0.0" for an address label (eth0, eth0:1); empty when it has none.
  std::string Address(const std::string& label) {
    ifreq request = Request(label);
    if (ioctl(socket_.get(), SIOCGIFADDR, &request) != 0) return "";
    sockaddr_in address;
    memcpy(&address, &request.ifr_addr, sizeof(address));
    request = Request(label);
    EXPECT_EQ(ioctl(socket_.get(), SIOCGIFNETMASK, &request), 0) << label;
    sockaddr_in mask;
    memcpy(&mask, &request.ifr_netmask, sizeof(mask));
    return absl::StrCat(Dotted(address.sin_addr.s_addr), " ", Dotted(mask.sin_addr.s_addr));
  }

  // The main table's routes from /proc/net/route: "10.0.0.0/8 via 10.88.0.1 dev eth0", with
  // " (host)" when the kernel flags it RTF_HOST.
  std::vector<std::string> Routes() {
    std::ifstream in("/proc/net/route");
    std::string line;
    std::getline(in, line);  // the header
    std::vector<std::string> routes;
    while (std::getline(in, line)) {
      std::istringstream fields(line);
      std::string device;
      uint32_t destination, gateway, flags, refcnt, use, metric, mask;
      fields >> device >> std::hex >> destination >> gateway >> flags >> std::dec >> refcnt >>
          use >> metric >> std::hex >> mask;
      EXPECT_FALSE(fields.fail()) << line;
      EXPECT_NE(flags & RTF_UP, 0u) << line;
      routes.push_back(absl::StrCat(Dotted(destination), "/", __builtin_popcount(mask),
                                    (flags & RTF_GATEWAY) ? " via " + Dotted(gateway) : "", " dev ",
                                    device, (flags & RTF_HOST) ? " (host)" : ""));
    }
    return routes;
  }

  std::vector<std::string> LinkNames() {
    std::vector<std::string> names;
    struct if_nameindex* all = if_nameindex();
    for (const struct if_nameindex* entry = all; entry && entry->if_index != 0; ++entry) {
      names.push_back(entry->if_name);
    }
    if_freenameindex(all);
    return names;
  }

  static v1::NetworkInterface* AddInterface(v1::CreateSandboxRequest& request,
                                            const std::string& name, const std::string& mac,
                                            uint32_t mtu, std::vector<std::string> addresses) {
    v1::NetworkInterface* interface = request.add_interfaces();
    interface->set_name(name);
    interface->set_mac(mac);
    interface->set_mtu(mtu);
    for (std::string& address : addresses) interface->add_addresses(std::move(address));
    return interface;
  }

  static v1::Route* AddRoute(v1::CreateSandboxRequest& request, const std::string& destination,
                             const std::string& gateway, const std::string& device) {
    v1::Route* route = request.add_routes();
    route->set_destination(destination);
    route->set_gateway(gateway);
    route->set_device(device);
    return route;
  }

  static absl::Status Configure(const v1::CreateSandboxRequest& request) {
    return ConfigureNetwork(request.interfaces(), request.routes());
  }

  bool private_namespace_ = false;
  UniqueFd socket_;
};

TEST_F(NetworkTest, ConfiguresTheLinkWithTheMac) {
  ASSERT_NO_FATAL_FAILURE(AddVeth("veth-a", kMacA, "peer-a", kPeerMacA));
  const int index = Link("veth-a").index;
  ASSERT_NE(index, 0);
  ASSERT_FALSE(Link("lo").up);

  v1::CreateSandboxRequest request;
  // Upper case: MACs compare as bytes.
  AddInterface(request, "eth0", "02:00:00:00:0A:01", 1400, {"10.88.0.5/16", "10.99.0.7/24"});
  AddRoute(request, "0.0.0.0/0", "10.88.0.1", "eth0");
  AddRoute(request, "10.88.0.0/16", "", "eth0");  // the kernel's own subnet route: skipped
  AddRoute(request, "192.168.50.0/24", "", "eth0");
  AddRoute(request, "172.16.0.0/12", "10.99.0.1", "eth0");
  AddRoute(request, "203.0.113.9/32", "", "eth0");
  absl::Status status = Configure(request);
  ASSERT_TRUE(status.ok()) << status;

  EXPECT_EQ(Link("veth-a").index, 0) << "not renamed";
  LinkState eth0 = Link("eth0");
  EXPECT_EQ(eth0.index, index);
  EXPECT_EQ(eth0.mac, kMacA);
  EXPECT_TRUE(eth0.up);
  EXPECT_EQ(eth0.mtu, 1400);
  EXPECT_EQ(Address("eth0"), "10.88.0.5 255.255.0.0");
  EXPECT_EQ(Address("eth0:1"), "10.99.0.7 255.255.255.0");
  EXPECT_TRUE(Link("lo").up);
  LinkState peer = Link("peer-a");
  EXPECT_NE(peer.index, 0);
  EXPECT_EQ(peer.mtu, 1500) << "the peer was touched";
  EXPECT_EQ(Address("peer-a"), "");
  EXPECT_THAT(Routes(),
              UnorderedElementsAre("10.88.0.0/16 dev eth0", "10.99.0.0/24 dev eth0",
                                   "0.0.0.0/0 via 10.88.0.1 dev eth0", "192.168.50.0/24 dev eth0",
                                   "172.16.0.0/12 via 10.99.0.1 dev eth0",
                                   "203.0.113.9/32 dev eth0 (host)"));
}

TEST_F(NetworkTest, KeepsTheNameAndMtuWhenNotAskedToChangeThem) {
  ASSERT_NO_FATAL_FAILURE(AddVeth("eth0", kMacA, "peer-a", kPeerMacA));
  v1::CreateSandboxRequest request;
  AddInterface(request, "eth0", kMacA, 0, {"10.88.0.5/16"});
  absl::Status status = Configure(request);
  ASSERT_TRUE(status.ok()) << status;
  LinkState eth0 = Link("eth0");
  EXPECT_TRUE(eth0.up);
  EXPECT_EQ(eth0.mtu, 1500);
  EXPECT_EQ(Address("eth0"), "10.88.0.5 255.255.0.0");
  EXPECT_THAT(Routes(), UnorderedElementsAre("10.88.0.0/16 dev eth0"));
}

TEST_F(NetworkTest, TwoDevicesSwapNames) {
  ASSERT_NO_FATAL_FAILURE(AddVeth("eth0", kMacA, "peer-a", kPeerMacA));
  ASSERT_NO_FATAL_FAILURE(AddVeth("eth1", kMacB, "peer-b", kPeerMacB));
  v1::CreateSandboxRequest request;
  AddInterface(request, "eth0", kMacB, 0, {"10.1.0.2/24"});
  AddInterface(request, "eth1", kMacA, 9000, {"10.2.0.2/24"});
  absl::Status status = Configure(request);
  ASSERT_TRUE(status.ok()) << status;
  LinkState eth0 = Link("eth0");
  LinkState eth1 = Link("eth1");
  EXPECT_EQ(eth0.mac, kMacB);
  EXPECT_EQ(eth1.mac, kMacA);
  EXPECT_TRUE(eth0.up);
  EXPECT_TRUE(eth1.up);
  EXPECT_EQ(eth0.mtu, 1500);
  EXPECT_EQ(eth1.mtu, 9000);
  EXPECT_EQ(Address("eth0"), "10.1.0.2 255.255.255.0");
  EXPECT_EQ(Address("eth1"), "10.2.0.2 255.255.255.0");
  EXPECT_THAT(LinkNames(), UnorderedElementsAre("lo", "eth0", "eth1", "peer-a", "peer-b"));
}

// Calico's pod network: a /32 address, a gateway that is only reachable through an on-link route,
// which the CNI result may list after the default route.
TEST_F(NetworkTest, GatewayReachedThroughAnOnLinkRoute) {
  ASSERT_NO_FATAL_FAILURE(AddVeth("veth-a", kMacA, "peer-a", kPeerMacA));
  v1::CreateSandboxRequest request;
  AddInterface(request, "eth0", kMacA, 0, {"10.1.2.3/32"});
  AddRoute(request, "0.0.0.0/0", "169.254.1.1", "eth0");
  AddRoute(request, "169.254.1.1/32", "", "eth0");
  absl::Status status = Configure(request);
  ASSERT_TRUE(status.ok()) << status;
  EXPECT_EQ(Address("eth0"), "10.1.2.3 255.255.255.255");
  EXPECT_THAT(Routes(), UnorderedElementsAre("169.254.1.1/32 dev eth0 (host)",
                                             "0.0.0.0/0 via 169.254.1.1 dev eth0"));
}

TEST_F(NetworkTest, UnknownMacIsNotFoundAndChangesNothing) {
  ASSERT_NO_FATAL_FAILURE(AddVeth("veth-a", kMacA, "peer-a", kPeerMacA));
  v1::CreateSandboxRequest request;
  AddInterface(request, "eth0", kMacA, 0, {"10.88.0.5/16"});
  AddInterface(request, "eth1", "02:00:00:00:ff:ff", 0, {"10.89.0.5/16"});
  absl::Status status = Configure(request);
  EXPECT_EQ(status.code(), absl::StatusCode::kNotFound) << status;
  EXPECT_THAT(std::string(status.message()),
              AllOf(StartsWith("interface eth1: no link has mac 02:00:00:00:ff:ff"),
                    HasSubstr("veth-a 02:00:00:00:0a:01"), HasSubstr("peer-a 02:00:00:00:0a:02")));
  EXPECT_FALSE(Link("veth-a").up);
  EXPECT_EQ(Link("eth0").index, 0);
  EXPECT_FALSE(Link("lo").up);
}

TEST_F(NetworkTest, InvalidRequestsAreRefusedBeforeAnyChange) {
  ASSERT_NO_FATAL_FAILURE(AddVeth("veth-a", kMacA, "peer-a", kPeerMacA));
  using Edit = std::function<void(v1::CreateSandboxRequest&)>;
  const std::vector<std::pair<Edit, std::string>> cases = {
      {[](auto& r) { r.mutable_interfaces(0)->set_mac("02:00:00:00:0a"); },
       "interface eth0: bad mac '02:00:00:00:0a'"},
      {[](auto& r) { r.mutable_interfaces(0)->set_mac("02-00-00-00-0a-01"); },
       "bad mac '02-00-00-00-0a-01'"},
      {[](auto& r) { r.mutable_interfaces(0)->set_mac("0g:00:00:00:0a:01"); },
       "bad mac '0g:00:00:00:0a:01'"},
      {[](auto& r) { r.mutable_interfaces(0)->set_mac("01:00:5e:00:00:01"); },
       "bad mac '01:00:5e:00:00:01'"},
      {[](auto& r) { r.mutable_interfaces(0)->set_name(""); }, "interfaces[0]: bad name ''"},
      {[](auto& r) { r.mutable_interfaces(0)->set_name("sixteen-bytes-xx"); },
       "interfaces[0]: bad name 'sixteen-bytes-xx'"},
      {[](auto& r) { r.mutable_interfaces(0)->set_name("eth0:1"); }, "bad name 'eth0:1'"},
      {[](auto& r) { r.mutable_interfaces(0)->set_mtu(67); }, "interface eth0: mtu 67"},
      {[](auto& r) { r.mutable_interfaces(0)->set_addresses(0, "10.88.0.5/33"); },
       "interface eth0: bad address '10.88.0.5/33'"},
      {[](auto& r) { r.mutable_interfaces(0)->set_addresses(0, "10.88.0.5"); },
       "bad address '10.88.0.5'"},
      {[](auto& r) { r.mutable_interfaces(0)->set_addresses(0, "10.88.0.256/16"); },
       "bad address '10.88.0.256/16'"},
      {[](auto& r) { r.mutable_interfaces(0)->set_addresses(0, "10.88.0.5/-1"); },
       "bad address '10.88.0.5/-1'"},
      {[](auto& r) { r.mutable_interfaces(0)->set_addresses(0, "0.0.0.0/8"); },
       "bad address '0.0.0.0/8'"},
      {[](auto& r) { r.mutable_interfaces(0)->set_addresses(0, "224.0.0.1/4"); },
       "bad address '224.0.0.1/4'"},
      {[](auto& r) {
         r.mutable_interfaces(0)->set_name("fifteen-bytes-x");
         r.mutable_routes(0)->set_device("fifteen-bytes-x");
       },
       "needs label 'fifteen-bytes-x:1'"},
      {[](auto& r) { AddInterface(r, "eth1", kMacA, 0, {}); },
       "interfaces eth0 and eth1 both have mac 02:00:00:00:0a:01"},
      {[](auto& r) { AddInterface(r, "eth0", kMacB, 0, {}); },
       "interfaces[0] and [1] are both named 'eth0'"},
      {[](auto& r) { r.mutable_routes(0)->set_destination("10.0.0.0/40"); },
       "routes[0] (route 10.0.0.0/40 via 10.88.0.1 dev eth0): bad destination '10.0.0.0/40'"},
      {[](auto& r) { r.mutable_routes(0)->set_destination("default"); },
       "bad destination 'default'"},
      {[](auto& r) { r.mutable_routes(0)->set_destination("10.1.0.0/8"); },
       "destination '10.1.0.0/8' has bits set beyond its prefix"},
      {[](auto& r) { r.mutable_routes(0)->set_gateway("10.88.0"); }, "bad gateway '10.88.0'"},
      {[](auto& r) { r.mutable_routes(0)->set_device("eth9"); },
       "device 'eth9' is not one of the interfaces"},
      {[](auto& r) { r.mutable_routes(0)->set_device(""); },
       "device '' is not one of the interfaces"},
  };
  for (const auto& [edit, message] : cases) {
    v1::CreateSandboxRequest request;
    AddInterface(request, "eth0", kMacA, 1400, {"10.88.0.5/16", "10.99.0.7/24"});
    AddRoute(request, "10.0.0.0/8", "10.88.0.1", "eth0");
    ASSERT_TRUE(ValidateNetwork(request.interfaces(), request.routes()).ok());
    edit(request);
    absl::Status status = Configure(request);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
    EXPECT_THAT(std::string(status.message()), HasSubstr(message));
    EXPECT_EQ(ValidateNetwork(request.interfaces(), request.routes()), status);
  }
  EXPECT_FALSE(Link("lo").up);
  LinkState link = Link("veth-a");
  EXPECT_NE(link.index, 0);
  EXPECT_FALSE(link.up);
  EXPECT_EQ(link.mtu, 1500);
  EXPECT_EQ(Address("veth-a"), "");
  EXPECT_THAT(Routes(), ::testing::IsEmpty());
}

TEST_F(NetworkTest, KernelErrorsNameTheInterfaceOrRoute) {
  ASSERT_NO_FATAL_FAILURE(AddVeth("veth-a", kMacA, "peer-a", kPeerMacA));
  {
    // The name belongs to a device that is not in the request.
    v1::CreateSandboxRequest request;
    AddInterface(request, "peer-a", kMacA, 0, {});
    absl::Status status = Configure(request);
    EXPECT_EQ(status.code(), absl::StatusCode::kAlreadyExists) << status;
    EXPECT_THAT(std::string(status.message()),
                StartsWith("interface peer-a: SIOCSIFNAME kapsel-tmp0 -> peer-a: "));
  }
  {
    v1::CreateSandboxRequest request;
    AddInterface(request, "eth0", kMacA, 0, {"10.88.0.5/16"});
    AddRoute(request, "0.0.0.0/0", "192.0.2.1", "eth0");  // not reachable from eth0
    absl::Status status = Configure(request);
    EXPECT_FALSE(status.ok());
    EXPECT_THAT(std::string(status.message()),
                StartsWith("route 0.0.0.0/0 via 192.0.2.1 dev eth0: SIOCADDRT: "));
  }
}

TEST_F(NetworkTest, CreateSandboxConfiguresTheNetworkAsInit) {
  ASSERT_NO_FATAL_FAILURE(AddVeth("veth-a", kMacA, "peer-a", kPeerMacA));
  ASSERT_EQ(sethostname("before", 6), 0);
  ProcessTable processes;
  AgentOptions options;
  options.is_init = true;
  AgentService service(options, &processes);
  auto hostname = [] {
    char name[HOST_NAME_MAX + 1] = "";
    gethostname(name, sizeof(name));
    return std::string(name);
  };

  v1::CreateSandboxRequest request;
  request.set_hostname("kapsel-net-test");
  AddInterface(request, "eth0", kMacA, 0, {"10.88.0.5/16"});
  AddRoute(request, "0.0.0.0/0", "10.88.0.1", "eth9");
  absl::StatusOr<v1::Empty> created = service.CreateSandbox(request);
  EXPECT_EQ(created.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(created.status().message()), StartsWith("CreateSandbox: routes[0] "));
  EXPECT_EQ(hostname(), "before") << "a bad network request changed the hostname";

  request.mutable_interfaces(0)->set_mac(kMacB);
  request.mutable_routes(0)->set_device("eth0");
  created = service.CreateSandbox(request);
  EXPECT_EQ(created.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(created.status().message()),
              StartsWith("CreateSandbox: interface eth0: no link has mac 02:00:00:00:0b:01"));

  request.mutable_interfaces(0)->set_mac(kMacA);
  created = service.CreateSandbox(request);
  ASSERT_TRUE(created.ok()) << created.status();
  EXPECT_EQ(hostname(), "kapsel-net-test");
  EXPECT_TRUE(Link("eth0").up);
  EXPECT_TRUE(Link("lo").up);
  EXPECT_EQ(Address("eth0"), "10.88.0.5 255.255.0.0");
  EXPECT_THAT(Routes(),
              UnorderedElementsAre("10.88.0.0/16 dev eth0", "0.0.0.0/0 via 10.88.0.1 dev eth0"));
}

TEST_F(NetworkTest, CreateSandboxOutsideAVmRefusesANetwork) {
  ASSERT_NO_FATAL_FAILURE(AddVeth("veth-a", kMacA, "peer-a", kPeerMacA));
  ProcessTable processes;
  AgentService service(AgentOptions(), &processes);
  v1::CreateSandboxRequest request;
  AddInterface(request, "eth0", kMacA, 0, {"10.88.0.5/16"});
  absl::StatusOr<v1::Empty> created = service.CreateSandbox(request);
  EXPECT_EQ(created.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(created.status().message()), HasSubstr("network"));
  EXPECT_FALSE(Link("veth-a").up);
  EXPECT_EQ(Address("veth-a"), "");

  request.clear_interfaces();
  AddRoute(request, "0.0.0.0/0", "10.88.0.1", "eth0");
  EXPECT_EQ(service.CreateSandbox(request).status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(service.CreateSandbox(v1::CreateSandboxRequest()).ok());
}

}  // namespace
}  // namespace kapsel::agent
