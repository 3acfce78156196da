/* Compile-time check that net_abi.h matches the kernel's uapi header. */
#include <linux/virtio_net.h>
#include <stddef.h>

#include "vmm/devices/virtio/net/net_abi.h"

_Static_assert(kVirtioNetFMtu == VIRTIO_NET_F_MTU, "VIRTIO_NET_F_MTU");
_Static_assert(kVirtioNetFMac == VIRTIO_NET_F_MAC, "VIRTIO_NET_F_MAC");
_Static_assert(kVirtioNetFStatus == VIRTIO_NET_F_STATUS, "VIRTIO_NET_F_STATUS");
_Static_assert(kVirtioNetSLinkUp == VIRTIO_NET_S_LINK_UP, "VIRTIO_NET_S_LINK_UP");
_Static_assert(kVirtioNetHdrGsoNone == VIRTIO_NET_HDR_GSO_NONE, "VIRTIO_NET_HDR_GSO_NONE");

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
