#include "shim/process.h"

namespace kapsel::shim {

using containerd::v1::types::Status;

Process::~Process() {
  if (waiter_.joinable()) waiter_.join();
}

void Process::SetCreated(uint32_t pid) {
  absl::MutexLock lock(&mu_);
  pid_ = pid;
  status_ = containerd::v1::types::CREATED;
}

bool Process::ClaimStart() {
  absl::MutexLock lock(&mu_);
  if (start_claimed_) return false;
  start_claimed_ = true;
  return true;
}

void Process::SetRunning(uint32_t pid) {
  absl::MutexLock lock(&mu_);
  if (exited_) return;
  if (pid != 0) pid_ = pid;
  status_ = containerd::v1::types::RUNNING;
}

void Process::SetPaused(bool paused) {
  absl::MutexLock lock(&mu_);
  if (exited_) return;
  status_ = paused ? containerd::v1::types::PAUSED : containerd::v1::types::RUNNING;
}

void Process::SetExited(uint32_t exit_status, absl::Time exited_at) {
  absl::MutexLock lock(&mu_);
  if (exited_) return;
  exited_ = true;
  exit_status_ = exit_status;
  exited_at_ = exited_at;
  status_ = containerd::v1::types::STOPPED;
}

uint32_t Process::pid() {
  absl::MutexLock lock(&mu_);
  return pid_;
}

Status Process::status() {
  absl::MutexLock lock(&mu_);
  return status_;
}

bool Process::exited() {
  absl::MutexLock lock(&mu_);
  return exited_;
}

uint32_t Process::exit_status() {
  absl::MutexLock lock(&mu_);
  return exit_status_;
}

absl::Time Process::exited_at() {
  absl::MutexLock lock(&mu_);
  return exited_at_;
}

bool Process::Wait(const ttrpc::CallContext& context) {
  while (true) {
    {
      absl::MutexLock lock(&mu_);
      if (mu_.AwaitWithTimeout(absl::Condition(&exited_), absl::Milliseconds(200))) return true;
    }
    if (context.IsCancelled()) return false;
  }
}

void Process::StartWaiter(std::function<void()> body) { waiter_ = std::thread(std::move(body)); }

}  // namespace kapsel::shim
