#include "vmm/devices/virtio/block/block_device.h"

#include <fcntl.h>
#include <linux/virtio_config.h>
#include <linux/virtio_ids.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <utility>

#include "absl/strings/str_format.h"
#include "common/status.h"
#include "vmm/devices/virtio/ring_abi.h"

namespace kapsel::vmm::virtio {
namespace {

constexpr uint64_t Bit(unsigned bit) { return uint64_t{1} << bit; }

// Largest number of data segments per request we advertise (VIRTIO_BLK_F_SEG_MAX): a direct
// chain also needs the header and status descriptors.
constexpr uint32_t kSegMax = BlockDevice::kQueueSize - 2;

struct RequestHeader {
  uint32_t type;
  uint32_t reserved;
  uint64_t sector;
};
static_assert(sizeof(RequestHeader) == sizeof(virtio_blk_outhdr));
static_assert(sizeof(RequestHeader) == 16);

}  // namespace

absl::StatusOr<std::unique_ptr<BlockDevice>> BlockDevice::Open(const BlockDeviceOptions& options) {
  UniqueFd fd(open(options.path.c_str(), (options.read_only ? O_RDONLY : O_RDWR) | O_CLOEXEC));
  if (!fd) return ErrnoError(absl::StrFormat("virtio-blk: opening %s", options.path));
  absl::StatusOr<std::unique_ptr<BlockDevice>> device =
      FromFd(std::move(fd), options.read_only, options.serial);
  if (!device.ok()) return Annotate(device.status(), options.path);
  return device;
}

absl::StatusOr<std::unique_ptr<BlockDevice>> BlockDevice::FromFd(UniqueFd fd, bool read_only,
                                                                 std::string serial) {
  struct stat st;
  if (fstat(fd.get(), &st) != 0) return ErrnoError("virtio-blk: fstat");
  if (!S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode)) {
    return absl::InvalidArgumentError("virtio-blk: not a regular file or block device");
  }
  const off_t size = lseek(fd.get(), 0, SEEK_END);
  if (size < 0) return ErrnoError("virtio-blk: finding the image size");
  if (serial.size() > VIRTIO_BLK_ID_BYTES) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "virtio-blk: serial \"%s\" is longer than %d bytes", serial, VIRTIO_BLK_ID_BYTES));
  }
  if (serial.empty()) {
    serial = absl::StrFormat("%x-%x", st.st_dev, st.st_ino).substr(0, VIRTIO_BLK_ID_BYTES);
  }
  const uint64_t capacity = static_cast<uint64_t>(size) / kSectorSize;
  return std::unique_ptr<BlockDevice>(
      new BlockDevice(std::move(fd), read_only, capacity, std::move(serial)));
}

BlockDevice::BlockDevice(UniqueFd fd, bool read_only, uint64_t capacity, std::string serial)
    : fd_(std::move(fd)), read_only_(read_only), capacity_(capacity), serial_(std::move(serial)) {
  config_.capacity = capacity_;
  config_.seg_max = kSegMax;
}

uint32_t BlockDevice::device_type() const { return VIRTIO_ID_BLOCK; }

uint64_t BlockDevice::device_features() const {
  uint64_t features = Bit(VIRTIO_F_VERSION_1) | Bit(kVirtioRingFIndirectDesc) |
                      Bit(kVirtioRingFEventIdx) | Bit(VIRTIO_BLK_F_FLUSH) |
                      Bit(VIRTIO_BLK_F_SEG_MAX);
  if (read_only_) features |= Bit(VIRTIO_BLK_F_RO);
  return features;
}

void BlockDevice::ReadConfig(uint64_t offset, absl::Span<uint8_t> data) {
  ReadConfigImage(
      absl::Span<const uint8_t>(reinterpret_cast<const uint8_t*>(&config_), sizeof(config_)),
      offset, data);
}

void BlockDevice::WriteConfig(uint64_t, absl::Span<const uint8_t>) {
  // Only `wce` is writable, and only with VIRTIO_BLK_F_CONFIG_WCE, which we do not offer.
}

absl::Status BlockDevice::Activate(ActivateContext context) {
  if (context.queues.size() != 1) {
    return absl::InvalidArgumentError("virtio-blk: expected exactly one queue");
  }
  memory_ = context.memory;
  queue_ = &context.queues[0];
  return absl::OkStatus();
}

void BlockDevice::Reset() {
  memory_ = nullptr;
  queue_ = nullptr;
}

