// `containerd-shim-kapsel-v2 ... start` (cwd = the bundle; runtime options on stdin).
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/oci/spec.h"
#include "common/status.h"
#include "common/ttrpc/address.h"
#include "google/protobuf/any.pb.h"
#include "shim/api/runtime_options.pb.h"
#include "shim/commands.h"
#include "shim/config.h"
#include "shim/files.h"
#include "shim/vm_resources.h"

namespace kapsel::shim {
namespace {

constexpr char kSandboxIdAnnotation[] = "io.kubernetes.cri.sandbox-id";

// runtimeoptions.v1.Options{config_path} from the Any containerd writes on stdin (may be empty).
std::string ConfigPathFromStdin() {
  std::stringstream in;
  in << std::cin.rdbuf();
  google::protobuf::Any any;
  if (in.str().empty() || !any.ParseFromString(in.str())) return "";
  if (!absl::EndsWith(any.type_url(), "runtimeoptions.v1.Options")) return "";
  runtimeoptions::v1::Options options;
  if (!options.ParseFromString(any.value())) return "";
  return options.config_path();
}

// The sandbox this container runs in: its pod's (a CRI container), else its own.
std::string SandboxGroup(const std::string& bundle, const std::string& id) {
  absl::StatusOr<oci::v1::Spec> spec = oci::ReadSpecFile(bundle + "/config.json");
  if (!spec.ok()) return id;  // Create reports the bad spec
  const auto& annotations = spec->annotations();
  auto type = annotations.find(kCriContainerTypeAnnotation);
  auto sandbox = annotations.find(kSandboxIdAnnotation);
  if (type != annotations.end() && type->second == "container" && sandbox != annotations.end() &&
      !sandbox->second.empty()) {
    return sandbox->second;
  }
  return id;
}

absl::StatusOr<std::string> Start(const ShimArgs& args) {
  char cwd[4096];
  if (getcwd(cwd, sizeof(cwd)) == nullptr) return ErrnoError("getcwd");
  const std::string bundle = args.bundle.empty() ? cwd : args.bundle;
  const std::string config_path = ConfigPathFromStdin();
  ASSIGN_OR_RETURN(Config config, LoadConfig(config_path));
  const std::string group = SandboxGroup(bundle, args.id);
  const std::string address = ShimSocketAddress(config.state_dir, args.address, args.ns, group);

  // The sandbox directory and whether this container owns it, for `delete`.
  const std::string sandbox_dir = absl::StrCat(config.state_dir, "/", args.ns, "/", group);
  RETURN_IF_ERROR(
      WriteFile(absl::StrCat(bundle, "/", kBundleSandboxFile),
                absl::StrCat(sandbox_dir, "\n", group == args.id ? "owner" : "member", "\n")));

  if (group != args.id) {
    // A pod's container: its sandbox's shim serves it when it runs.
    if (ttrpc::DialUnix(address).ok()) {
      RETURN_IF_ERROR(WriteFile(bundle + "/address", address));
      return address;
    }
  }
  std::error_code ec;
  std::filesystem::create_directories(config.state_dir + "/s", ec);
  if (ec)
    return absl::InternalError(absl::StrCat("mkdir ", config.state_dir, "/s: ", ec.message()));
  absl::StatusOr<UniqueFd> listener = ttrpc::ListenUnix(address);
  if (absl::IsAlreadyExists(listener.status())) {
    if (ttrpc::DialUnix(address).ok()) {
      return absl::AlreadyExistsError(
          absl::StrCat("a shim already serves ", group, " in namespace ", args.ns));
    }
    ASSIGN_OR_RETURN(ttrpc::UnixAddress parsed, ttrpc::ParseUnixAddress(address));
    unlink(parsed.addr.sun_path);  // stale: its shim is gone
    listener = ttrpc::ListenUnix(address);
  }
  if (!listener.ok()) return listener.status();

  // Re-execute as the serving shim: fd 3 = the listener, not holding containerd's output pipe.
  // argv[0] names the binary (ps, pgrep), whatever path containerd used.
  char self[4096];
  const ssize_t self_len = readlink("/proc/self/exe", self, sizeof(self) - 1);
  std::vector<std::string> argv = {self_len > 0 ? std::string(self, static_cast<size_t>(self_len))
                                                : "/proc/self/exe"};
  argv.insert(argv.end(), args.flags.begin(), args.flags.end());
  std::vector<char*> cargv;
  for (std::string& a : argv) cargv.push_back(a.data());
  cargv.push_back(nullptr);
  const pid_t pid = fork();
  if (pid < 0) return ErrnoError("fork");
  if (pid == 0) {
    setsid();
    // Above 3, so it never takes the listener's place.
    const int null_fd = fcntl(open("/dev/null", O_RDWR), F_DUPFD_CLOEXEC, 10);
    dup2(null_fd, 0);
    dup2(null_fd, 1);
    dup2(null_fd, 2);
    if (listener->get() == 3) {
      fcntl(3, F_SETFD, 0);
    } else {
      dup2(listener->get(), 3);  // dup2 clears close-on-exec
    }
    setenv(kConfigPathEnv, config_path.c_str(), 1);
    setenv(kSandboxIdEnv, group.c_str(), 1);
    if (chdir(bundle.c_str()) != 0) _exit(126);
    execv("/proc/self/exe", cargv.data());
    _exit(127);
  }
  RETURN_IF_ERROR(WriteFile(bundle + "/address", address));
  return address;
}

}  // namespace

int RunStart(const ShimArgs& args) {
  absl::StatusOr<std::string> address = Start(args);
  if (!address.ok()) {
    std::fprintf(stderr, "containerd-shim-kapsel-v2 start: %s\n",
                 std::string(address.status().message()).c_str());
    return 1;
  }
  std::fputs(address->c_str(), stdout);
  return 0;
}

}  // namespace kapsel::shim
