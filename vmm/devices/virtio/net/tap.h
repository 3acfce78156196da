// The host side of a virtio-net device: a tap file descriptor opened with
// IFF_TAP | IFF_NO_PI | IFF_VNET_HDR, so that every frame read from or written to it carries the
// same 12-byte struct virtio_net_hdr_v1 the guest uses. Offloads start off; the device turns on
// what its driver accepted (SetTapOffload).
#ifndef KAPSEL_VMM_DEVICES_VIRTIO_NET_TAP_H_
#define KAPSEL_VMM_DEVICES_VIRTIO_NET_TAP_H_

#include <cstddef>
#include <string>

#include "absl/status/statusor.h"
#include "common/unique_fd.h"
#include "vmm/devices/virtio/net/net_abi.h"

namespace kapsel::vmm::virtio {

// The header on every frame, on the tap and on the queues.
inline constexpr size_t kNetHeaderSize = sizeof(KapselVirtioNetHdr);
static_assert(kNetHeaderSize == 12);

struct Tap {
  UniqueFd fd;
  std::string name;  // the interface's name, from TUNGETIFF
};

// Takes over an already open tap fd (inherited from the caller): checks with TUNGETIFF that it is
// a tap with IFF_NO_PI and IFF_VNET_HDR, then sets the header size to 12 bytes, turns every offload
// off (TUNSETOFFLOAD 0) and makes it O_NONBLOCK and close-on-exec. The fd is closed on error.
absl::StatusOr<Tap> AdoptTap(UniqueFd fd);

// Opens /dev/net/tun and attaches to the tap `name` (created if it does not exist, gone when the
// fd is closed unless it was made persistent), then configures it as AdoptTap does. Needs
// CAP_NET_ADMIN in the current network namespace, or an existing tap owned by the caller.
absl::StatusOr<Tap> OpenTap(const std::string& name);

// TUNSETOFFLOAD: which checksum and segmentation offloads (TUN_F_*) the frames read from the tap
// may carry. `name` is for the error message.
absl::Status SetTapOffload(int fd, const std::string& name, unsigned flags);

}  // namespace kapsel::vmm::virtio

#endif  // KAPSEL_VMM_DEVICES_VIRTIO_NET_TAP_H_
