#include "guest-agent/container/mount_options.h"

#include <sys/mount.h>

#include "absl/strings/str_cat.h"

#ifndef MS_NOSYMFOLLOW
#define MS_NOSYMFOLLOW 256
#endif

namespace kapsel::agent {
namespace {

struct FlagOption {
  absl::string_view name;
  bool clear;
  unsigned long flag;
};

constexpr FlagOption kFlagOptions[] = {
    {"defaults", false, 0},
    {"ro", false, MS_RDONLY},
    {"rw", true, MS_RDONLY},
    {"nosuid", false, MS_NOSUID},
    {"suid", true, MS_NOSUID},
    {"nodev", false, MS_NODEV},
    {"dev", true, MS_NODEV},
    {"noexec", false, MS_NOEXEC},
    {"exec", true, MS_NOEXEC},
    {"sync", false, MS_SYNCHRONOUS},
    {"async", true, MS_SYNCHRONOUS},
    {"dirsync", false, MS_DIRSYNC},
    {"mand", false, MS_MANDLOCK},
    {"nomand", true, MS_MANDLOCK},
    {"noatime", false, MS_NOATIME},
    {"atime", true, MS_NOATIME},
    {"nodiratime", false, MS_NODIRATIME},
    {"diratime", true, MS_NODIRATIME},
    {"relatime", false, MS_RELATIME},
    {"norelatime", true, MS_RELATIME},
    {"strictatime", false, MS_STRICTATIME},
    {"nostrictatime", true, MS_STRICTATIME},
    {"lazytime", false, MS_LAZYTIME},
    {"nolazytime", true, MS_LAZYTIME},
    {"silent", false, MS_SILENT},
    {"loud", true, MS_SILENT},
    {"nosymfollow", false, MS_NOSYMFOLLOW},
    {"symfollow", true, MS_NOSYMFOLLOW},
};

constexpr absl::string_view kUnsupported[] = {
    "remount",     "move",         "idmap",          "ridmap",       "tmpcopyup",  "rro",
    "rrw",         "rnosuid",      "rsuid",          "rnodev",       "rdev",       "rnoexec",
    "rexec",       "rnoatime",     "ratime",         "rnodiratime",  "rdiratime",  "rrelatime",
    "rnorelatime", "rstrictatime", "rnostrictatime", "rnosymfollow", "rsymfollow", "x-mount.mkdir",
};

}  // namespace

absl::StatusOr<unsigned long> ParsePropagation(absl::string_view name) {
  unsigned long recursive = 0;
  absl::string_view base = name;
  if (!base.empty() && base.front() == 'r' && base != "r") {
    recursive = MS_REC;
    base.remove_prefix(1);
  }
  if (base == "shared") return MS_SHARED | recursive;
  if (base == "slave") return MS_SLAVE | recursive;
  if (base == "private") return MS_PRIVATE | recursive;
  if (base == "unbindable") return MS_UNBINDABLE | recursive;
  return absl::InvalidArgumentError(absl::StrCat("unknown propagation \"", name, "\""));
}

absl::StatusOr<MountOptions> ParseMountOptions(
    const google::protobuf::RepeatedPtrField<std::string>& options) {
  MountOptions result;
  for (const std::string& option : options) {
    bool handled = false;
    for (const FlagOption& flag : kFlagOptions) {
      if (option != flag.name) continue;
      if (flag.clear) {
        result.flags &= ~flag.flag;
        result.cleared |= flag.flag;
      } else {
        result.flags |= flag.flag;
        result.cleared &= ~flag.flag;
      }
      handled = true;
      break;
    }
    if (handled) continue;
    if (option == "bind" || option == "rbind") {
      result.bind = true;
      result.recursive = result.recursive || option == "rbind";
      continue;
    }
    if (absl::StatusOr<unsigned long> propagation = ParsePropagation(option); propagation.ok()) {
      result.propagation = *propagation;
      continue;
    }
    for (absl::string_view unsupported : kUnsupported) {
      if (option == unsupported) {
        return absl::InvalidArgumentError(
            absl::StrCat("mount option \"", option, "\" is not supported"));
      }
    }
    if (option.empty() || option.find(',') != std::string::npos) {
      return absl::InvalidArgumentError(absl::StrCat("invalid mount option \"", option, "\""));
    }
    if (!result.data.empty()) result.data += ",";
    result.data += option;
  }
  return result;
}

}  // namespace kapsel::agent
