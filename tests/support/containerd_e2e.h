// Shared by the containerd end-to-end tests (ctr and CRI): shell commands with a progress log, and
// the check that a test left nothing of kapsel behind.
#ifndef KAPSEL_TESTS_SUPPORT_CONTAINERD_E2E_H_
#define KAPSEL_TESTS_SUPPORT_CONTAINERD_E2E_H_

#include <string>

#include "absl/time/time.h"
#include "tests/support/subprocess.h"

namespace kapsel::testing {

// The shim's state directory (default config).
inline constexpr char kKapselStateDir[] = "/run/kapsel";

// Runs `script` with bash; every command, its duration and exit also go to
// <program>_progress.log in the working directory (kept when a run times out, which is when it is
// needed).
ProcessResult Sh(const std::string& script, absl::Duration timeout = absl::Seconds(180));

// "exit N (timed out)\nstdout: ...\nstderr: ..." for assertion messages.
std::string Describe(const ProcessResult& r);

// Adds gtest failures for anything of kapsel still there: a shim, kapsel-vmm or virtiofsd process
// (after a grace period), a mount or file under kKapselStateDir.
void ExpectNoKapselLeft();

// The same, and no task or container in containerd namespace `ns`.
void ExpectNothingLeft(const std::string& ns);

}  // namespace kapsel::testing

#endif  // KAPSEL_TESTS_SUPPORT_CONTAINERD_E2E_H_
