#include "shim/child_process.h"

#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <iterator>
#include <string>
#include <thread>

#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace kapsel::shim {
namespace {

TEST(ChildProcessTest, RunsWithOutputInTheLogAndReportsTheExit) {
  char dir[] = "/tmp/kapsel-child-test-XXXXXX";
  ASSERT_NE(mkdtemp(dir), nullptr);
  const std::string log = std::string(dir) + "/log";
  auto child = ChildProcess::Spawn({"/bin/sh", "-c", "echo out; echo err >&2; exit 3"}, log);
  ASSERT_TRUE(child.ok()) << child.status();
  EXPECT_EQ((*child)->name(), "sh");
  EXPECT_EQ((*child)->Wait(absl::Seconds(30)), 3);
  std::ifstream in(log);
  EXPECT_EQ(std::string(std::istreambuf_iterator<char>(in), {}), "out\nerr\n");
  unlink(log.c_str());
  rmdir(dir);
}

TEST(ChildProcessTest, BadProgramsAreErrorsNamingThem) {
  EXPECT_EQ(ChildProcess::Spawn({"sleep", "1"}, "").status().code(),
            absl::StatusCode::kInvalidArgument);
  absl::Status missing = ChildProcess::Spawn({"/no/such/program"}, "").status();
  EXPECT_THAT(missing.message(), ::testing::HasSubstr("/no/such/program"));
}

// The ttrpc worker that handled Create (and spawned kapsel-vmm) may end later; the child must
// not die with it (PR_SET_PDEATHSIG follows the thread that forked).
TEST(ChildProcessTest, OutlivesTheThreadThatSpawnedIt) {
  absl::StatusOr<std::unique_ptr<ChildProcess>> child;
  std::thread spawner([&] {
    child = ChildProcess::Spawn({"/bin/sleep", "30"}, "");
    // Long enough for the child to have set its parent-death signal before this thread ends.
    absl::SleepFor(absl::Milliseconds(200));
  });
  spawner.join();
  ASSERT_TRUE(child.ok()) << child.status();
  EXPECT_EQ((*child)->Wait(absl::Milliseconds(300)), std::nullopt) << "killed with its spawner";
  EXPECT_EQ((*child)->Stop(absl::Seconds(10)), 128 + SIGTERM);
}

}  // namespace
}  // namespace kapsel::shim
