// virtio-blk (virtio 1.x section 5.2) over a raw image file: one request queue, synchronous
// pread/pwrite/fdatasync on the event-loop thread.
#ifndef KAPSEL_VMM_DEVICES_VIRTIO_BLOCK_BLOCK_DEVICE_H_
#define KAPSEL_VMM_DEVICES_VIRTIO_BLOCK_BLOCK_DEVICE_H_

#include <linux/virtio_blk.h>

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "common/unique_fd.h"
#include "vmm/devices/virtio/chain_io.h"
#include "vmm/devices/virtio/virtio_device.h"

namespace kapsel::vmm::virtio {

struct BlockDeviceOptions {
  // A regular file or block device holding the raw disk image.
  std::string path;
  // Open O_RDONLY and offer VIRTIO_BLK_F_RO; writes fail with VIRTIO_BLK_S_IOERR.
  bool read_only = false;
  // What VIRTIO_BLK_T_GET_ID returns (at most 20 bytes; the guest sees it as
  // /sys/block/vdX/serial). Empty: "<st_dev>-<st_ino>" of the image, in hex.
  std::string serial;
};

class BlockDevice : public VirtioDevice {
 public:
  static constexpr uint16_t kQueueSize = 256;
  static constexpr uint64_t kSectorSize = 512;

  // Opens options.path. Errors name the path.
  static absl::StatusOr<std::unique_ptr<BlockDevice>> Open(const BlockDeviceOptions& options);
  // Serves an already open image (for example a memfd). `serial` as in BlockDeviceOptions.
  static absl::StatusOr<std::unique_ptr<BlockDevice>> FromFd(UniqueFd fd, bool read_only,
                                                             std::string serial);

  // Disk size in 512-byte sectors (the image size rounded down).
  uint64_t capacity() const { return capacity_; }
  bool read_only() const { return read_only_; }

  std::string name() const override { return "virtio-blk"; }
  uint32_t device_type() const override;
  uint64_t device_features() const override;
  uint16_t num_queues() const override { return 1; }
  uint16_t max_queue_size(uint16_t) const override { return kQueueSize; }
  void ReadConfig(uint64_t offset, absl::Span<uint8_t> data) override;
  void WriteConfig(uint64_t offset, absl::Span<const uint8_t> data) override;
  absl::Status Activate(ActivateContext context) override;
  void ProcessQueue(uint16_t index) override;
  void Reset() override;

 private:
  BlockDevice(UniqueFd fd, bool read_only, uint64_t capacity, std::string serial);

  // Serves one well-formed chain; returns the used length (data written + status byte).
  uint32_t HandleRequest(const DescriptorChain& chain);
  // Executes the request whose header starts `reader`; returns a VIRTIO_BLK_S_* status.
  uint8_t Execute(ChainReader& reader, ChainWriter& writer);
  uint8_t ReadSectors(uint64_t sector, ChainWriter& writer);
  uint8_t WriteSectors(uint64_t sector, ChainReader& reader);
  // True if [sector, sector + bytes / 512) lies on the disk and bytes is a whole number of
  // sectors.
  bool ValidRange(uint64_t sector, uint64_t bytes) const;

  const UniqueFd fd_;
  const bool read_only_;
  const uint64_t capacity_;
  const std::string serial_;  // at most VIRTIO_BLK_ID_BYTES
  virtio_blk_config config_{};

  const GuestMemory* memory_ = nullptr;  // while active
  Queue* queue_ = nullptr;
};

}  // namespace kapsel::vmm::virtio

#endif  // KAPSEL_VMM_DEVICES_VIRTIO_BLOCK_BLOCK_DEVICE_H_
