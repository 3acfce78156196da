// Checksum and segmentation offloads of the virtio-net device: which ones it offers, what the
// driver's acknowledged features turn on, the matching TUNSETOFFLOAD flags of the tap, and the
// checks on the struct virtio_net_hdr of every frame, both ways.
//
// Offered (virtio 1.2, 5.1.3), as Firecracker does minus UFO:
//   CSUM, HOST_TSO4, HOST_TSO6   the guest may send partially checksummed frames and TCP frames of
//                                up to 64 KiB for the host to segment: its header goes to the tap,
//                                and the host kernel checksums or segments only where needed.
//   GUEST_CSUM, GUEST_TSO4/6     the guest accepts such frames: mirrored onto the tap with
//                                TUNSETOFFLOAD (TUN_F_CSUM, TUN_F_TSO4, TUN_F_TSO6), so the host
//                                stack hands the tap unsegmented, unchecksummed TCP frames only
//                                when the guest said it takes them.
// Not offered:
//   GUEST_UFO, HOST_UFO          Linux removed UDP fragmentation offload (4.14): a Linux host
//                                never produces it (TUN_F_UFO is accepted and ignored) and a
//                                Linux guest never sends it, so it would be an untested path.
//   GUEST_ECN, HOST_ECN          TCP segments with ECN are then segmented in software, which is
//                                correct; not worth another header combination.
#ifndef KAPSEL_VMM_DEVICES_VIRTIO_NET_NET_OFFLOAD_H_
#define KAPSEL_VMM_DEVICES_VIRTIO_NET_NET_OFFLOAD_H_

#include <cstdint>

#include "absl/status/status.h"
#include "vmm/devices/virtio/net/net_abi.h"

namespace kapsel::vmm::virtio {

inline constexpr uint64_t kNetOffloadFeatures =
    (uint64_t{1} << kVirtioNetFCsum) | (uint64_t{1} << kVirtioNetFHostTso4) |
    (uint64_t{1} << kVirtioNetFHostTso6) | (uint64_t{1} << kVirtioNetFGuestCsum) |
    (uint64_t{1} << kVirtioNetFGuestTso4) | (uint64_t{1} << kVirtioNetFGuestTso6);

// The offloads in effect for one activation. A feature whose prerequisite the driver did not
// acknowledge (TSO without the matching CSUM, which the specification forbids) is off.
struct NetOffloads {
  bool tx_csum = false;  // the guest may send NEEDS_CSUM (CSUM)
  bool tx_tso4 = false;  // ... and gso_type TCPV4 (HOST_TSO4)
  bool tx_tso6 = false;  // ... and gso_type TCPV6 (HOST_TSO6)
  bool rx_csum = false;  // the guest takes NEEDS_CSUM and DATA_VALID (GUEST_CSUM)
  bool rx_tso4 = false;  // ... and gso_type TCPV4 (GUEST_TSO4)
  bool rx_tso6 = false;  // ... and gso_type TCPV6 (GUEST_TSO6)

  friend bool operator==(const NetOffloads&, const NetOffloads&) = default;
};

NetOffloads OffloadsFromFeatures(uint64_t acked_features);

// The TUNSETOFFLOAD argument: what the tap may hand the guest. 0 without rx_csum.
unsigned TunOffloadFlags(const NetOffloads& offloads);

// A guest's tx header: InvalidArgument (saying why) if it asks for something not negotiated:
// flags other than NEEDS_CSUM, NEEDS_CSUM without CSUM, a gso_type other than NONE or a
// negotiated TCPV4/TCPV6 (ECN and UDP included). Whether the offsets and sizes make sense for the
// frame is left to the tap, which refuses a bad header (the write fails with EINVAL).
absl::Status CheckTxHeader(const KapselVirtioNetHdr& header, const NetOffloads& offloads);

// A header read from the tap, before it goes to the guest: InvalidArgument if it carries
// something the guest did not accept (a frame the tap queued under an earlier activation's
// offloads); the frame is then dropped. Without rx_csum the header becomes all zeros (the
// specification wants flags 0 then; the tap may have set DATA_VALID). Sets num_buffers to 1 (with
// MRG_RXBUF the rx path then sets the number of buffers the frame took).
absl::Status PrepareRxHeader(const NetOffloads& offloads, KapselVirtioNetHdr* header);

}  // namespace kapsel::vmm::virtio

#endif  // KAPSEL_VMM_DEVICES_VIRTIO_NET_NET_OFFLOAD_H_
