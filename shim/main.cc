// containerd-shim-kapsel-v2: containerd's runtime v2 shim for kapsel (runtime type
// io.containerd.kapsel.v2). Every sandbox (a container, or a pod's containers) runs in its own
// microVM. Modes: `start`, `delete`, and serving (see commands.h).
#include <cstdio>
#include <string>
#include <vector>

#include "common/status.h"
#include "shim/commands.h"

int main(int argc, char** argv) {
  std::vector<std::string> args(argv, argv + argc);
  absl::StatusOr<kapsel::shim::ShimArgs> parsed = kapsel::shim::ParseShimArgs(args);
  if (!parsed.ok()) {
    std::fprintf(stderr, "containerd-shim-kapsel-v2: %s\n",
                 std::string(parsed.status().message()).c_str());
    return 2;
  }
  if (parsed->action == "start") return kapsel::shim::RunStart(*parsed);
  if (parsed->action == "delete") return kapsel::shim::RunDelete(*parsed);
  return kapsel::shim::RunServe(*parsed);
}
