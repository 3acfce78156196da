#include "vmm/devices/interrupt.h"

#include <sys/eventfd.h>
#include <unistd.h>

#include <memory>

#include "common/status.h"

namespace kapsel::vmm {

absl::StatusOr<std::unique_ptr<EventFdInterrupt>> EventFdInterrupt::Create(uint32_t gsi) {
  UniqueFd fd(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!fd) return ErrnoError("interrupt: eventfd");
  return std::unique_ptr<EventFdInterrupt>(new EventFdInterrupt(std::move(fd), gsi));
}

void EventFdInterrupt::Trigger() {
  const uint64_t one = 1;
  // EAGAIN means the counter is saturated: the interrupt is pending anyway.
  [[maybe_unused]] ssize_t n = write(fd_.get(), &one, sizeof(one));
}

}  // namespace kapsel::vmm
