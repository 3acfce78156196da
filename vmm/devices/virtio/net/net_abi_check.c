/* Compile-time check that net_abi.h matches the kernel's uapi header. */
#include <linux/virtio_net.h>
#include <stddef.h>

#include "vmm/devices/virtio/net/net_abi.h"

_Static_assert(kVirtioNetFCsum == VIRTIO_NET_F_CSUM, "VIRTIO_NET_F_CSUM");
_Static_assert(kVirtioNetFGuestCsum == VIRTIO_NET_F_GUEST_CSUM, "VIRTIO_NET_F_GUEST_CSUM");
_Static_assert(kVirtioNetFMtu == VIRTIO_NET_F_MTU, "VIRTIO_NET_F_MTU");
_Static_assert(kVirtioNetFMac == VIRTIO_NET_F_MAC, "VIRTIO_NET_F_MAC");
_Static_assert(kVirtioNetFGuestTso4 == VIRTIO_NET_F_GUEST_TSO4, "VIRTIO_NET_F_GUEST_TSO4");
_Static_assert(kVirtioNetFGuestTso6 == VIRTIO_NET_F_GUEST_TSO6, "VIRTIO_NET_F_GUEST_TSO6");
_Static_assert(kVirtioNetFGuestEcn == VIRTIO_NET_F_GUEST_ECN, "VIRTIO_NET_F_GUEST_ECN");
_Static_assert(kVirtioNetFGuestUfo == VIRTIO_NET_F_GUEST_UFO, "VIRTIO_NET_F_GUEST_UFO");
_Static_assert(kVirtioNetFHostTso4 == VIRTIO_NET_F_HOST_TSO4, "VIRTIO_NET_F_HOST_TSO4");
_Static_assert(kVirtioNetFHostTso6 == VIRTIO_NET_F_HOST_TSO6, "VIRTIO_NET_F_HOST_TSO6");
_Static_assert(kVirtioNetFHostEcn == VIRTIO_NET_F_HOST_ECN, "VIRTIO_NET_F_HOST_ECN");
_Static_assert(kVirtioNetFHostUfo == VIRTIO_NET_F_HOST_UFO, "VIRTIO_NET_F_HOST_UFO");
_Static_assert(kVirtioNetFMrgRxbuf == VIRTIO_NET_F_MRG_RXBUF, "VIRTIO_NET_F_MRG_RXBUF");
_Static_assert(kVirtioNetFStatus == VIRTIO_NET_F_STATUS, "VIRTIO_NET_F_STATUS");
_Static_assert(kVirtioNetSLinkUp == VIRTIO_NET_S_LINK_UP, "VIRTIO_NET_S_LINK_UP");
_Static_assert(kVirtioNetHdrFNeedsCsum == VIRTIO_NET_HDR_F_NEEDS_CSUM,
               "VIRTIO_NET_HDR_F_NEEDS_CSUM");
_Static_assert(kVirtioNetHdrFDataValid == VIRTIO_NET_HDR_F_DATA_VALID,
               "VIRTIO_NET_HDR_F_DATA_VALID");
_Static_assert(kVirtioNetHdrGsoNone == VIRTIO_NET_HDR_GSO_NONE, "VIRTIO_NET_HDR_GSO_NONE");
_Static_assert(kVirtioNetHdrGsoTcpv4 == VIRTIO_NET_HDR_GSO_TCPV4, "VIRTIO_NET_HDR_GSO_TCPV4");
_Static_assert(kVirtioNetHdrGsoUdp == VIRTIO_NET_HDR_GSO_UDP, "VIRTIO_NET_HDR_GSO_UDP");
_Static_assert(kVirtioNetHdrGsoTcpv6 == VIRTIO_NET_HDR_GSO_TCPV6, "VIRTIO_NET_HDR_GSO_TCPV6");
_Static_assert(kVirtioNetHdrGsoEcn == VIRTIO_NET_HDR_GSO_ECN, "VIRTIO_NET_HDR_GSO_ECN");

#define SAME_FIELD(ours, theirs, field)                                                      \
  _Static_assert(offsetof(struct ours, field) == offsetof(struct theirs, field) &&           \
                     sizeof(((struct ours*)0)->field) == sizeof(((struct theirs*)0)->field), \
                 #theirs "." #field)

_Static_assert(sizeof(struct KapselVirtioNetHdr) == sizeof(struct virtio_net_hdr_v1),
               "struct virtio_net_hdr_v1");
SAME_FIELD(KapselVirtioNetHdr, virtio_net_hdr_v1, flags);
SAME_FIELD(KapselVirtioNetHdr, virtio_net_hdr_v1, gso_type);
SAME_FIELD(KapselVirtioNetHdr, virtio_net_hdr_v1, hdr_len);
SAME_FIELD(KapselVirtioNetHdr, virtio_net_hdr_v1, gso_size);
SAME_FIELD(KapselVirtioNetHdr, virtio_net_hdr_v1, csum_start);
SAME_FIELD(KapselVirtioNetHdr, virtio_net_hdr_v1, csum_offset);
SAME_FIELD(KapselVirtioNetHdr, virtio_net_hdr_v1, num_buffers);
SAME_FIELD(KapselVirtioNetConfig, virtio_net_config, mac);
SAME_FIELD(KapselVirtioNetConfig, virtio_net_config, status);
SAME_FIELD(KapselVirtioNetConfig, virtio_net_config, max_virtqueue_pairs);
SAME_FIELD(KapselVirtioNetConfig, virtio_net_config, mtu);
