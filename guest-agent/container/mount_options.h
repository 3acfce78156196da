// OCI mount options (mount(8) option names) to mount(2) flags, propagation and filesystem data.
#ifndef KAPSEL_GUEST_AGENT_CONTAINER_MOUNT_OPTIONS_H_
#define KAPSEL_GUEST_AGENT_CONTAINER_MOUNT_OPTIONS_H_

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/oci/spec.pb.h"

namespace kapsel::agent {

struct MountOptions {
  unsigned long flags = 0;        // MS_RDONLY, MS_NOSUID, ... (set options)
  unsigned long cleared = 0;      // flags an option explicitly cleared ("rw", "suid", ...)
  bool bind = false;              // "bind" or "rbind"
  bool recursive = false;         // "rbind"
  unsigned long propagation = 0;  // MS_SHARED/MS_SLAVE/MS_PRIVATE/MS_UNBINDABLE [| MS_REC]
  std::string data;               // everything else, comma-separated, for the filesystem
};

// Parses options. Options kapsel cannot honour (recursive attributes such as "rro", "idmap",
// "tmpcopyup", "remount") are errors.
absl::StatusOr<MountOptions> ParseMountOptions(
    const google::protobuf::RepeatedPtrField<std::string>& options);

// Parses a propagation name (shared, slave, private, unbindable, optionally r-prefixed) to flags.
absl::StatusOr<unsigned long> ParsePropagation(absl::string_view name);

}  // namespace kapsel::agent

#endif  // KAPSEL_GUEST_AGENT_CONTAINER_MOUNT_OPTIONS_H_
