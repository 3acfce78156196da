// PodNetwork on this machine's kernel: a "pod" network namespace with a veth whose peer is in an
// "outside" namespace (what the CNI bridge plugin makes), moved to a tap as the shim does for a VM.
#include "shim/pod_network.h"

#include <poll.h>
#include <unistd.h>

#include <array>
#include <string>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/support/subprocess.h"

namespace kapsel::shim {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::UnorderedElementsAre;

// Runs a shell command; its stdout, and its exit status in *status.
std::string Sh(const std::string& command, int* status = nullptr) {
  absl::StatusOr<testing::ProcessResult> r =
      testing::RunProcess({"/bin/sh", "-c", command}, absl::Seconds(60));
  if (status != nullptr) *status = r.ok() ? r->exit_code : -1;
  return r.ok() ? r->out : "";
}

class PodNetworkTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string id = absl::StrCat(getpid());
    pod_ = "kpn-pod-" + id;
    out_ = "kpn-out-" + id;
    int status = 0;
    Sh(absl::StrCat("set -e; ip netns add ", pod_, "; ip netns add ", out_, "; ip -n ", out_,
                    " link add peer0 type veth peer name eth0 netns ", pod_, "; ip -n ", out_,
                    " addr add 10.99.0.1/24 dev peer0; ip -n ", out_, " link set peer0 up; ip -n ",
                    pod_, " addr add 10.99.0.2/24 dev eth0; ip -n ", pod_,
                    " link set eth0 mtu 1400 up; ip -n ", pod_, " link set lo up; ip -n ", pod_,
                    " route add default via 10.99.0.1 2>&1"),
       &status);
    ASSERT_EQ(status, 0) << "setting up the namespaces failed";
    mac_ = std::string(absl::StripAsciiWhitespace(
        Sh(absl::StrCat("ip netns exec ", pod_, " cat /sys/class/net/eth0/address"))));
    ASSERT_EQ(mac_.size(), 17u);
  }
  void TearDown() override {
    Sh(absl::StrCat("ip netns del ", pod_, " 2>&1; ip netns del ", out_, " 2>&1"));
  }
  std::string PodPath() const { return "/run/netns/" + pod_; }
  std::string InPod(const std::string& command) {
    return Sh(absl::StrCat("ip netns exec ", pod_, " ", command, " 2>&1"));
  }
  uint64_t PeerCounter(const std::string& name) {
    uint64_t value = 0;
    EXPECT_TRUE(absl::SimpleAtoi(
        absl::StripAsciiWhitespace(Sh(
            absl::StrCat("ip netns exec ", out_, " cat /sys/class/net/peer0/statistics/", name))),
        &value));
    return value;
  }

  std::string pod_, out_, mac_;
};

TEST_F(PodNetworkTest, FindsTheInterfaceAddressesAndRoutes) {
  absl::StatusOr<std::unique_ptr<PodNetwork>> network = PodNetwork::Attach(PodPath());
  ASSERT_TRUE(network.ok()) << network.status();
  ASSERT_EQ((*network)->interfaces().size(), 1u);
  const PodInterface& eth0 = (*network)->interfaces()[0];
  EXPECT_EQ(eth0.name, "eth0");
  EXPECT_EQ(eth0.mac, mac_);
  EXPECT_EQ(eth0.mtu, 1400u);
  EXPECT_THAT(eth0.addresses, UnorderedElementsAre("10.99.0.2/24"));
  std::vector<std::string> routes;
  for (const agent::v1::Route& r : (*network)->routes()) {
    routes.push_back(absl::StrCat(r.destination(), " via '", r.gateway(), "' dev ", r.device()));
  }
  EXPECT_THAT(routes, UnorderedElementsAre("0.0.0.0/0 via '10.99.0.1' dev eth0",
                                           "10.99.0.0/24 via '' dev eth0"));
  EXPECT_THAT((*network)->VmmNetArgs(), UnorderedElementsAre(absl::StrCat(
                                            "fd=", eth0.tap.get(), ",mac=", mac_, ",mtu=1400")));
  agent::v1::CreateSandboxRequest request;
  (*network)->AddTo(&request);
  ASSERT_EQ(request.interfaces_size(), 1);
  EXPECT_EQ(request.interfaces(0).mac(), mac_);
  EXPECT_EQ(request.routes_size(), 2);
  // The tap lives in the pod's namespace, with the pod interface's MTU.
  EXPECT_THAT(InPod("ip link show " + eth0.tap_name), HasSubstr("mtu 1400"));
}

