#include "tests/vmm/net/offload_test_util.h"

#include <arpa/inet.h>
#include <linux/ethtool.h>
#include <linux/if_packet.h>
#include <linux/sockios.h>
#include <net/if.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/status.h"

namespace kapsel::vmm::virtio::testing {
namespace {

constexpr uint16_t kEtherTypeIpv4 = 0x0800;
constexpr uint8_t kProtoTcp = 6;

void Put16(uint8_t* p, uint16_t v) {
  p[0] = static_cast<uint8_t>(v >> 8);
  p[1] = static_cast<uint8_t>(v);
}
void Put32(uint8_t* p, uint32_t v) {
  Put16(p, static_cast<uint16_t>(v >> 16));
  Put16(p + 2, static_cast<uint16_t>(v));
}
uint16_t Get16(const uint8_t* p) { return static_cast<uint16_t>(p[0] << 8 | p[1]); }
uint32_t Get32(const uint8_t* p) { return uint32_t{Get16(p)} << 16 | Get16(p + 2); }

// The ones' complement sum of big-endian 16-bit words, not folded.
uint32_t Sum(const uint8_t* data, size_t len, uint32_t sum = 0) {
  for (size_t i = 0; i + 1 < len; i += 2) sum += Get16(data + i);
  if (len % 2 == 1) sum += uint32_t{data[len - 1]} << 8;
  return sum;
}
uint16_t Fold(uint32_t sum) {
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return static_cast<uint16_t>(sum);
}
uint32_t PseudoHeaderSum(uint32_t src, uint32_t dst, uint16_t tcp_length) {
  return (src >> 16) + (src & 0xffff) + (dst >> 16) + (dst & 0xffff) + kProtoTcp + tcp_length;
}

absl::StatusOr<UniqueFd> ControlSocket() {
  UniqueFd fd(socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  if (!fd) return ErrnoError("socket(AF_INET)");
  return fd;
}

absl::Status Ethtool(const std::string& name, void* request) {
  ASSIGN_OR_RETURN(UniqueFd ctl, ControlSocket());
  ifreq ifr{};
  std::strncpy(ifr.ifr_name, name.c_str(), IFNAMSIZ - 1);
  ifr.ifr_data = static_cast<char*>(request);
  if (ioctl(ctl.get(), SIOCETHTOOL, &ifr) != 0) return ErrnoError("SIOCETHTOOL on " + name);
  return absl::OkStatus();
}

}  // namespace

KapselVirtioNetHdr TcpOffloadHeader(uint16_t gso_size) {
  KapselVirtioNetHdr h{};
  h.flags = kVirtioNetHdrFNeedsCsum;
  h.csum_start = kTcpCsumStart;
  h.csum_offset = kTcpCsumOffset;
  if (gso_size != 0) {
    h.gso_type = kVirtioNetHdrGsoTcpv4;
    h.gso_size = gso_size;
    h.hdr_len = kTcpHeadersLen;
  }
  return h;
}

std::vector<uint8_t> TcpPayload(const TcpFrameSpec& spec) {
  std::vector<uint8_t> payload(spec.payload_size);
  for (size_t i = 0; i < payload.size(); ++i) payload[i] = static_cast<uint8_t>(spec.seed + i);
  return payload;
}

std::vector<uint8_t> TcpFrame(const TcpFrameSpec& spec) {
  std::vector<uint8_t> frame(kTcpHeadersLen);
  uint8_t* eth = frame.data();
  std::memcpy(eth, spec.dst_mac, 6);
  std::memcpy(eth + 6, spec.src_mac, 6);
  Put16(eth + 12, kEtherTypeIpv4);
  const uint16_t tcp_length = static_cast<uint16_t>(20 + spec.payload_size);
  uint8_t* ip = eth + 14;
  ip[0] = 0x45;
  Put16(ip + 2, static_cast<uint16_t>(20 + tcp_length));
  Put16(ip + 4, 0x1234);  // id
  Put16(ip + 6, 0x4000);  // DF
  ip[8] = 64;
  ip[9] = kProtoTcp;
  Put32(ip + 12, spec.src_ip);
  Put32(ip + 16, spec.dst_ip);
  Put16(ip + 10, static_cast<uint16_t>(~Fold(Sum(ip, 20))));
  uint8_t* tcp = ip + 20;
  Put16(tcp, spec.src_port);
  Put16(tcp + 2, spec.dst_port);
  Put32(tcp + 4, spec.seq);
  Put32(tcp + 8, 1);  // ack
  tcp[12] = 5 << 4;
  tcp[13] = 0x18;  // ACK | PSH
  Put16(tcp + 14, 0xffff);
  const std::vector<uint8_t> payload = TcpPayload(spec);
  frame.insert(frame.end(), payload.begin(), payload.end());
  tcp = frame.data() + kTcpCsumStart;
  const uint32_t pseudo = PseudoHeaderSum(spec.src_ip, spec.dst_ip, tcp_length);
  if (spec.full_checksum) {
    Put16(tcp + kTcpCsumOffset, static_cast<uint16_t>(~Fold(Sum(tcp, tcp_length, pseudo))));
  } else {
    Put16(tcp + kTcpCsumOffset, Fold(pseudo));
  }
  return frame;
}

std::optional<TcpSegment> ParseTcpFrame(const std::vector<uint8_t>& frame) {
  if (frame.size() < kTcpHeadersLen || Get16(frame.data() + 12) != kEtherTypeIpv4) {
    return std::nullopt;
  }
  const uint8_t* ip = frame.data() + 14;
  if (ip[0] != 0x45 || ip[9] != kProtoTcp || (Get16(ip + 6) & 0x3fff) != 0) return std::nullopt;
  TcpSegment segment;
  segment.ip_total_length = Get16(ip + 2);
  if (segment.ip_total_length < 40 || 14u + segment.ip_total_length > frame.size()) {
    return std::nullopt;
  }
  segment.ip_checksum_ok = Fold(Sum(ip, 20)) == 0xffff;
  const uint8_t* tcp = ip + 20;
  const size_t tcp_header = static_cast<size_t>(tcp[12] >> 4) * 4;
  const uint16_t tcp_length = static_cast<uint16_t>(segment.ip_total_length - 20);
  if (tcp_header < 20 || tcp_header > tcp_length) return std::nullopt;
  segment.seq = Get32(tcp + 4);
  const uint32_t pseudo = PseudoHeaderSum(Get32(ip + 12), Get32(ip + 16), tcp_length);
  segment.tcp_checksum_ok = Fold(Sum(tcp, tcp_length, pseudo)) == 0xffff;
  segment.payload.assign(tcp + tcp_header, tcp + tcp_length);
  return segment;
}

absl::StatusOr<Bridge> Bridge::Create(const std::string& name,
                                      const std::vector<std::string>& ports) {
  ASSIGN_OR_RETURN(UniqueFd ctl, ControlSocket());
  if (ioctl(ctl.get(), SIOCBRADDBR, name.c_str()) != 0) return ErrnoError("SIOCBRADDBR " + name);
  Bridge bridge(name);
  for (const std::string& port : ports) {
    ifreq ifr{};
    std::strncpy(ifr.ifr_name, name.c_str(), IFNAMSIZ - 1);
    ifr.ifr_ifindex = static_cast<int>(if_nametoindex(port.c_str()));
    if (ifr.ifr_ifindex == 0) return ErrnoError("if_nametoindex " + port);
    if (ioctl(ctl.get(), SIOCBRADDIF, &ifr) != 0) {
      return ErrnoError(absl::StrCat("SIOCBRADDIF ", port, " to ", name));
    }
  }
  RETURN_IF_ERROR(BringUp(name));
  return bridge;
}

Bridge::~Bridge() {
  if (name_.empty()) return;
  absl::StatusOr<UniqueFd> ctl = ControlSocket();
  if (!ctl.ok()) return;
  ifreq ifr{};
  std::strncpy(ifr.ifr_name, name_.c_str(), IFNAMSIZ - 1);
  if (ioctl(ctl->get(), SIOCGIFFLAGS, &ifr) == 0) {
    ifr.ifr_flags &= ~IFF_UP;
    (void)ioctl(ctl->get(), SIOCSIFFLAGS, &ifr);
  }
  (void)ioctl(ctl->get(), SIOCBRDELBR, name_.c_str());
}

absl::Status BringUp(const std::string& name) {
  ASSIGN_OR_RETURN(UniqueFd ctl, ControlSocket());
  ifreq ifr{};
  std::strncpy(ifr.ifr_name, name.c_str(), IFNAMSIZ - 1);
  if (ioctl(ctl.get(), SIOCGIFFLAGS, &ifr) != 0) return ErrnoError("SIOCGIFFLAGS " + name);
  ifr.ifr_flags |= IFF_UP | IFF_NOARP;
  if (ioctl(ctl.get(), SIOCSIFFLAGS, &ifr) != 0) return ErrnoError("SIOCSIFFLAGS " + name);
  return absl::OkStatus();
}

absl::StatusOr<VnetHdrSender> VnetHdrSender::Create(const std::string& name) {
  // Protocol 0: the socket receives nothing.
  UniqueFd fd(socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, 0));
  if (!fd) return ErrnoError("socket(AF_PACKET)");
  const int one = 1;
  if (setsockopt(fd.get(), SOL_PACKET, PACKET_VNET_HDR, &one, sizeof(one)) != 0) {
    return ErrnoError("setsockopt(PACKET_VNET_HDR)");
  }
  const int index = static_cast<int>(if_nametoindex(name.c_str()));
  if (index == 0) return ErrnoError("if_nametoindex " + name);
  return VnetHdrSender(std::move(fd), index);
}

absl::Status VnetHdrSender::Send(const KapselVirtioNetHdr& header,
                                 const std::vector<uint8_t>& frame) {
  // PACKET_VNET_HDR speaks struct virtio_net_hdr: ours without num_buffers.
  constexpr size_t kHeader = 10;
  std::vector<uint8_t> bytes(kHeader);
  std::memcpy(bytes.data(), &header, kHeader);
  bytes.insert(bytes.end(), frame.begin(), frame.end());
  sockaddr_ll addr{};
  addr.sll_family = AF_PACKET;
  addr.sll_protocol = htons(Get16(frame.data() + 12));
  addr.sll_ifindex = ifindex_;
  const ssize_t n = sendto(fd_.get(), bytes.data(), bytes.size(), 0,
                           reinterpret_cast<const sockaddr*>(&addr), sizeof(addr));
  if (n < 0) return ErrnoError("sendto on the PACKET_VNET_HDR socket");
  if (static_cast<size_t>(n) != bytes.size()) {
    return absl::InternalError(absl::StrCat("sent ", n, " of ", bytes.size(), " bytes"));
  }
  return absl::OkStatus();
}

absl::StatusOr<bool> FeatureActive(const std::string& name, const std::string& feature) {
  // How many feature names there are: ethtool_sset_info and one count after it.
  std::vector<uint8_t> sset(sizeof(ethtool_sset_info) + sizeof(uint32_t));
  ethtool_sset_info info{};
  info.cmd = ETHTOOL_GSSET_INFO;
  info.sset_mask = uint64_t{1} << ETH_SS_FEATURES;
  std::memcpy(sset.data(), &info, sizeof(info));
  RETURN_IF_ERROR(Ethtool(name, sset.data()));
  std::memcpy(&info, sset.data(), sizeof(info));
  uint32_t count = 0;
  std::memcpy(&count, sset.data() + sizeof(info), sizeof(count));
  if (info.sset_mask == 0 || count == 0) {
    return absl::InternalError(name + " reports no feature names");
  }
  // Their names, in bit order.
  std::vector<uint8_t> strings(sizeof(ethtool_gstrings) + size_t{count} * ETH_GSTRING_LEN);
  ethtool_gstrings gstrings{};
  gstrings.cmd = ETHTOOL_GSTRINGS;
  gstrings.string_set = ETH_SS_FEATURES;
  std::memcpy(strings.data(), &gstrings, sizeof(gstrings));
  RETURN_IF_ERROR(Ethtool(name, strings.data()));
  int bit = -1;
  for (uint32_t i = 0; i < count; ++i) {
    const char* s = reinterpret_cast<const char*>(strings.data() + sizeof(ethtool_gstrings) +
                                                  size_t{i} * ETH_GSTRING_LEN);
    if (feature == std::string(s, strnlen(s, ETH_GSTRING_LEN))) bit = static_cast<int>(i);
  }
  if (bit < 0) return absl::NotFoundError("no netdev feature named " + feature);
  // The bits.
  const uint32_t blocks = (count + 31) / 32;
  std::vector<uint8_t> features(sizeof(ethtool_gfeatures) +
                                blocks * sizeof(ethtool_get_features_block));
  ethtool_gfeatures gfeatures{};
  gfeatures.cmd = ETHTOOL_GFEATURES;
  gfeatures.size = blocks;
  std::memcpy(features.data(), &gfeatures, sizeof(gfeatures));
  RETURN_IF_ERROR(Ethtool(name, features.data()));
  ethtool_get_features_block block;
  std::memcpy(&block, features.data() + sizeof(ethtool_gfeatures) + (bit / 32) * sizeof(block),
              sizeof(block));
  return (block.active & (uint32_t{1} << (bit % 32))) != 0;
}

std::vector<TcpSegment> ReadTcpSegments(int fd, size_t want_payload, int timeout_ms) {
  std::vector<TcpSegment> segments;
  size_t got = 0;
  const absl::Time deadline = absl::Now() + absl::Milliseconds(timeout_ms);
  std::vector<uint8_t> buffer(70000);
  while (got < want_payload) {
    const int64_t left = absl::ToInt64Milliseconds(deadline - absl::Now());
    if (left <= 0) break;
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, static_cast<int>(left)) != 1) break;
    const ssize_t n = read(fd, buffer.data(), buffer.size());
    if (n <= 0) continue;
    std::optional<TcpSegment> segment =
        ParseTcpFrame(std::vector<uint8_t>(buffer.begin(), buffer.begin() + n));
    if (!segment.has_value()) continue;
    got += segment->payload.size();
    segments.push_back(*std::move(segment));
  }
  return segments;
}

}  // namespace kapsel::vmm::virtio::testing
