// A bus maps address ranges (port I/O or MMIO) to devices, kvmtool-style: each device registers its
// range and gets reads and writes with offsets relative to its base. The bus is filled while the VM
// is built and only read afterwards, so vCPU threads look devices up without a lock; each device
// serializes its own state.
#ifndef KAPSEL_VMM_DEVICES_BUS_H_
#define KAPSEL_VMM_DEVICES_BUS_H_

#include <cstdint>
#include <map>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/types/span.h"

namespace kapsel::vmm {

class BusDevice {
 public:
  virtual ~BusDevice() = default;
  // A short name for errors and logs ("serial", "virtio-mmio@0xd0000000").
  virtual std::string name() const = 0;
  // `offset` is relative to the device's base; data.size() is the access width (1, 2, 4 or 8).
  virtual void Read(uint64_t offset, absl::Span<uint8_t> data) = 0;
  virtual void Write(uint64_t offset, absl::Span<const uint8_t> data) = 0;
};

class Bus {
 public:
  explicit Bus(std::string name) : name_(std::move(name)) {}

  // Registers `device` at [base, base + length). Fails if the range is empty or overlaps another.
  absl::Status Insert(std::shared_ptr<BusDevice> device, uint64_t base, uint64_t length);

  // Dispatches an access. Returns false when no device covers [addr, addr + size): reads of
  // unclaimed addresses see all ones, as on real hardware.
  bool Read(uint64_t addr, absl::Span<uint8_t> data) const;
  bool Write(uint64_t addr, absl::Span<const uint8_t> data) const;

 private:
  struct Entry {
    uint64_t length;
    std::shared_ptr<BusDevice> device;
  };
  // Finds the device covering [addr, addr + size) and the offset of addr in it.
  const Entry* Find(uint64_t addr, uint64_t size, uint64_t* offset) const;

  std::string name_;
  std::map<uint64_t, Entry> entries_;  // by base address
};

}  // namespace kapsel::vmm

#endif  // KAPSEL_VMM_DEVICES_BUS_H_
