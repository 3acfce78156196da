#include "shim/host_cgroup.h"

#include <fcntl.h>
#include <linux/magic.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "common/status.h"
#include "shim/files.h"
#include "shim/log.h"

namespace kapsel::shim {
namespace {

constexpr const char* kControllers[] = {"cpu", "io", "memory", "pids"};

absl::Status WriteControl(const std::string& path, absl::string_view text) {
  UniqueFd fd(open(path.c_str(), O_WRONLY | O_CLOEXEC));
  if (!fd) return ErrnoError(absl::StrCat("open ", path));
  if (write(fd.get(), text.data(), text.size()) != static_cast<ssize_t>(text.size())) {
    return ErrnoError(absl::StrCat("writing '", text, "' to ", path));
  }
  return absl::OkStatus();
}

bool HasWord(absl::string_view list, absl::string_view word) {
  for (absl::string_view w : absl::StrSplit(list, absl::ByAnyChar(" \n"), absl::SkipEmpty())) {
    if (w == word) return true;
  }
  return false;
}

// The shim's own cgroup v2 path ("0::/path" in /proc/self/cgroup).
std::string OwnCgroup() {
  std::ifstream in("/proc/self/cgroup");
  std::string line;
  while (std::getline(in, line)) {
    if (absl::StartsWith(line, "0::")) return line.substr(3);
  }
  return "/";
}

}  // namespace

absl::StatusOr<std::unique_ptr<HostCgroup>> HostCgroup::Create(absl::string_view cgroups_path,
                                                               const std::string& root) {
  if (cgroups_path.empty()) return nullptr;
  struct statfs fs;
  if (statfs(root.c_str(), &fs) != 0 || fs.f_type != CGROUP2_SUPER_MAGIC) {
    LogInfo("host cgroup: ", root,
            " is not cgroup v2: kapsel-vmm and virtiofsd stay in the "
            "shim's cgroup, not in ",
            cgroups_path);
    return nullptr;
  }
  if (absl::StrContains(cgroups_path, ':')) {
    LogInfo("host cgroup: systemd cgroup paths are not supported yet (", cgroups_path,
            "): kapsel-vmm and virtiofsd stay in the shim's cgroup");
    return nullptr;
  }
  std::filesystem::path relative(std::string{cgroups_path});
  if (relative.is_relative()) relative = std::filesystem::path(OwnCgroup()) / relative;
  // Absolute now, so ".." cannot climb above the root.
  relative = relative.lexically_normal().relative_path();
  if (relative.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "linux.cgroupsPath '", cgroups_path, "' names the root cgroup, not one for the sandbox"));
  }
  // Each level from the root down: the controllers on for its children, then the next level.
  std::string dir = root;
  for (const auto& part : relative) {
    if (part.empty()) continue;  // the end of a path with a trailing '/'
    const std::string available = ReadFile(dir + "/cgroup.controllers");
    const std::string enabled = ReadFile(dir + "/cgroup.subtree_control");
    for (const char* controller : kControllers) {
      if (!HasWord(available, controller) || HasWord(enabled, controller)) continue;
      // Refused where the level has processes of its own (v2's no-internal-processes rule): the
      // VM is still placed, only that level does not split the figures further.
      if (absl::Status s =
              WriteControl(dir + "/cgroup.subtree_control", absl::StrCat("+", controller));
          !s.ok()) {
        LogInfo("host cgroup: ", s.message());
      }
    }
    dir += "/" + part.string();
    if (mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST) {
      return ErrnoError(absl::StrCat("making the sandbox's cgroup ", dir));
    }
  }
  UniqueFd procs(open((dir + "/cgroup.procs").c_str(), O_WRONLY | O_CLOEXEC));
  if (!procs) return ErrnoError(absl::StrCat("open ", dir, "/cgroup.procs"));
  return std::unique_ptr<HostCgroup>(new HostCgroup(dir, std::move(procs)));
}

HostCgroup::~HostCgroup() {
  if (absl::Status s = Remove(dir_); !s.ok()) LogWarn("host cgroup: ", s.message());
}

absl::Status HostCgroup::Remove(const std::string& dir) {
  if (access(dir.c_str(), F_OK) != 0) return absl::OkStatus();
  auto populated = [&dir] {
    return ReadFile(dir + "/cgroup.events").find("populated 1") != std::string::npos;
  };
  // Normally empty by now (the shim reaped what it started); a leftover of a dead shim is not.
  if (populated()) {
    RETURN_IF_ERROR(WriteControl(dir + "/cgroup.kill", "1"));
    const absl::Time deadline = absl::Now() + absl::Seconds(5);
    while (populated()) {
      if (absl::Now() > deadline) {
        return absl::DeadlineExceededError(
            absl::StrCat("the processes in ", dir, " did not end within 5 s of cgroup.kill"));
      }
      absl::SleepFor(absl::Milliseconds(10));
    }
  }
  if (rmdir(dir.c_str()) != 0 && errno != ENOENT) return ErrnoError(absl::StrCat("rmdir ", dir));
  return absl::OkStatus();
}

}  // namespace kapsel::shim
