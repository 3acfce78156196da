// kapsel-agent: the guest agent. In a kapsel microVM it is /init (PID 1): it sets up the guest,
// then serves the Agent API (ttrpc) on vsock port 1024 and process stdio on port 1025. With
// `--listen unix:PATH` it serves on Unix sockets instead (PATH and PATH.stdio), which is how its
// API is tested outside a VM.
#include <malloc.h>
#include <signal.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstring>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "common/status.h"
#include "common/ttrpc/server.h"
#include "guest-agent/agent_service.h"
#include "guest-agent/child_reaper.h"
#include "guest-agent/listener.h"
#include "guest-agent/pid1.h"
#include "guest-agent/process_table.h"
#include "guest-agent/stdio_router.h"

namespace kapsel::agent {
namespace {

void Log(const std::string& message) {
  std::fprintf(stderr, "kapsel-agent: %s\n", message.c_str());
}

constexpr char kUsage[] =
    "usage: kapsel-agent [--listen vsock:PORT|unix:PATH] [--cgroup-root DIR]\n"
    "Serves the kapsel Agent API (ttrpc) and process stdio (on PORT+1, or PATH.stdio).\n"
    "As PID 1 it first sets up the guest; the default is vsock:1024 there, and required "
    "elsewhere.\n"
    "Containers' cgroups are created under DIR (a cgroup2 directory; default /sys/fs/cgroup).\n";

int Run(int argc, char** argv) {
  const bool is_init = getpid() == 1;
  if (is_init) {
    if (absl::Status moved = LeaveInitramfsRoot(); !moved.ok()) {
      Log(absl::StrCat("init: ", moved.message(), " (containers will fail to pivot_root)"));
    }
  }
  std::string listen = is_init ? absl::StrCat("vsock:", kAgentVsockPort) : "";
  std::string cgroup_root = "/sys/fs/cgroup";
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--listen" && i + 1 < argc) {
      listen = argv[++i];
    } else if (absl::StartsWith(arg, "--listen=")) {
      listen = arg.substr(9);
    } else if (arg == "--cgroup-root" && i + 1 < argc) {
      cgroup_root = argv[++i];
    } else if (arg == "--help") {
      std::fputs(kUsage, stdout);
      return 0;
    } else if (!is_init) {  // the kernel passes unknown command line words to init: ignore them
      Log(absl::StrCat("unknown argument '", arg, "'"));
      std::fputs(kUsage, stderr);
      return 2;
    }
  }
  if (listen.empty()) {
    Log("--listen is required when not running as init");
    std::fputs(kUsage, stderr);
    return 2;
  }
  absl::StatusOr<std::string> stdio_address = StdioAddressFor(listen);
  if (!stdio_address.ok()) {
    Log(std::string(stdio_address.status().message()));
    return 2;
  }

  // One malloc arena, as in the shim: glibc would give each of the agent's threads an arena of its
  // own, each keeping the pages it once used, in every VM. The agent allocates little per request.
  mallopt(M_ARENA_MAX, 1);
  // Before any thread: SIGCHLD goes to the reaper's signalfd, SIGTERM/SIGINT to a sigwait thread
  // (outside a VM); a closed stdio peer must not kill us.
  ChildReaper::BlockChildSignal();
  if (!is_init) {
    sigset_t signals;
    sigemptyset(&signals);
    sigaddset(&signals, SIGTERM);
    sigaddset(&signals, SIGINT);
    pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  }
  signal(SIGPIPE, SIG_IGN);
  if (is_init) {
    if (absl::Status s = SetUpAsInit(); !s.ok()) Log(absl::StrCat("init: ", s.message()));
  } else if (prctl(PR_SET_CHILD_SUBREAPER, 1) != 0) {
    Log(absl::StrCat("PR_SET_CHILD_SUBREAPER: ", std::strerror(errno)));
  }

  ProcessTable processes;
  // DestroySandbox (once answered) or (outside a VM) SIGTERM/SIGINT stop the agent; the first
  // request counts.
  absl::Notification stop;
  std::atomic<bool> stopping{false};
  auto request_stop = [&stop, &stopping] {
    if (!stopping.exchange(true)) stop.Notify();
  };
  AgentOptions options;
  options.is_init = is_init;
  options.on_destroy = request_stop;
  options.cgroup_root = cgroup_root;
  AgentService service(std::move(options), &processes);
  absl::StatusOr<std::unique_ptr<ChildReaper>> reaper =
      ChildReaper::Start([&service](pid_t pid, int status) { service.OnChildExit(pid, status); });
  if (!reaper.ok()) {
    Log(std::string(reaper.status().message()));
    return 1;
  }
  absl::StatusOr<UniqueFd> api_listener = Listen(listen);
  absl::StatusOr<UniqueFd> stdio_listener =
      api_listener.ok() ? Listen(*stdio_address) : api_listener.status();
  if (!api_listener.ok() || !stdio_listener.ok()) {
    Log(std::string((api_listener.ok() ? stdio_listener : api_listener).status().message()));
    if (is_init) PowerOff();
    return 1;
  }

  ttrpc::Server server;
  StdioRouter stdio(&processes);
  absl::Status started = service.Register(server);
  if (started.ok()) started = stdio.Start(*std::move(stdio_listener));
  if (started.ok()) started = server.Start(*std::move(api_listener));
  if (!started.ok()) {
    Log(std::string(started.message()));
    if (is_init) PowerOff();
    return 1;
  }
  Log(absl::StrCat("serving on ", listen, " (stdio on ", *stdio_address, ")"));

  std::thread signal_waiter;
  if (!is_init) {
    signal_waiter = std::thread([&request_stop] {
      sigset_t signals;
      sigemptyset(&signals);
      sigaddset(&signals, SIGTERM);
      sigaddset(&signals, SIGINT);
      int sig;
      sigwait(&signals, &sig);  // also woken by the pthread_kill below
      request_stop();
    });
  }
  stop.WaitForNotification();
  if (signal_waiter.joinable()) {
    pthread_kill(signal_waiter.native_handle(), SIGTERM);
    signal_waiter.join();
  }
  Log("shutting down");
  server.Shutdown();
  service.DestroyAll();
  stdio.Shutdown();
  reaper->reset();
  if (is_init) PowerOff();
  if (!listen.empty() && absl::StartsWith(listen, "unix:")) {
    unlink(listen.substr(5).c_str());
    unlink(stdio_address->substr(5).c_str());
  }
  return 0;
}

}  // namespace
}  // namespace kapsel::agent

int main(int argc, char** argv) { return kapsel::agent::Run(argc, argv); }
