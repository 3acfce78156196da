#include "shim/mounts.h"

#include <fcntl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/status.h"
#include "common/unique_fd.h"

namespace kapsel::shim {
namespace {

struct Flag {
  unsigned long set;
  bool clear;  // the option clears `set` instead
};

const std::map<std::string, Flag>& KnownFlags() {
  static const auto* flags = new std::map<std::string, Flag>{
      {"ro", {MS_RDONLY, false}},        {"rw", {MS_RDONLY, true}},
      {"nosuid", {MS_NOSUID, false}},    {"suid", {MS_NOSUID, true}},
      {"nodev", {MS_NODEV, false}},      {"dev", {MS_NODEV, true}},
      {"noexec", {MS_NOEXEC, false}},    {"exec", {MS_NOEXEC, true}},
      {"bind", {MS_BIND, false}},        {"rbind", {MS_BIND | MS_REC, false}},
      {"noatime", {MS_NOATIME, false}},  {"relatime", {MS_RELATIME, false}},
      {"sync", {MS_SYNCHRONOUS, false}}, {"async", {MS_SYNCHRONOUS, true}},
  };
  return *flags;
}

absl::Status MountOne(const containerd::types::Mount& m, const std::string& target) {
  unsigned long flags = 0;
  std::vector<std::string> data;
  for (const std::string& option : m.options()) {
    auto it = KnownFlags().find(option);
    if (it == KnownFlags().end()) {
      data.push_back(option);
    } else if (it->second.clear) {
      flags &= ~it->second.set;
    } else {
      flags |= it->second.set;
    }
  }
  const std::string type = m.type() == "bind" || m.type() == "rbind" ? "none" : m.type();
  if (m.type() == "bind") flags |= MS_BIND;
  if (m.type() == "rbind") flags |= MS_BIND | MS_REC;
  const std::string joined = absl::StrJoin(data, ",");
  const unsigned long first =
      (flags & MS_BIND) ? (flags & ~static_cast<unsigned long>(MS_RDONLY)) : flags;
  if (mount(m.source().c_str(), target.c_str(), type.c_str(), first,
            joined.empty() ? nullptr : joined.c_str()) != 0) {
    return ErrnoError(absl::StrCat("mount ", m.type(), " ", m.source(), " on ", target, " (",
                                   absl::StrJoin(m.options(), ","), ")"));
  }
  // A bind mount takes read-only only on a remount.
  if ((flags & MS_BIND) && (flags & MS_RDONLY) &&
      mount(nullptr, target.c_str(), nullptr, MS_REMOUNT | MS_BIND | MS_RDONLY, nullptr) != 0) {
    const absl::Status error = ErrnoError(absl::StrCat("remount read-only ", target));
    umount2(target.c_str(), MNT_DETACH);
    return error;
  }
  return absl::OkStatus();
}

// Mount points at or below `path`, from /proc/self/mountinfo (a path mounted several times is
// listed as often).
std::vector<std::string> MountpointsAt(const std::string& path) {
  std::ifstream in("/proc/self/mountinfo");
  std::vector<std::string> mountpoints;
  std::string line;
  while (std::getline(in, line)) {
    std::vector<std::string> fields = absl::StrSplit(line, ' ');
    if (fields.size() < 5) continue;
    const std::string& mountpoint = fields[4];  // octal escapes (\040) only for odd names
    if (mountpoint == path || absl::StartsWith(mountpoint, path + "/")) {
      mountpoints.push_back(mountpoint);
    }
  }
  return mountpoints;
}

}  // namespace

absl::Status MountAll(const std::vector<containerd::types::Mount>& mounts,
                      const std::string& target) {
  RETURN_IF_ERROR(MkdirAll(target));
  for (size_t i = 0; i < mounts.size(); ++i) {
    absl::Status status = MountOne(mounts[i], target);
    if (!status.ok()) {
      for (size_t j = 0; j < i; ++j) umount2(target.c_str(), MNT_DETACH);
      return Annotate(status, "container rootfs");
    }
  }
  return absl::OkStatus();
}

absl::Status BindMount(const std::string& source, const std::string& target, bool read_only) {
  struct stat st;
  if (stat(source.c_str(), &st) != 0) return ErrnoError(absl::StrCat("bind source ", source));
  if (S_ISDIR(st.st_mode)) {
    RETURN_IF_ERROR(MkdirAll(target));
  } else {
    RETURN_IF_ERROR(MkdirAll(std::filesystem::path(target).parent_path()));
    UniqueFd f(open(target.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644));
    if (!f) return ErrnoError(absl::StrCat("create bind target ", target));
  }
  containerd::types::Mount m;
  m.set_type("bind");
  m.set_source(source);
  m.add_options("rbind");
  if (read_only) m.add_options("ro");
  return MountOne(m, target);
}

absl::Status UnmountAll(const std::string& path) {
  std::vector<std::string> targets = MountpointsAt(path);
  // Deepest first; a path mounted several times appears several times.
  std::sort(targets.begin(), targets.end(), std::greater<>());
  absl::Status result;
  for (const std::string& t : targets) {
    if (umount2(t.c_str(), MNT_DETACH) != 0 && errno != EINVAL && errno != ENOENT) {
      result.Update(ErrnoError(absl::StrCat("umount ", t)));
    }
  }
  return result;
}

absl::Status MkdirAll(const std::string& path) {
  std::error_code ec;
  // Another shim's RemoveDirIfEmpty may remove a parent between two of the mkdirs: start over.
  for (int attempt = 0; attempt < 5; ++attempt) {
    std::filesystem::create_directories(path, ec);
    if (ec != std::errc::no_such_file_or_directory) break;
  }
  if (ec) return absl::InternalError(absl::StrCat("mkdir ", path, ": ", ec.message()));
  return absl::OkStatus();
}

void RemoveDirIfEmpty(const std::string& path) { rmdir(path.c_str()); }

absl::Status RemoveTree(const std::string& path) {
  std::error_code ec;
  // remove_all does not follow symlinks; a mount left below would be emptied, so check first.
  if (std::vector<std::string> mounted = MountpointsAt(path); !mounted.empty()) {
    return absl::FailedPreconditionError(
        absl::StrCat("not removing ", path, ": ", mounted.front(), " is still mounted"));
  }
  std::filesystem::remove_all(path, ec);
  if (ec) return absl::InternalError(absl::StrCat("remove ", path, ": ", ec.message()));
  return absl::OkStatus();
}

}  // namespace kapsel::shim
