#include "vmm/devices/legacy/serial.h"

#include <cstring>

namespace kapsel::vmm {
namespace {

// Register offsets.
constexpr uint64_t kData = 0;  // RBR / THR, or DLL when DLAB
constexpr uint64_t kIer = 1;   // or DLM when DLAB
constexpr uint64_t kIir = 2;   // reads IIR, writes FCR
constexpr uint64_t kLcr = 3;
constexpr uint64_t kMcr = 4;
constexpr uint64_t kLsr = 5;
constexpr uint64_t kMsr = 6;
constexpr uint64_t kScr = 7;

constexpr uint8_t kIerThrEmpty = 0x02;
constexpr uint8_t kIirNoInterrupt = 0x01;
constexpr uint8_t kIirThrEmpty = 0x02;
constexpr uint8_t kIirFifoEnabled = 0xc0;
constexpr uint8_t kFcrEnableFifo = 0x01;
constexpr uint8_t kLsrThrEmpty = 0x20;
constexpr uint8_t kLsrTransmitterEmpty = 0x40;
constexpr uint8_t kMcrLoop = 0x10;
// Modem status: CTS, DSR and DCD asserted (a connected line).
constexpr uint8_t kMsrConnected = 0xb0;

}  // namespace

void Serial::Read(uint64_t offset, absl::Span<uint8_t> data) {
  std::memset(data.data(), 0, data.size());
  if (data.size() != 1) return;
  absl::MutexLock lock(&mu_);
  data[0] = ReadRegister(offset);
}

void Serial::Write(uint64_t offset, absl::Span<const uint8_t> data) {
  if (data.size() != 1) return;
  bool raise;
  {
    absl::MutexLock lock(&mu_);
    raise = WriteRegister(offset, data[0]);
  }
  if (raise) irq_->Trigger();
}

uint8_t Serial::ReadRegister(uint64_t offset) {
  switch (offset) {
    case kData:
      return dlab() ? dll_ : 0;  // nothing is ever received
    case kIer:
      return dlab() ? dlm_ : ier_;
    case kIir: {
      uint8_t iir = fifo_enabled_ ? kIirFifoEnabled : 0;
      if (thr_empty_pending_) {
        thr_empty_pending_ = false;  // reading IIR acknowledges THR-empty
        return iir | kIirThrEmpty;
      }
      return iir | kIirNoInterrupt;
    }
    case kLcr:
      return lcr_;
    case kMcr:
      return mcr_;
    case kLsr:
      return kLsrThrEmpty | kLsrTransmitterEmpty;
    case kMsr:
      if (mcr_ & kMcrLoop) {
        // Loopback: DTR -> DSR, RTS -> CTS, OUT1 -> RI, OUT2 -> DCD.
        return static_cast<uint8_t>(((mcr_ & 0x01) << 5) | ((mcr_ & 0x02) << 3) |
                                    ((mcr_ & 0x04) << 4) | ((mcr_ & 0x08) << 4));
      }
      return kMsrConnected;
    case kScr:
      return scr_;
    default:
      return 0;
  }
}

bool Serial::WriteRegister(uint64_t offset, uint8_t value) {
  switch (offset) {
    case kData:
      if (dlab()) {
        dll_ = value;
        return false;
      }
      if (!(mcr_ & kMcrLoop)) output_->Put(value);
      // The byte left at once: the transmitter is empty again.
      thr_empty_pending_ = (ier_ & kIerThrEmpty) != 0;
      return thr_empty_pending_;
    case kIer: {
      if (dlab()) {
        dlm_ = value;
        return false;
      }
      const bool was_enabled = ier_ & kIerThrEmpty;
      ier_ = value & 0x0f;
      if (!was_enabled && (ier_ & kIerThrEmpty)) {
        thr_empty_pending_ = true;
        return true;
      }
      if (!(ier_ & kIerThrEmpty)) thr_empty_pending_ = false;
      return false;
    }
    case kIir:
      fifo_enabled_ = value & kFcrEnableFifo;
      return false;
    case kLcr:
      lcr_ = value;
      return false;
    case kMcr:
      mcr_ = value & 0x1f;
      return false;
    case kScr:
      scr_ = value;
      return false;
    default:
      return false;
  }
}

}  // namespace kapsel::vmm
