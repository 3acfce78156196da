#include "vmm/devices/virtio/net/net_offload.h"

#include <endian.h>
#include <linux/if_tun.h>

#include "absl/strings/str_cat.h"

namespace kapsel::vmm::virtio {
namespace {

bool Has(uint64_t features, int bit) { return (features & (uint64_t{1} << bit)) != 0; }

// Whether a gso_type is allowed under the given TSO offloads (ECN and UDP never are).
bool GsoAllowed(uint8_t gso_type, bool tso4, bool tso6) {
  switch (gso_type) {
    case kVirtioNetHdrGsoNone:
      return true;
    case kVirtioNetHdrGsoTcpv4:
      return tso4;
    case kVirtioNetHdrGsoTcpv6:
      return tso6;
    default:
      return false;
  }
}

}  // namespace

NetOffloads OffloadsFromFeatures(uint64_t acked) {
  NetOffloads o;
  o.tx_csum = Has(acked, kVirtioNetFCsum);
  o.tx_tso4 = o.tx_csum && Has(acked, kVirtioNetFHostTso4);
  o.tx_tso6 = o.tx_csum && Has(acked, kVirtioNetFHostTso6);
  o.rx_csum = Has(acked, kVirtioNetFGuestCsum);
  o.rx_tso4 = o.rx_csum && Has(acked, kVirtioNetFGuestTso4);
  o.rx_tso6 = o.rx_csum && Has(acked, kVirtioNetFGuestTso6);
  return o;
}

unsigned TunOffloadFlags(const NetOffloads& offloads) {
  // The tap refuses TSO flags without TUN_F_CSUM, and so would a guest without GUEST_CSUM.
  if (!offloads.rx_csum) return 0;
  unsigned flags = TUN_F_CSUM;
  if (offloads.rx_tso4) flags |= TUN_F_TSO4;
  if (offloads.rx_tso6) flags |= TUN_F_TSO6;
  return flags;
}

absl::Status CheckTxHeader(const KapselVirtioNetHdr& header, const NetOffloads& offloads) {
  if ((header.flags & ~kVirtioNetHdrFNeedsCsum) != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("tx header flags 0x", absl::Hex(header.flags), " (only NEEDS_CSUM is valid)"));
  }
  if ((header.flags & kVirtioNetHdrFNeedsCsum) != 0 && !offloads.tx_csum) {
    return absl::InvalidArgumentError("tx header NEEDS_CSUM without VIRTIO_NET_F_CSUM");
  }
  if (!GsoAllowed(header.gso_type, offloads.tx_tso4, offloads.tx_tso6)) {
    return absl::InvalidArgumentError(
        absl::StrCat("tx header gso_type 0x", absl::Hex(header.gso_type), " not negotiated"));
  }
  return absl::OkStatus();
}

absl::Status PrepareRxHeader(const NetOffloads& offloads, KapselVirtioNetHdr* header) {
  const uint8_t known = kVirtioNetHdrFNeedsCsum | kVirtioNetHdrFDataValid;
  if ((header->flags & ~known) != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("rx header flags 0x", absl::Hex(header->flags), " from the tap"));
  }
  if (!offloads.rx_csum && (header->flags & kVirtioNetHdrFNeedsCsum) != 0) {
    return absl::InvalidArgumentError("rx header NEEDS_CSUM without VIRTIO_NET_F_GUEST_CSUM");
  }
  if (!GsoAllowed(header->gso_type, offloads.rx_tso4, offloads.rx_tso6)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "rx header gso_type 0x", absl::Hex(header->gso_type), " the driver did not accept"));
  }
  // Without GUEST_CSUM the header is all zeros: DATA_VALID (the host checked the checksum) is a
  // hint the guest did not ask for.
  if (!offloads.rx_csum) *header = KapselVirtioNetHdr{};
  header->num_buffers = htole16(1);
  return absl::OkStatus();
}

}  // namespace kapsel::vmm::virtio
