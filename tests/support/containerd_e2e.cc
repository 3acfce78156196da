#include "tests/support/containerd_e2e.h"

#include <errno.h>

#include <fstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "gtest/gtest.h"

namespace kapsel::testing {

ProcessResult Sh(const std::string& script, absl::Duration timeout) {
  const absl::Time start = absl::Now();
  absl::StatusOr<ProcessResult> r = RunProcess({"/bin/bash", "-c", script}, timeout);
  std::ofstream(absl::StrCat(program_invocation_short_name, "_progress.log"), std::ios::app)
      << absl::FormatTime("%H:%M:%S ", start, absl::UTCTimeZone())
      << absl::ToInt64Milliseconds(absl::Now() - start) << " ms, exit "
      << (r.ok() ? r->exit_code : -1) << ": " << script.substr(0, 300) << "\n";
  if (!r.ok()) {
    ProcessResult failed;
    failed.err = r.status().ToString();
    return failed;
  }
  return *r;
}

std::string Describe(const ProcessResult& r) {
  return absl::StrCat("exit ", r.exit_code, r.timed_out ? " (timed out)" : "",
                      "\nstdout: ", r.out.substr(0, 2000), "\nstderr: ", r.err.substr(0, 4000));
}

void ExpectNothingLeft(const std::string& ns) {
  ProcessResult tasks =
      Sh(absl::StrCat("ctr -n ", ns, " task ls -q; ctr -n ", ns, " container ls -q"));
  EXPECT_EQ(tasks.out, "") << "containers left behind in namespace " << ns;
  ExpectNoKapselLeft();
}

void ExpectNoKapselLeft() {
  // Shims exit shortly after their last container; give them a moment.
  ProcessResult procs = Sh(
      // (The brackets keep the pattern from matching this very shell's command line.)
      "for i in $(seq 50); do pgrep -f '[c]ontainerd-shim-kapsel-v2|[k]apsel-vmm|[v]irtiofsd' "
      ">/dev/null || exit 0; sleep 0.2; done; ps -eo pid,args | grep -E "
      "'[c]ontainerd-shim-kapsel-v2|[k]apsel-vmm|[v]irtiofsd'; exit 1");
  EXPECT_EQ(procs.exit_code, 0) << "processes left behind:\n" << procs.out;
  ProcessResult mounts = Sh(absl::StrCat("grep -c ' ", kKapselStateDir, "' /proc/self/mounts"));
  EXPECT_EQ(absl::StripAsciiWhitespace(mounts.out), "0") << "mounts left behind";
  // Only the shims' socket directory (s/) stays; sandbox and namespace directories go.
  ProcessResult files = Sh(absl::StrCat(
      "find ", kKapselStateDir, " -mindepth 1 -not -type d ", "2>/dev/null; find ", kKapselStateDir,
      " -mindepth 1 -type d -not -path '", kKapselStateDir, "/s' 2>/dev/null"));
  EXPECT_EQ(files.out, "") << "files left behind under " << kKapselStateDir;
}

}  // namespace kapsel::testing
