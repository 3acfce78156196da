/* Constants of the split virtqueue ABI. They are those of <linux/virtio_ring.h>, which cannot be
 * included from C++ (its vring_init() converts from void* implicitly); ring_abi_check.c, a C file,
 * checks at compile time that the two agree. This header is therefore valid C and C++. */
#ifndef KAPSEL_VMM_DEVICES_VIRTIO_RING_ABI_H_
#define KAPSEL_VMM_DEVICES_VIRTIO_RING_ABI_H_

#ifdef __cplusplus
namespace kapsel::vmm::virtio {
#endif

enum KapselVringAbi {
  /* Descriptor flags. */
  kVringDescFNext = 1,
  kVringDescFWrite = 2,
  kVringDescFIndirect = 4,
  /* Available ring flags. */
  kVringAvailFNoInterrupt = 1,
  /* Used ring flags. */
  kVringUsedFNoNotify = 1,
  /* Feature bits. */
  kVirtioRingFIndirectDesc = 28,
  kVirtioRingFEventIdx = 29,
};

#ifdef __cplusplus
}  // namespace kapsel::vmm::virtio
#endif

#endif /* KAPSEL_VMM_DEVICES_VIRTIO_RING_ABI_H_ */
