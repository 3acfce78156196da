// The i8042 keyboard controller, reduced to what a microVM needs: the CPU reset line. A guest
// booted with `reboot=k` writes 0xfe to port 0x64 to reboot; the VMM then stops the VM.
#ifndef KAPSEL_VMM_DEVICES_LEGACY_I8042_H_
#define KAPSEL_VMM_DEVICES_LEGACY_I8042_H_

#include <functional>

#include "vmm/devices/bus.h"

namespace kapsel::vmm {

class I8042 : public BusDevice {
 public:
  // Registered at port 0x60 with length 5: offset 0 is the data port, offset 4 command/status.
  static constexpr uint64_t kLength = 5;

  explicit I8042(std::function<void()> on_reset) : on_reset_(std::move(on_reset)) {}
  std::string name() const override { return "i8042"; }
  void Read(uint64_t offset, absl::Span<uint8_t> data) override;
  void Write(uint64_t offset, absl::Span<const uint8_t> data) override;

 private:
  std::function<void()> on_reset_;
};

}  // namespace kapsel::vmm

#endif  // KAPSEL_VMM_DEVICES_LEGACY_I8042_H_
