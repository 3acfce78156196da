// Fuzzes the split virtqueue walker, the virtio-mmio transport and the virtio-blk request path.
//
// The input is a header (queue parameters, features, indexes), a payload and optionally raw
// register writes at the end. In raw mode the payload is copied into guest RAM from address 0,
// where the descriptor table, the rings and the buffers live. In structured mode (which reaches
// the block I/O paths far sooner) it is a list of compact descriptor records, each also placing a
// virtio-blk request header at its buffer, and the available ring lists them in order. A virtio-blk
// device over a small memfd serves the queue through the MMIO transport, driven exactly like a
// guest driver would. Nothing may crash, leak or touch memory outside guest RAM (ASan checks the
// latter: guest RAM is an mmap, everything else is heap).
#include <linux/virtio_mmio.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>

#include "common/unique_fd.h"
#include "vmm/devices/interrupt.h"
#include "vmm/devices/virtio/block/block_device.h"
#include "vmm/devices/virtio/mmio_transport.h"
#include "vmm/devices/virtio/ring_abi.h"
#include "vmm/memory/guest_memory.h"

namespace kapsel::vmm::virtio {
namespace {

constexpr uint64_t kLowRamSize = 0x10000;
constexpr GuestAddress kHighRam = 0x20000;  // a second region behind a hole
constexpr uint64_t kHighRamSize = 0x1000;
constexpr uint64_t kDiskSize = 16 * 512;

struct Header {
  uint8_t size_log2;  // queue size 1 << (size_log2 % 9), unless kRawSize
  uint8_t flags;      // kIndirect, kRawSize, kRawAddresses, kNoInterrupt, kStructured, kEventIdx
  uint16_t raw_size;
  uint16_t avail_idx;       // written to the available ring's idx before the first notify
  uint16_t avail_idx_step;  // added before each further notify
  uint8_t notifies;         // 1 + notifies % 4 notifications
  uint8_t register_writes;  // register_writes % 8 (offset, value) pairs at the end of the input
  uint16_t used_event;      // written after the available ring's entries (read with kEventIdx)
  uint32_t desc;            // addresses when kRawAddresses
  uint32_t avail;
  uint32_t used;
};
static_assert(sizeof(Header) == 24);

constexpr uint8_t kIndirect = 1;
constexpr uint8_t kRawSize = 2;
constexpr uint8_t kRawAddresses = 4;
constexpr uint8_t kNoInterrupt = 8;
constexpr uint8_t kStructured = 16;
constexpr uint8_t kEventIdx = 32;  // negotiate VIRTIO_RING_F_EVENT_IDX

// Structured mode: one descriptor. Buffers go above kBufferBase (the rings of a queue of up to
// 256 entries packed from address 0 end below it).
struct Record {
  uint16_t offset;  // buffer at kBufferBase + offset % (kLowRamSize - kBufferBase)
  uint16_t len;     // % 0x2000
  uint8_t flags;    // VRING_DESC_F_* (low 3 bits), bit 3: write a request header at the buffer
  uint8_t next;     // next = (i + 1 + next) % queue size
  uint8_t type;     // request header: type % 10, sector % 20
  uint8_t sector;
};
static_assert(sizeof(Record) == 8);
constexpr uint64_t kBufferBase = 0x3000;

class NullInterrupt : public InterruptLine {
 public:
  void Trigger() override {}
};

struct Environment {
  std::unique_ptr<GuestMemory> memory;
  int disk_fd = -1;  // owned by the device; kept to restore the image
  std::unique_ptr<MmioTransport> transport;
};

Environment* MakeEnvironment() {
  auto* env = new Environment;
  env->memory = GuestMemory::Create({{0, kLowRamSize}, {kHighRam, kHighRamSize}}).value();
  UniqueFd disk(memfd_create("kapsel-fuzz-disk", MFD_CLOEXEC));
  if (!disk || ftruncate(disk.get(), kDiskSize) != 0) abort();
  env->disk_fd = disk.get();
  auto device = BlockDevice::FromFd(std::move(disk), /*read_only=*/false, "fuzz").value();
  env->transport = std::make_unique<MmioTransport>(std::move(device), env->memory.get(),
                                                   std::make_unique<NullInterrupt>());
  return env;
}

void Write32(MmioTransport& transport, uint64_t offset, uint32_t value) {
  transport.Write(offset, absl::Span<const uint8_t>(reinterpret_cast<const uint8_t*>(&value), 4));
}

uint64_t AlignUp(uint64_t value, uint64_t align) { return (value + align - 1) / align * align; }

int FuzzOne(const uint8_t* data, size_t size) {
  static Environment* env = MakeEnvironment();
  if (size < sizeof(Header)) return 0;
  Header h;
  std::memcpy(&h, data, sizeof(h));
  data += sizeof(h);
  size -= sizeof(h);

  // Register writes come off the end of the input.
  const size_t reg_bytes = std::min<size_t>(h.register_writes % 8 * 8, size / 8 * 8);
  const uint8_t* regs = data + size - reg_bytes;
  size -= reg_bytes;

  // A fresh disk and fresh guest RAM holding the payload.
  if (ftruncate(env->disk_fd, 0) != 0 || ftruncate(env->disk_fd, kDiskSize) != 0) abort();
  const GuestMemory& memory = *env->memory;
  for (const auto& region : memory.regions()) std::memset(region.host, 0, region.size);

  const uint32_t queue_size = (h.flags & kRawSize) != 0 ? h.raw_size : 1u << (h.size_log2 % 9);
  uint64_t desc = 0;
  uint64_t avail = AlignUp(desc + 16 * uint64_t{queue_size}, 2);
  uint64_t used = AlignUp(avail + 6 + 2 * uint64_t{queue_size}, 4);
  if ((h.flags & kRawAddresses) != 0) {
    desc = h.desc;
    avail = h.avail;
    used = h.used;
  }
  uint16_t avail_idx = h.avail_idx;
  if ((h.flags & kStructured) == 0) {
    std::memcpy(memory.regions()[0].host, data, std::min<size_t>(size, kLowRamSize));
  } else {
    const size_t records = std::min<size_t>(size / sizeof(Record), queue_size);
    for (size_t i = 0; i < records; ++i) {
      Record r;
      std::memcpy(&r, data + i * sizeof(Record), sizeof(r));
      const uint64_t buffer = kBufferBase + r.offset % (kLowRamSize - kBufferBase);
      struct {
        uint64_t addr;
        uint32_t len;
        uint16_t flags;
        uint16_t next;
      } d = {buffer, r.len % 0x2000u, static_cast<uint16_t>(r.flags & 7),
             static_cast<uint16_t>((i + 1 + r.next) % queue_size)};
      (void)memory.WriteObj(desc + 16 * i, d);
      (void)memory.WriteObj<uint16_t>(avail + 4 + 2 * i, static_cast<uint16_t>(i));
      if ((r.flags & 8) != 0) {
        const uint32_t header[4] = {r.type % 10u, 0, r.sector % 20u, 0};
        (void)memory.WriteObj(buffer, header);
      }
    }
    avail_idx = static_cast<uint16_t>(avail_idx % 2 == 0 ? records : avail_idx);
  }
  // Give the fuzzer direct control of the ring header, wherever the ring is.
  (void)memory.WriteObj<uint16_t>(avail + 2, avail_idx);
  if ((h.flags & kNoInterrupt) != 0) {
    (void)memory.WriteObj<uint16_t>(avail, kVringAvailFNoInterrupt);
  }
  (void)memory.WriteObj<uint16_t>(avail + 4 + 2 * uint64_t{queue_size}, h.used_event);

  // The driver's initialization sequence (3.1.1), from a reset.
  MmioTransport& t = *env->transport;
  Write32(t, VIRTIO_MMIO_STATUS, 0);
  Write32(t, VIRTIO_MMIO_STATUS, 1);      // ACKNOWLEDGE
  Write32(t, VIRTIO_MMIO_STATUS, 1 | 2);  // DRIVER
  Write32(t, VIRTIO_MMIO_DEVICE_FEATURES_SEL, 0);
  const uint64_t features =
      (uint64_t{1} << 32) |
      ((h.flags & kIndirect) != 0 ? uint64_t{1} << kVirtioRingFIndirectDesc : 0) |
      ((h.flags & kEventIdx) != 0 ? uint64_t{1} << kVirtioRingFEventIdx : 0);
  Write32(t, VIRTIO_MMIO_DRIVER_FEATURES_SEL, 0);
  Write32(t, VIRTIO_MMIO_DRIVER_FEATURES, static_cast<uint32_t>(features));
  Write32(t, VIRTIO_MMIO_DRIVER_FEATURES_SEL, 1);
  Write32(t, VIRTIO_MMIO_DRIVER_FEATURES, static_cast<uint32_t>(features >> 32));
  Write32(t, VIRTIO_MMIO_STATUS, 1 | 2 | 8);  // FEATURES_OK
  Write32(t, VIRTIO_MMIO_QUEUE_SEL, 0);
  Write32(t, VIRTIO_MMIO_QUEUE_NUM, queue_size);
  Write32(t, VIRTIO_MMIO_QUEUE_DESC_LOW, static_cast<uint32_t>(desc));
  Write32(t, VIRTIO_MMIO_QUEUE_DESC_HIGH, static_cast<uint32_t>(desc >> 32));
  Write32(t, VIRTIO_MMIO_QUEUE_AVAIL_LOW, static_cast<uint32_t>(avail));
  Write32(t, VIRTIO_MMIO_QUEUE_AVAIL_HIGH, static_cast<uint32_t>(avail >> 32));
  Write32(t, VIRTIO_MMIO_QUEUE_USED_LOW, static_cast<uint32_t>(used));
  Write32(t, VIRTIO_MMIO_QUEUE_USED_HIGH, static_cast<uint32_t>(used >> 32));
  Write32(t, VIRTIO_MMIO_QUEUE_READY, 1);
  Write32(t, VIRTIO_MMIO_STATUS, 1 | 2 | 8 | 4);  // DRIVER_OK

  for (int i = 0; i <= h.notifies % 4; ++i) {
    if (i > 0) {
      avail_idx = static_cast<uint16_t>(avail_idx + h.avail_idx_step);
      (void)memory.WriteObj<uint16_t>(avail + 2, avail_idx);
    }
    t.NotifyQueue(0);
  }

  // Arbitrary register writes (including config space, status and notifies), then another kick.
  for (size_t i = 0; i < reg_bytes; i += 8) {
    uint32_t offset;
    uint32_t value;
    std::memcpy(&offset, regs + i, 4);
    std::memcpy(&value, regs + i + 4, 4);
    Write32(t, offset % kMmioWindowSize, value);
  }
  t.NotifyQueue(0);
  return 0;
}

}  // namespace
}  // namespace kapsel::vmm::virtio

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  return kapsel::vmm::virtio::FuzzOne(data, size);
}
