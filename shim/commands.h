// The shim's three modes (see shim_args.h). Each returns the process exit code.
#ifndef KAPSEL_SHIM_COMMANDS_H_
#define KAPSEL_SHIM_COMMANDS_H_

#include "shim/shim_args.h"

namespace kapsel::shim {

// Environment the serving shim gets from `start`.
inline constexpr char kConfigPathEnv[] = "KAPSEL_CONFIG_PATH";
inline constexpr char kSandboxIdEnv[] = "KAPSEL_SANDBOX_ID";
// A file in the bundle naming the sandbox directory and whether this container owns it.
inline constexpr char kBundleSandboxFile[] = "kapsel-sandbox";

// `start`: finds or launches the shim serving this container's sandbox, prints its address.
int RunStart(const ShimArgs& args);
// `delete`: cleans up after a shim that is gone; prints a DeleteResponse.
int RunDelete(const ShimArgs& args);
// Serving: the ttrpc Task service on fd 3 until containerd's Shutdown or SIGTERM.
int RunServe(const ShimArgs& args);

}  // namespace kapsel::shim

#endif  // KAPSEL_SHIM_COMMANDS_H_
