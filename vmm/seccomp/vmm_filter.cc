#include "vmm/seccomp/vmm_filter.h"

#include <fcntl.h>
#include <linux/if_tun.h>
#include <linux/kvm.h>
#include <malloc.h>
#include <sched.h>
#include <seccomp.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <vector>

#include "absl/base/internal/sysinfo.h"
#include "absl/strings/str_cat.h"
#include "common/status.h"

namespace kapsel::vmm {
namespace {

struct FilterDeleter {
  void operator()(void* ctx) const { seccomp_release(ctx); }
};
using Filter = std::unique_ptr<void, FilterDeleter>;

// Argument `arg` (0-based) equals `value` in its low 32 bits: the kernel reads these arguments
// (ioctl request, socket domain, fallocate mode, madvise advice) as 32-bit ints, whatever the
// caller left in the upper half.
scmp_arg_cmp Arg32Equals(unsigned int arg, uint32_t value) {
  return scmp_arg_cmp{arg, SCMP_CMP_MASKED_EQ, 0xffffffffULL, value};
}

// Argument `arg` has none of the bits in `mask` set.
scmp_arg_cmp ArgLacksBits(unsigned int arg, uint64_t mask) {
  return scmp_arg_cmp{arg, SCMP_CMP_MASKED_EQ, mask, 0};
}

// Argument `arg` has every bit in `mask` set.
scmp_arg_cmp ArgHasBits(unsigned int arg, uint64_t mask) {
  return scmp_arg_cmp{arg, SCMP_CMP_MASKED_EQ, mask, mask};
}

// The allowlist: everything kapsel-vmm does once BuildVmm is done, from Vmm::Run to the exit.
// Found by running kapsel-vmm under strace -f through the end-to-end tests (boot, disks, console,
// vsock, virtio-fs over vhost-user, net on taps, free page reporting, signals, guest shutdown,
// teardown), then checked against the code.

// Allowed with any arguments.
constexpr int kAnyArguments[] = {
    // The event loop and device I/O: eventfds (queue notifications, irqfds, the vhost-user call
    // fds made on every activation), the signalfd, the vsock timerfd, Unix sockets (vsock,
    // vhost-user), taps, disk images, the console; virtio-rng.
    SCMP_SYS(epoll_wait),
    SCMP_SYS(epoll_ctl),
    SCMP_SYS(eventfd2),
    SCMP_SYS(signalfd4),
    SCMP_SYS(timerfd_settime),
    SCMP_SYS(read),
    SCMP_SYS(write),
    SCMP_SYS(readv),
    SCMP_SYS(writev),
    SCMP_SYS(pread64),
    SCMP_SYS(pwrite64),
    SCMP_SYS(fdatasync),
    SCMP_SYS(recvfrom),
    SCMP_SYS(sendto),
    SCMP_SYS(recvmsg),
    SCMP_SYS(sendmsg),
    SCMP_SYS(poll),
    SCMP_SYS(shutdown),
    SCMP_SYS(close),
    SCMP_SYS(fcntl),
    SCMP_SYS(getrandom),
    // vsock: guest connects to host ports (Unix sockets, see socket below); the listener.
    SCMP_SYS(connect),
    SCMP_SYS(accept4),
    // Teardown: the vsock listener's path is removed if it is still ours (lstat, unlink).
    SCMP_SYS(newfstatat),
    SCMP_SYS(unlink),
    // The C/C++ runtime: malloc, threads, absl::Mutex (futex; under contention it yields and
    // sleeps, and glibc's nanosleep is clock_nanosleep), absl::Now (clock_gettime is a system call
    // where the clock source has no vDSO), exit. getrusage: KAPSEL_VMM_STARTUP_REPORT.
    SCMP_SYS(munmap),
    SCMP_SYS(mremap),
    SCMP_SYS(brk),
    SCMP_SYS(set_robust_list),
    SCMP_SYS(rseq),
    SCMP_SYS(futex),
    SCMP_SYS(sched_yield),
    SCMP_SYS(nanosleep),
    SCMP_SYS(clock_nanosleep),
    SCMP_SYS(clock_gettime),
    SCMP_SYS(gettid),
    SCMP_SYS(getpid),
    SCMP_SYS(getrusage),
    SCMP_SYS(exit),
    SCMP_SYS(exit_group),
    // Signals: Vmm::Run's signal mask and vCPU kick handler, glibc's thread setup.
    SCMP_SYS(rt_sigprocmask),
    SCMP_SYS(rt_sigaction),
    SCMP_SYS(rt_sigreturn),
    SCMP_SYS(restart_syscall),
};

// Allowed when every condition holds; several rules for one system call: when any does.
struct Rule {
  int syscall;
  std::vector<scmp_arg_cmp> args;
};

std::vector<Rule> ConditionalRules() {
  const auto pid = static_cast<scmp_datum_t>(getpid());
  return {
      // vCPU threads. Every other KVM ioctl happens while the VM is built.
      {SCMP_SYS(ioctl), {Arg32Equals(1, KVM_RUN)}},
      // virtio-net: the tap's offloads follow the features the guest acks (activation, reset).
      {SCMP_SYS(ioctl), {Arg32Equals(1, TUNSETOFFLOAD)}},
      // Unix sockets only (vsock host ports).
      {SCMP_SYS(socket), {Arg32Equals(0, AF_UNIX)}},
      // Free page reporting and GuestMemory::Discard: holes punched in the guest memory file,
      // copy-on-write pages dropped (madvise is also glibc's way to free a dead thread's stack).
      {SCMP_SYS(fallocate), {Arg32Equals(1, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE)}},
      {SCMP_SYS(madvise), {Arg32Equals(2, MADV_DONTNEED)}},
      // malloc and thread stacks; never executable memory.
      {SCMP_SYS(mmap), {ArgLacksBits(2, PROT_EXEC)}},
      {SCMP_SYS(mprotect), {ArgLacksBits(2, PROT_EXEC)}},
      // Threads, not processes. clone3 answers ENOSYS (InstallVmmSeccompFilter), on which glibc's
      // pthread_create falls back to clone, whose flags a filter can see.
      {SCMP_SYS(clone), {ArgHasBits(0, CLONE_THREAD)}},
      // vCPU kicks (pthread_kill), only to our own threads.
      {SCMP_SYS(tgkill), {scmp_arg_cmp{0, SCMP_CMP_EQ, pid, 0}}},
  };
}

absl::Status Allow(void* filter, int syscall, const std::vector<scmp_arg_cmp>& args) {
  const int rc = seccomp_rule_add_array(filter, SCMP_ACT_ALLOW, syscall,
                                        static_cast<unsigned int>(args.size()), args.data());
  if (rc == 0) return absl::OkStatus();
  char* name = seccomp_syscall_resolve_num_arch(SCMP_ARCH_NATIVE, syscall);
  absl::Status status = ErrnoError(-rc, absl::StrCat("seccomp: allowing ", name ? name : "?"));
  free(name);
  return status;
}

// SIGSYS from the filter (SCMP_ACT_TRAP): the call was not made. Says which one on stderr (only
// async-signal-safe calls the filter allows: write, getpid, gettid, tgkill), then ends the process
// with the signal, as a filter that kills would (SA_RESETHAND restored the default action, and
// SA_NODEFER lets the signal through at once). A guest that took over kapsel-vmm could install a
// handler of its own; that only lets it go on without the calls the filter refuses.
void ReportRefusedCall(int signal, siginfo_t* info, void*) {
  char text[128];
  char* const begin = text;
  char* const end = text + sizeof(text);
  char* p = end;
  auto put = [&p, begin](const char* s) {
    size_t n = strlen(s);
    while (n > 0 && p > begin) *--p = s[--n];
  };
  auto put_number = [&p, begin](uint64_t v, unsigned base) {
    do {
      if (p == begin) return;
      *--p = "0123456789abcdef"[v % base];
      v /= base;
    } while (v != 0);
  };
  // Built from the end.
  put(") is not allowed by the seccomp filter: stopping\n");
  put_number(reinterpret_cast<uintptr_t>(info->si_call_addr), 16);
  put(" (at 0x");
  put_number(static_cast<uint32_t>(info->si_syscall), 10);
  put("kapsel-vmm: system call ");
  [[maybe_unused]] ssize_t n = write(STDERR_FILENO, p, static_cast<size_t>(end - p));
  syscall(SYS_tgkill, getpid(), static_cast<pid_t>(syscall(SYS_gettid)), signal);
}

}  // namespace

// Both initializations count CPUs by reading /sys/devices/system/cpu/online.
void WarmUpLazyInitialization() {
  // absl::Mutex sizes its spin loop on the first contended lock (a vCPU thread and the event loop
  // in the same device); the count is cached.
  const int cpus = absl::base_internal::NumCPUs();
  // glibc's malloc counts CPUs when the threads' arenas reach 8, to cap them at 8 per CPU (its
  // default on 64-bit); with the cap set up front it never needs to.
  mallopt(M_ARENA_MAX, 8 * (cpus > 0 ? cpus : 1));
}

absl::Status InstallVmmSeccompFilter() {
  WarmUpLazyInitialization();
  // A refused call traps into ReportRefusedCall, which names it and ends the process.
  struct sigaction report {};
  report.sa_sigaction = ReportRefusedCall;
  report.sa_flags = SA_SIGINFO | SA_RESETHAND | SA_NODEFER;
  if (sigaction(SIGSYS, &report, nullptr) != 0) return ErrnoError("seccomp: SIGSYS handler");
  Filter filter(seccomp_init(SCMP_ACT_TRAP));
  if (!filter) return absl::InternalError("seccomp_init failed");
  // Synchronize every existing thread; a thread that cannot be synchronized fails the load.
  int rc = seccomp_attr_set(filter.get(), SCMP_FLTATR_CTL_TSYNC, 1);
  if (rc != 0) return ErrnoError(-rc, "seccomp: SCMP_FLTATR_CTL_TSYNC");
  // System calls of another ABI (i386 int 0x80, x32) kill the process too.
  rc = seccomp_attr_set(filter.get(), SCMP_FLTATR_ACT_BADARCH, SCMP_ACT_KILL_PROCESS);
  if (rc != 0) return ErrnoError(-rc, "seccomp: SCMP_FLTATR_ACT_BADARCH");
  for (int syscall : kAnyArguments) RETURN_IF_ERROR(Allow(filter.get(), syscall, {}));
  for (const Rule& rule : ConditionalRules()) {
    RETURN_IF_ERROR(Allow(filter.get(), rule.syscall, rule.args));
  }
  rc = seccomp_rule_add(filter.get(), SCMP_ACT_ERRNO(ENOSYS), SCMP_SYS(clone3), 0);
  if (rc != 0) return ErrnoError(-rc, "seccomp: clone3");
  rc = seccomp_load(filter.get());
  if (rc != 0) return ErrnoError(-rc, "seccomp: loading the kapsel-vmm filter");
  return absl::OkStatus();
}

}  // namespace kapsel::vmm