TEST_F(PodNetworkTest, FramesGoBothWaysBetweenThePodInterfaceAndTheTap) {
  absl::StatusOr<std::unique_ptr<PodNetwork>> network = PodNetwork::Attach(PodPath());
  ASSERT_TRUE(network.ok()) << network.status();
  const PodInterface& eth0 = (*network)->interfaces()[0];

  // Outside → pod: the ARP request for the pod's address reaches the tap, and the pod's own stack
  // never answers it (the ping fails: nothing behind the tap replies).
  int status = 0;
  Sh(absl::StrCat("ip netns exec ", out_, " busybox ping -c 1 -W 1 10.99.0.2 >/dev/null 2>&1"),
     &status);
  EXPECT_NE(status, 0) << "the pod's stack answered: the redirect is missing";
  bool saw_arp = false;
  for (int i = 0; i < 10 && !saw_arp; ++i) {
    pollfd pfd = {eth0.tap.get(), POLLIN, 0};
    if (poll(&pfd, 1, 1000) != 1) break;
    std::array<uint8_t, 2048> frame;
    const ssize_t n = read(eth0.tap.get(), frame.data(), frame.size());
    constexpr size_t kHdr = 10;  // struct virtio_net_hdr: the tap's default IFF_VNET_HDR size
    if (n < static_cast<ssize_t>(kHdr + 42)) continue;
    const uint8_t* eth = frame.data() + kHdr;
    const bool arp = eth[12] == 0x08 && eth[13] == 0x06;
    const uint8_t* target_ip = eth + 14 + 24;
    saw_arp =
        arp && target_ip[0] == 10 && target_ip[1] == 99 && target_ip[2] == 0 && target_ip[3] == 2;
  }
  EXPECT_TRUE(saw_arp) << "no ARP request for 10.99.0.2 came out of the tap";

  // Tap → outside: a frame written into the tap leaves through the pod's veth.
  const uint64_t before = PeerCounter("rx_packets");
  std::array<uint8_t, 10 + 60> frame = {};
  uint8_t* eth = frame.data() + 10;
  for (int i = 0; i < 6; ++i) eth[i] = 0xff;  // broadcast
  eth[6] = 0x02;                              // a locally administered source
  eth[12] = 0x88;                             // an experimental EtherType (0x88b5)
  eth[13] = 0xb5;
  ASSERT_EQ(write(eth0.tap.get(), frame.data(), frame.size()), static_cast<ssize_t>(frame.size()));
  uint64_t after = before;
  for (int i = 0; i < 50 && after == before; ++i) {
    usleep(20000);
    after = PeerCounter("rx_packets");
  }
  EXPECT_GT(after, before) << "the frame written into the tap did not reach the peer";
}

TEST_F(PodNetworkTest, DetachRemovesTheRedirectsAndTheTapGoesWithItsFd) {
  std::string tap;
  {
    absl::StatusOr<std::unique_ptr<PodNetwork>> network = PodNetwork::Attach(PodPath());
    ASSERT_TRUE(network.ok()) << network.status();
    tap = (*network)->interfaces()[0].tap_name;
    EXPECT_THAT(InPod("tc filter show dev eth0 ingress"), HasSubstr("mirred"));
    EXPECT_THAT(InPod("tc filter show dev " + tap + " ingress"), HasSubstr("mirred"));
  }
  EXPECT_THAT(InPod("tc qdisc show dev eth0"), Not(HasSubstr("ingress")));
  EXPECT_THAT(InPod("ip -o link show"), Not(HasSubstr(tap)));
  // The pod's interface works on its own again.
  int status = 0;
  Sh(absl::StrCat("ip netns exec ", out_, " busybox ping -c 1 -W 2 10.99.0.2 >/dev/null 2>&1"),
     &status);
  EXPECT_EQ(status, 0);
}

TEST_F(PodNetworkTest, ANamespaceWithOnlyLoopbackIsEmpty) {
  Sh(absl::StrCat("ip -n ", pod_, " link del eth0"));
  absl::StatusOr<std::unique_ptr<PodNetwork>> network = PodNetwork::Attach(PodPath());
  ASSERT_TRUE(network.ok()) << network.status();
  EXPECT_TRUE((*network)->empty());
  EXPECT_TRUE((*network)->routes().empty());
}

TEST_F(PodNetworkTest, AnInterfaceWithARedirectAlreadyIsAnErrorAndNothingIsLeft) {
  InPod("tc qdisc add dev eth0 ingress");
  absl::StatusOr<std::unique_ptr<PodNetwork>> network = PodNetwork::Attach(PodPath());
  ASSERT_FALSE(network.ok());
  EXPECT_THAT(std::string(network.status().message()), HasSubstr("redirect eth0 to tap"));
  EXPECT_THAT(std::string(network.status().message()), HasSubstr(PodPath()));
  EXPECT_THAT(InPod("ip -o link show"), Not(HasSubstr("_kapsel")));
}

TEST(PodNetworkPathTest, AMissingNamespaceIsAnErrorNamingIt) {
  absl::StatusOr<std::unique_ptr<PodNetwork>> network =
      PodNetwork::Attach("/run/netns/kapsel-no-such-netns");
  ASSERT_FALSE(network.ok());
  EXPECT_THAT(std::string(network.status().message()), HasSubstr("kapsel-no-such-netns"));
}

TEST(PodNetworkPathTest, TheOwnNamespaceIsRecognized) {
  EXPECT_TRUE(IsOwnNetworkNamespace("/proc/self/ns/net"));
  EXPECT_TRUE(IsOwnNetworkNamespace(absl::StrCat("/proc/", getpid(), "/ns/net")));
  EXPECT_FALSE(IsOwnNetworkNamespace("/proc/self/ns/mnt"));
  EXPECT_FALSE(IsOwnNetworkNamespace("/run/netns/kapsel-no-such-netns"));
}

}  // namespace
}  // namespace kapsel::shim
