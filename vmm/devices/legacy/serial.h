// A 16550-compatible UART (COM1), transmit side: what the guest writes goes to a ConsoleOutput.
// It raises its interrupt when the transmitter is empty and the guest asked to hear about it, which
// Linux's interrupt-driven tty output needs.
#ifndef KAPSEL_VMM_DEVICES_LEGACY_SERIAL_H_
#define KAPSEL_VMM_DEVICES_LEGACY_SERIAL_H_

#include <cstdint>
#include <memory>

#include "absl/synchronization/mutex.h"
#include "vmm/devices/bus.h"
#include "vmm/devices/interrupt.h"
#include "vmm/devices/legacy/console_output.h"

namespace kapsel::vmm {

class Serial : public BusDevice {
 public:
  static constexpr uint64_t kLength = 8;

  Serial(std::shared_ptr<ConsoleOutput> output, std::unique_ptr<InterruptLine> irq)
      : output_(std::move(output)), irq_(std::move(irq)) {}

  std::string name() const override { return "serial"; }
  void Read(uint64_t offset, absl::Span<uint8_t> data) override;
  void Write(uint64_t offset, absl::Span<const uint8_t> data) override;

 private:
  uint8_t ReadRegister(uint64_t offset) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Returns true when the write made a new interrupt pending.
  bool WriteRegister(uint64_t offset, uint8_t value) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool dlab() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return lcr_ & 0x80; }

  std::shared_ptr<ConsoleOutput> output_;
  std::unique_ptr<InterruptLine> irq_;
  absl::Mutex mu_;
  uint8_t ier_ ABSL_GUARDED_BY(mu_) = 0;
  uint8_t lcr_ ABSL_GUARDED_BY(mu_) = 0x03;  // 8N1
  uint8_t mcr_ ABSL_GUARDED_BY(mu_) = 0x08;  // OUT2
  uint8_t scr_ ABSL_GUARDED_BY(mu_) = 0;
  uint8_t dll_ ABSL_GUARDED_BY(mu_) = 0x0c;  // 9600 baud
  uint8_t dlm_ ABSL_GUARDED_BY(mu_) = 0;
  bool fifo_enabled_ ABSL_GUARDED_BY(mu_) = false;
  bool thr_empty_pending_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace kapsel::vmm

#endif  // KAPSEL_VMM_DEVICES_LEGACY_SERIAL_H_