void BlockDevice::ProcessQueue(uint16_t index) {
  if (index != 0 || queue_ == nullptr || !queue_->active()) return;
  while (true) {
    absl::StatusOr<std::optional<DescriptorChain>> popped = queue_->Pop();
    if (!popped.ok() || !popped->has_value()) return;  // broken (the transport reports it) or empty
    const DescriptorChain& chain = **popped;
    const uint32_t used = chain.status.ok() ? HandleRequest(chain) : 0;
    if (!queue_->AddUsed(chain.head, used).ok()) return;
  }
}

uint32_t BlockDevice::HandleRequest(const DescriptorChain& chain) {
  // The status is the last writable byte; without one the request cannot even fail visibly.
  if (chain.writable_bytes == 0) return 0;
  ChainReader reader(*memory_, chain);
  ChainWriter writer(*memory_, chain);
  writer.Limit(chain.writable_bytes - 1);
  const uint8_t status = Execute(reader, writer);

  ChainWriter status_writer(*memory_, chain);
  status_writer.Skip(chain.writable_bytes - 1);
  if (!status_writer.WriteObj(status).ok()) return 0;  // cannot happen: the chain was validated
  // writable_bytes <= kMaxChainBytes, so this fits.
  return static_cast<uint32_t>(writer.written() + 1);
}

uint8_t BlockDevice::Execute(ChainReader& reader, ChainWriter& writer) {
  absl::StatusOr<RequestHeader> header = reader.ReadObj<RequestHeader>();
  if (!header.ok()) return VIRTIO_BLK_S_IOERR;
  switch (header->type) {
    case VIRTIO_BLK_T_IN:
      return ReadSectors(header->sector, writer);
    case VIRTIO_BLK_T_OUT:
      return WriteSectors(header->sector, reader);
    case VIRTIO_BLK_T_FLUSH:
      return fdatasync(fd_.get()) == 0 ? VIRTIO_BLK_S_OK : VIRTIO_BLK_S_IOERR;
    case VIRTIO_BLK_T_GET_ID: {
      // NUL-padded to 20 bytes, and truncated to what the driver gave us.
      uint8_t id[VIRTIO_BLK_ID_BYTES] = {};
      std::copy(serial_.begin(), serial_.end(), id);
      const uint64_t n = std::min<uint64_t>(sizeof(id), writer.remaining());
      return writer.Write(absl::MakeConstSpan(id, n)).ok() ? VIRTIO_BLK_S_OK : VIRTIO_BLK_S_IOERR;
    }
    default:
      return VIRTIO_BLK_S_UNSUPP;
  }
}

bool BlockDevice::ValidRange(uint64_t sector, uint64_t bytes) const {
  if (bytes % kSectorSize != 0) return false;
  return sector <= capacity_ && bytes / kSectorSize <= capacity_ - sector;
}

uint8_t BlockDevice::ReadSectors(uint64_t sector, ChainWriter& writer) {
  if (!ValidRange(sector, writer.remaining())) return VIRTIO_BLK_S_IOERR;
  // sector * 512 cannot overflow: sector <= capacity_ = file size / 512.
  uint64_t offset = sector * kSectorSize;
  while (writer.remaining() > 0) {
    absl::StatusOr<absl::Span<uint8_t>> piece = writer.Peek(writer.remaining());
    if (!piece.ok() || piece->empty()) return VIRTIO_BLK_S_IOERR;
    const ssize_t n = pread(fd_.get(), piece->data(), piece->size(), static_cast<off_t>(offset));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return VIRTIO_BLK_S_IOERR;  // an error, or the image shrank under us
    writer.Skip(static_cast<uint64_t>(n));
    offset += static_cast<uint64_t>(n);
  }
  return VIRTIO_BLK_S_OK;
}

uint8_t BlockDevice::WriteSectors(uint64_t sector, ChainReader& reader) {
  if (read_only_) return VIRTIO_BLK_S_IOERR;
  if (!ValidRange(sector, reader.remaining())) return VIRTIO_BLK_S_IOERR;
  uint64_t offset = sector * kSectorSize;
  while (reader.remaining() > 0) {
    absl::StatusOr<absl::Span<const uint8_t>> piece = reader.Peek(reader.remaining());
    if (!piece.ok() || piece->empty()) return VIRTIO_BLK_S_IOERR;
    const ssize_t n = pwrite(fd_.get(), piece->data(), piece->size(), static_cast<off_t>(offset));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return VIRTIO_BLK_S_IOERR;
    reader.Skip(static_cast<uint64_t>(n));
    offset += static_cast<uint64_t>(n);
  }
  return VIRTIO_BLK_S_OK;
}

}  // namespace kapsel::vmm::virtio
