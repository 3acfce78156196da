// containerd's command line for a v2 shim (Go flag syntax, one dash):
//   containerd-shim-kapsel-v2 -namespace NS -address ADDR -publish-binary PATH -id ID
//                             [-bundle DIR] [-debug] [start|delete]
// No action means "serve" (what `start` re-executes).
#ifndef KAPSEL_SHIM_SHIM_ARGS_H_
#define KAPSEL_SHIM_SHIM_ARGS_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace kapsel::shim {

struct ShimArgs {
  std::string ns;
  std::string address;  // containerd's GRPC address
  std::string publish_binary;
  std::string id;
  std::string bundle;
  bool debug = false;
  std::string action;  // "start", "delete" or "" (serve)
  // The flags as given, for re-executing in serve mode.
  std::vector<std::string> flags;
};

// Errors name the unknown flag or the missing value; -namespace and -id are required.
absl::StatusOr<ShimArgs> ParseShimArgs(const std::vector<std::string>& argv);

// The ttrpc socket of the shim serving (address, namespace, group): a stable hash, so `start` of a
// pod's second container finds the pod's shim. "unix://<state_dir>/s/<hex>.sock".
std::string ShimSocketAddress(const std::string& state_dir, const std::string& address,
                              const std::string& ns, const std::string& group);

}  // namespace kapsel::shim

#endif  // KAPSEL_SHIM_SHIM_ARGS_H_
