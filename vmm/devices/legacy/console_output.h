// Where the guest's serial console goes: a file descriptor (stdout or a file) or nowhere. It also
// watches the stream for a kernel panic, so the VMM can report one even when the console is off.
#ifndef KAPSEL_VMM_DEVICES_LEGACY_CONSOLE_OUTPUT_H_
#define KAPSEL_VMM_DEVICES_LEGACY_CONSOLE_OUTPUT_H_

#include <functional>
#include <string>

#include "absl/synchronization/mutex.h"
#include "common/unique_fd.h"

namespace kapsel::vmm {

class ConsoleOutput {
 public:
  // fd < 0: output is dropped (but still watched). on_panic runs once, with the panic line.
  ConsoleOutput(int fd, bool owns_fd, std::function<void(const std::string&)> on_panic);
  ~ConsoleOutput();

  void Put(uint8_t byte);
  void Flush();

 private:
  void FlushLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  int fd_;
  bool owns_fd_;
  std::function<void(const std::string&)> on_panic_;
  absl::Mutex mu_;
  std::string pending_ ABSL_GUARDED_BY(mu_);  // bytes not yet written
  std::string line_ ABSL_GUARDED_BY(mu_);     // the current line, for the panic watch
  bool panicked_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace kapsel::vmm

#endif  // KAPSEL_VMM_DEVICES_LEGACY_CONSOLE_OUTPUT_H_
