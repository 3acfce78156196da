/* The virtio-net ABI we use, from <linux/virtio_net.h>, which cannot be included from C++ (struct
 * virtio_net_ctrl_hdr has a field named `class`); net_abi_check.c, a C file, checks at compile
 * time that the two agree. This header is therefore valid C and C++. */
#ifndef KAPSEL_VMM_DEVICES_VIRTIO_NET_NET_ABI_H_
#define KAPSEL_VMM_DEVICES_VIRTIO_NET_NET_ABI_H_

#include <stdint.h>

#ifdef __cplusplus
namespace kapsel::vmm::virtio {
#endif

enum KapselVirtioNetAbi {
  /* Feature bits. */
  kVirtioNetFCsum = 0,
  kVirtioNetFGuestCsum = 1,
  kVirtioNetFMtu = 3,
  kVirtioNetFMac = 5,
  kVirtioNetFGuestTso4 = 7,
  kVirtioNetFGuestTso6 = 8,
  kVirtioNetFGuestEcn = 9,
  kVirtioNetFGuestUfo = 10,
  kVirtioNetFHostTso4 = 11,
  kVirtioNetFHostTso6 = 12,
  kVirtioNetFHostEcn = 13,
  kVirtioNetFHostUfo = 14,
  kVirtioNetFMrgRxbuf = 15,
  kVirtioNetFStatus = 16,
  /* Config status bits. */
  kVirtioNetSLinkUp = 1,
  /* Header flags. */
  kVirtioNetHdrFNeedsCsum = 1,
  kVirtioNetHdrFDataValid = 2,
  /* Header gso_type. */
  kVirtioNetHdrGsoNone = 0,
  kVirtioNetHdrGsoTcpv4 = 1,
  kVirtioNetHdrGsoUdp = 3,
  kVirtioNetHdrGsoTcpv6 = 4,
  kVirtioNetHdrGsoEcn = 0x80,
};

/* struct virtio_net_hdr_v1 (little-endian fields): on every rx and tx buffer, and on the tap. */
struct KapselVirtioNetHdr {
  uint8_t flags;
  uint8_t gso_type;
  uint16_t hdr_len;
  uint16_t gso_size;
  uint16_t csum_start;
  uint16_t csum_offset;
  uint16_t num_buffers;
};

/* The leading fields of struct virtio_net_config (the rest needs features we do not offer). */
struct KapselVirtioNetConfig {
  uint8_t mac[6];
  uint16_t status;
  uint16_t max_virtqueue_pairs;
  uint16_t mtu;
};

#ifdef __cplusplus
}  // namespace kapsel::vmm::virtio
#endif

#endif /* KAPSEL_VMM_DEVICES_VIRTIO_NET_NET_ABI_H_ */
