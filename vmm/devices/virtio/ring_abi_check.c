/* Compile-time check that ring_abi.h matches the kernel's uapi header. */
#include <linux/virtio_ring.h>

#include "vmm/devices/virtio/ring_abi.h"

_Static_assert(kVringDescFNext == VRING_DESC_F_NEXT, "VRING_DESC_F_NEXT");
_Static_assert(kVringDescFWrite == VRING_DESC_F_WRITE, "VRING_DESC_F_WRITE");
_Static_assert(kVringDescFIndirect == VRING_DESC_F_INDIRECT, "VRING_DESC_F_INDIRECT");
_Static_assert(kVringAvailFNoInterrupt == VRING_AVAIL_F_NO_INTERRUPT, "VRING_AVAIL_F_NO_INTERRUPT");
_Static_assert(kVringUsedFNoNotify == VRING_USED_F_NO_NOTIFY, "VRING_USED_F_NO_NOTIFY");
_Static_assert(kVirtioRingFIndirectDesc == VIRTIO_RING_F_INDIRECT_DESC,
               "VIRTIO_RING_F_INDIRECT_DESC");
_Static_assert(kVirtioRingFEventIdx == VIRTIO_RING_F_EVENT_IDX, "VIRTIO_RING_F_EVENT_IDX");
_Static_assert(sizeof(struct vring_desc) == 16, "struct vring_desc");
_Static_assert(sizeof(struct vring_used_elem) == 8, "struct vring_used_elem");
