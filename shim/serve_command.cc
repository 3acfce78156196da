// The serving shim: containerd.task.v2.Task on the listener `start` passed as fd 3.
#include <fcntl.h>
#include <malloc.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>

#include "absl/strings/str_cat.h"
#include "common/ttrpc/address.h"
#include "common/ttrpc/server.h"
#include "shim/commands.h"
#include "shim/config.h"
#include "shim/event_publisher.h"
#include "shim/log.h"
#include "shim/task_service.h"

namespace kapsel::shim {
namespace {

constexpr int kListenerFd = 3;

// The bundle's `log` fifo (containerd reads it into its own log) becomes stderr. containerd opens
// its end shortly after `start` returns; lines are dropped rather than block if it stops reading.
void OpenLogFifo() {
  for (int i = 0; i < 500; ++i) {
    const int fd = open("log", O_WRONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd >= 0) {
      dup2(fd, STDERR_FILENO);
      close(fd);
      return;
    }
    if (errno != ENXIO) return;  // no fifo (run by hand): stderr stays /dev/null
    usleep(10000);
  }
}

const char* Env(const char* name) {
  const char* value = getenv(name);
  return value == nullptr ? "" : value;
}

}  // namespace

int RunServe(const ShimArgs& args) {
  // Re-executed through /proc/self/exe, the process would be named "exe" (ps, top): name it as
  // containerd's shims are named (the 15 characters the kernel keeps).
  prctl(PR_SET_NAME, "containerd-shim");
  // One malloc arena: glibc gives each of the shim's dozen threads an arena of its own, each
  // keeping pages it once used, which a node pays per sandbox. The shim allocates little (its
  // stdio copies reuse their buffers), so its threads can share one.
  mallopt(M_ARENA_MAX, 1);
  // Signals are read by this thread (sigtimedwait); every thread started later inherits the mask.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  signal(SIGPIPE, SIG_IGN);
  OpenLogFifo();

  absl::StatusOr<Config> config = LoadConfig(Env(kConfigPathEnv));
  if (!config.ok()) {
    LogError("configuration: ", config.status().message());
    return 1;
  }
  SetLogLevel(args.debug ? "debug" : config->log_level);
  const std::string sandbox_id = *Env(kSandboxIdEnv) ? Env(kSandboxIdEnv) : args.id;
  LogInfo("serving sandbox ", sandbox_id, " (namespace ", args.ns, ")");

  EventPublisher events(Env("TTRPC_ADDRESS"), args.ns);
  TaskService service(*config, ShimIdentity{args.ns, sandbox_id}, &events);
  ttrpc::Server server;
  if (absl::Status s = service.Register(server); !s.ok()) {
    LogError(s.ToString());
    return 1;
  }
  int listening = 0;
  socklen_t optlen = sizeof(listening);
  if (getsockopt(kListenerFd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &optlen) != 0 || !listening) {
    LogError("fd 3 is not a listening socket: run this shim through `start`");
    return 1;
  }
  // The listener's path, removed when the shim ends.
  sockaddr_un addr = {};
  socklen_t len = sizeof(addr);
  getsockname(kListenerFd, reinterpret_cast<sockaddr*>(&addr), &len);
  const std::string socket_path = addr.sun_path;
  fcntl(kListenerFd, F_SETFD, FD_CLOEXEC);
  if (absl::Status s = server.Start(UniqueFd(kListenerFd)); !s.ok()) {
    LogError("serving: ", s.ToString());
    return 1;
  }

  const timespec tick = {0, 100 * 1000 * 1000};
  while (!service.shutdown_requested().HasBeenNotified()) {
    const int sig = sigtimedwait(&signals, nullptr, &tick);
    if (sig > 0) {
      LogInfo("signal ", sig, ": shutting down");
      break;
    }
  }
  // The VM first, while containerd is still connected: once the connection closes, containerd
  // runs `delete`, which would kill a VMM that is still powering off.
  service.ShutdownNow();
  server.Shutdown();
  events.Close(absl::Seconds(5));
  if (!socket_path.empty()) unlink(socket_path.c_str());
  LogInfo("shim exits");
  return 0;
}

}  // namespace kapsel::shim
