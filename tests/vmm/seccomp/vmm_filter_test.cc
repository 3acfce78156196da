// The kapsel-vmm seccomp filter, installed in a forked child (a filter cannot be removed): what
// the VMM needs at run time still works, everything else kills the child with SIGSYS.
#include "vmm/seccomp/vmm_filter.h"

#include <fcntl.h>
#include <linux/kvm.h>
#include <netinet/in.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <functional>
#include <string>
#include <thread>

#include "gtest/gtest.h"

namespace kapsel::vmm {
namespace {

// Exit codes of the child besides 0 (`body` returned true).
constexpr int kInstallFailed = 90;
constexpr int kBodyFailed = 91;

// Ends the child with a bare exit_group. Not _exit, nor [[noreturn]]: ASan precedes calls to
// functions that do not return with stack unpoisoning that calls sigaltstack, which the filter
// does not allow.
void ExitChild(int code) { syscall(SYS_exit_group, code); }

// Forks; the child installs the filter, runs `body` and exits 0 if it returned true. Returns the
// child's wait status. `body` must only make system calls (no gtest assertions: they would run in
// the child).
int RunFiltered(const std::function<bool()>& body) {
  const pid_t pid = fork();
  if (pid == 0) {
    ExitChild(!InstallVmmSeccompFilter().ok() ? kInstallFailed : (body() ? 0 : kBodyFailed));
  }
  int status = 0;
  EXPECT_EQ(waitpid(pid, &status, 0), pid);
  return status;
}

bool ExitedWith(int status, int code) { return WIFEXITED(status) && WEXITSTATUS(status) == code; }
bool KilledBySigsys(int status) { return WIFSIGNALED(status) && WTERMSIG(status) == SIGSYS; }

TEST(VmmSeccompFilter, AllowsWhatTheVmmDoesAtRunTime) {
  const int status = RunFiltered([] {
    // eventfd I/O, as queue notifications and irqfds.
    const int efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    uint64_t one = 1;
    if (efd < 0 || write(efd, &one, sizeof(one)) != sizeof(one)) return false;
    if (read(efd, &one, sizeof(one)) != sizeof(one) || close(efd) != 0) return false;
    // Unix sockets, as vsock host ports.
    const int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (s < 0 || close(s) != 0) return false;
    // malloc and a thread (clone3 answers ENOSYS; glibc falls back to clone with CLONE_THREAD).
    void* p = mmap(nullptr, 1 << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED || madvise(p, 1 << 20, MADV_DONTNEED) != 0) return false;
    if (munmap(p, 1 << 20) != 0) return false;
#ifdef KAPSEL_SANITIZE
    // ASan's thread start makes system calls of its own (sigaltstack); kapsel-vmm runs
    // unfiltered in sanitizer builds anyway.
    return true;
#else
    bool ran = false;
    std::thread t([&ran] { ran = true; });
    t.join();
    return ran;
#endif
  });
  EXPECT_TRUE(ExitedWith(status, 0)) << "wait status " << status;
}

TEST(VmmSeccompFilter, ForbiddenCallsKillTheProcess) {
  const std::vector<std::pair<const char*, std::function<bool()>>> forbidden = {
      {"socket(AF_INET)", [] { return socket(AF_INET, SOCK_STREAM, 0) >= 0; }},
      {"openat", [] { return open("/dev/null", O_RDONLY) >= 0; }},
      {"execve",
       [] {
         char* const argv[] = {const_cast<char*>("/bin/true"), nullptr};
         return execve("/bin/true", argv, environ) == 0;
       }},
      {"fork (clone without CLONE_THREAD)", [] { return fork() >= 0; }},
      {"mmap(PROT_EXEC)",
       [] {
         return mmap(nullptr, 4096, PROT_READ | PROT_EXEC, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0) !=
                MAP_FAILED;
       }},
      {"ioctl(KVM_CREATE_VM)", [] { return ioctl(0, KVM_CREATE_VM, 0) == 0; }},
      {"kill of another process", [] { return kill(1, 0) == 0; }},
      {"ptrace", [] { return syscall(SYS_ptrace, 0, 0, 0, 0) == 0; }},
  };
  for (const auto& [name, call] : forbidden) {
    const int status = RunFiltered(call);
    EXPECT_TRUE(KilledBySigsys(status)) << name << ": wait status " << status;
  }
}

TEST(VmmSeccompFilter, ARefusedCallIsNamedOnStderr) {
  int fds[2];
  ASSERT_EQ(pipe(fds), 0);
  const pid_t pid = fork();
  if (pid == 0) {
    dup2(fds[1], STDERR_FILENO);
    if (!InstallVmmSeccompFilter().ok()) ExitChild(kInstallFailed);
    syscall(SYS_socket, AF_INET, SOCK_STREAM, 0);
    ExitChild(kBodyFailed);
  }
  close(fds[1]);
  std::string err;
  char buf[256];
  ssize_t n;
  while ((n = read(fds[0], buf, sizeof(buf))) > 0) err.append(buf, static_cast<size_t>(n));
  close(fds[0]);
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  EXPECT_TRUE(KilledBySigsys(status)) << "wait status " << status;
  const std::string want = "kapsel-vmm: system call " + std::to_string(SYS_socket) + " (at 0x";
  EXPECT_EQ(err.rfind(want, 0), 0u) << err;
  EXPECT_NE(err.find(") is not allowed by the seccomp filter: stopping\n"), std::string::npos)
      << err;
}

TEST(VmmSeccompFilter, Clone3AnswersEnosys) {
  const int status =
      RunFiltered([] { return syscall(SYS_clone3, nullptr, 0) == -1 && errno == ENOSYS; });
  EXPECT_TRUE(ExitedWith(status, 0)) << "wait status " << status;
}

}  // namespace
}  // namespace kapsel::vmm
