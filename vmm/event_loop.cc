#include "vmm/event_loop.h"

#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "absl/strings/str_cat.h"
#include "common/status.h"

namespace kapsel::vmm {

absl::StatusOr<std::unique_ptr<EventLoop>> EventLoop::Create() {
  UniqueFd epoll(epoll_create1(EPOLL_CLOEXEC));
  if (!epoll) return ErrnoError("event loop: epoll_create1");
  UniqueFd stop(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!stop) return ErrnoError("event loop: eventfd");
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.fd = stop.get();
  if (epoll_ctl(epoll.get(), EPOLL_CTL_ADD, stop.get(), &ev) != 0) {
    return ErrnoError("event loop: epoll_ctl(stop)");
  }
  return std::unique_ptr<EventLoop>(new EventLoop(std::move(epoll), std::move(stop)));
}

absl::Status EventLoop::Add(int fd, uint32_t events, Handler handler) {
  absl::MutexLock lock(&mu_);
  epoll_event ev{};
  ev.events = events;
  ev.data.fd = fd;
  if (epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, fd, &ev) != 0) {
    return ErrnoError(absl::StrCat("event loop: epoll_ctl(ADD, fd ", fd, ")"));
  }
  handlers_[fd] = std::make_shared<Handler>(std::move(handler));
  return absl::OkStatus();
}

absl::Status EventLoop::Modify(int fd, uint32_t events) {
  absl::MutexLock lock(&mu_);
  if (!handlers_.contains(fd)) {
    return absl::NotFoundError(absl::StrCat("event loop: fd ", fd, " is not registered"));
  }
  epoll_event ev{};
  ev.events = events;
  ev.data.fd = fd;
  if (epoll_ctl(epoll_.get(), EPOLL_CTL_MOD, fd, &ev) != 0) {
    return ErrnoError(absl::StrCat("event loop: epoll_ctl(MOD, fd ", fd, ")"));
  }
  return absl::OkStatus();
}

absl::Status EventLoop::Remove(int fd) {
  absl::MutexLock lock(&mu_);
  if (handlers_.erase(fd) == 0) {
    return absl::NotFoundError(absl::StrCat("event loop: fd ", fd, " is not registered"));
  }
  if (epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, fd, nullptr) != 0) {
    return ErrnoError(absl::StrCat("event loop: epoll_ctl(DEL, fd ", fd, ")"));
  }
  return absl::OkStatus();
}

absl::Status EventLoop::RunOnce(int timeout_ms) {
  epoll_event events[32];
  int n = epoll_wait(epoll_.get(), events, 32, timeout_ms);
  if (n < 0) {
    if (errno == EINTR) return absl::OkStatus();
    return ErrnoError("event loop: epoll_wait");
  }
  for (int i = 0; i < n; ++i) {
    const int fd = events[i].data.fd;
    if (fd == stop_.get()) {
      uint64_t value;
      [[maybe_unused]] ssize_t r = read(stop_.get(), &value, sizeof(value));
      continue;
    }
    std::shared_ptr<Handler> handler;
    {
      absl::MutexLock lock(&mu_);
      auto it = handlers_.find(fd);
      if (it == handlers_.end()) continue;  // removed by an earlier handler of this batch
      handler = it->second;
    }
    (*handler)(events[i].events);
  }
  return absl::OkStatus();
}

absl::Status EventLoop::Run() {
  while (true) {
    {
      absl::MutexLock lock(&mu_);
      if (stopped_) return absl::OkStatus();
    }
    absl::Status status = RunOnce(-1);
    if (!status.ok()) return status;
  }
}

void EventLoop::Stop() {
  {
    absl::MutexLock lock(&mu_);
    stopped_ = true;
  }
  const uint64_t one = 1;
  [[maybe_unused]] ssize_t n = write(stop_.get(), &one, sizeof(one));
}

}  // namespace kapsel::vmm
