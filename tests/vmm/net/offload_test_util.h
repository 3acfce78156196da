// Helpers for the virtio-net offload tests: TCP/IPv4 frames as a guest or the host stack would
// send them (full or partial checksums) and their checks on the receiving side, a Linux bridge
// between the device's tap and a plain peer tap (the host stack then segments and checksums what
// the peer cannot take), a packet socket that sends frames with a virtio_net_hdr into a tap (as
// the host stack hands it GSO frames), and a tap's active netdev features as ethtool reports them.
#ifndef KAPSEL_TESTS_VMM_NET_OFFLOAD_TEST_UTIL_H_
#define KAPSEL_TESTS_VMM_NET_OFFLOAD_TEST_UTIL_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/unique_fd.h"
#include "vmm/devices/virtio/net/net_abi.h"

namespace kapsel::vmm::virtio::testing {

// Offsets in a frame built by TcpFrame: Ethernet, IPv4 without options, TCP without options.
inline constexpr uint16_t kTcpCsumStart = 14 + 20;  // the TCP header
inline constexpr uint16_t kTcpCsumOffset = 16;      // its checksum field
inline constexpr uint16_t kTcpHeadersLen = 14 + 20 + 20;

struct TcpFrameSpec {
  uint8_t dst_mac[6] = {0x02, 0, 0, 0, 0, 0x01};
  uint8_t src_mac[6] = {0x02, 0, 0, 0, 0, 0x02};
  uint32_t src_ip = 0x0a000002;  // host byte order: 10.0.0.2
  uint32_t dst_ip = 0x0a000001;
  uint16_t src_port = 40000;
  uint16_t dst_port = 5201;
  uint32_t seq = 1000;
  size_t payload_size = 100;
  uint8_t seed = 0;  // payload byte i is (seed + i) & 0xff
  // False: the TCP checksum field holds the pseudo-header sum only, as a sender that leaves the
  // checksum to the device (VIRTIO_NET_HDR_F_NEEDS_CSUM) or segmentation to it (GSO) writes it.
  bool full_checksum = true;
};

std::vector<uint8_t> TcpFrame(const TcpFrameSpec& spec);
// The payload TcpFrame puts into a frame.
std::vector<uint8_t> TcpPayload(const TcpFrameSpec& spec);

// The virtio-net header of a TcpFrame (full_checksum = false) whose checksum is left to the
// receiver (NEEDS_CSUM) and, with a gso_size, its segmentation too (GSO TCPv4).
KapselVirtioNetHdr TcpOffloadHeader(uint16_t gso_size);

// One TCP/IPv4 segment as received. Empty optional for anything else (other EtherTypes, IPv4
// with options or fragments, other protocols).
struct TcpSegment {
  uint32_t seq = 0;
  uint16_t ip_total_length = 0;
  bool ip_checksum_ok = false;
  bool tcp_checksum_ok = false;  // the checksum over pseudo-header, header and payload
  std::vector<uint8_t> payload;
};
std::optional<TcpSegment> ParseTcpFrame(const std::vector<uint8_t>& frame);

// Creates bridge `name` (no STP: ports forward at once), adds the interfaces, brings it up; the
// destructor takes it down and deletes it. The interfaces must exist and be up.
class Bridge {
 public:
  static absl::StatusOr<Bridge> Create(const std::string& name,
                                       const std::vector<std::string>& ports);
  Bridge(Bridge&& other) noexcept : name_(std::move(other.name_)) { other.name_.clear(); }
  Bridge& operator=(Bridge&&) = delete;
  ~Bridge();

 private:
  explicit Bridge(std::string name) : name_(std::move(name)) {}
  std::string name_;
};

// Sets IFF_UP (and IFF_NOARP) on an interface.
absl::Status BringUp(const std::string& name);

// Sends frames into interface `name` with a leading 10-byte struct virtio_net_hdr (a packet
// socket with PACKET_VNET_HDR): for a tap, as if the host stack routed a (GSO) frame to it.
class VnetHdrSender {
 public:
  static absl::StatusOr<VnetHdrSender> Create(const std::string& name);
  absl::Status Send(const KapselVirtioNetHdr& header, const std::vector<uint8_t>& frame);

 private:
  VnetHdrSender(UniqueFd fd, int ifindex) : fd_(std::move(fd)), ifindex_(ifindex) {}
  UniqueFd fd_;
  int ifindex_;
};

// Whether netdev feature `feature` (an ethtool name such as "tx-tcp-segmentation") is active on
// interface `name`: ETHTOOL_GSTRINGS for the names, ETHTOOL_GFEATURES for the bits.
absl::StatusOr<bool> FeatureActive(const std::string& name, const std::string& feature);

// Reads frames from a tap fd without a vnet header (a bridge peer) until `want_payload` TCP
// payload bytes arrived in TCP/IPv4 segments or `timeout_ms` passed; other frames are skipped.
std::vector<TcpSegment> ReadTcpSegments(int fd, size_t want_payload, int timeout_ms);

}  // namespace kapsel::vmm::virtio::testing

#endif  // KAPSEL_TESTS_VMM_NET_OFFLOAD_TEST_UTIL_H_
