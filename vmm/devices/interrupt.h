// An interrupt line into the guest. In a VM it is an eventfd bound to a GSI with KVM_IRQFD (edge:
// each Trigger pulses the line); tests use a recording implementation.
#ifndef KAPSEL_VMM_DEVICES_INTERRUPT_H_
#define KAPSEL_VMM_DEVICES_INTERRUPT_H_

#include <cstdint>

#include "absl/status/statusor.h"
#include "common/unique_fd.h"

namespace kapsel::vmm {

class InterruptLine {
 public:
  virtual ~InterruptLine() = default;
  virtual void Trigger() = 0;
};

// An eventfd-backed line; the VM builder registers fd() with KVM_IRQFD for a GSI.
class EventFdInterrupt : public InterruptLine {
 public:
  static absl::StatusOr<std::unique_ptr<EventFdInterrupt>> Create(uint32_t gsi);
  void Trigger() override;
  int fd() const { return fd_.get(); }
  uint32_t gsi() const { return gsi_; }

 private:
  EventFdInterrupt(UniqueFd fd, uint32_t gsi) : fd_(std::move(fd)), gsi_(gsi) {}
  UniqueFd fd_;
  uint32_t gsi_;
};

}  // namespace kapsel::vmm

#endif  // KAPSEL_VMM_DEVICES_INTERRUPT_H_
