#include "vmm/devices/legacy/console_output.h"

#include <unistd.h>

#include <cerrno>

namespace kapsel::vmm {
namespace {
constexpr size_t kFlushThreshold = 512;
constexpr size_t kMaxLine = 1024;
constexpr char kPanicMarker[] = "Kernel panic - not syncing";
}  // namespace

ConsoleOutput::ConsoleOutput(int fd, bool owns_fd, std::function<void(const std::string&)> on_panic)
    : fd_(fd), owns_fd_(owns_fd), on_panic_(std::move(on_panic)) {}

ConsoleOutput::~ConsoleOutput() {
  Flush();
  if (owns_fd_ && fd_ >= 0) close(fd_);
}

void ConsoleOutput::Put(uint8_t byte) {
  std::string panic_line;
  {
    absl::MutexLock lock(&mu_);
    if (fd_ >= 0) {
      pending_.push_back(static_cast<char>(byte));
      if (byte == '\n' || pending_.size() >= kFlushThreshold) FlushLocked();
    }
    if (byte == '\n') {
      if (!panicked_ && line_.find(kPanicMarker) != std::string::npos) {
        panicked_ = true;
        panic_line = line_;
      }
      line_.clear();
    } else if (byte != '\r' && line_.size() < kMaxLine) {
      line_.push_back(static_cast<char>(byte));
    }
  }
  if (!panic_line.empty() && on_panic_) on_panic_(panic_line);
}

void ConsoleOutput::Flush() {
  absl::MutexLock lock(&mu_);
  FlushLocked();
}

void ConsoleOutput::FlushLocked() {
  size_t done = 0;
  while (done < pending_.size()) {
    ssize_t n = write(fd_, pending_.data() + done, pending_.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;  // a closed or full sink drops console output rather than stall the guest
    done += static_cast<size_t>(n);
  }
  pending_.clear();
}

}  // namespace kapsel::vmm
