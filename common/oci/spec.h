// Reading and checking OCI runtime specs (config.json).
#ifndef KAPSEL_COMMON_OCI_SPEC_H_
#define KAPSEL_COMMON_OCI_SPEC_H_

#include <string>

#include "absl/status/statusor.h"
#include "common/oci/spec.pb.h"

namespace kapsel::oci {

// Parses config.json text. Unknown fields are errors (a field kapsel does not know could change
// what the container may do); the message names what was wrong.
absl::StatusOr<v1::Spec> ParseSpec(const std::string& json);
// A process (what containerd's Task.Exec carries) and Linux resources (Task.Update), as JSON,
// with the same rules.
absl::StatusOr<v1::Process> ParseProcess(const std::string& json);
absl::StatusOr<v1::Resources> ParseResources(const std::string& json);
// Reads and parses a bundle's config.json; errors name the file.
absl::StatusOr<v1::Spec> ReadSpecFile(const std::string& path);

}  // namespace kapsel::oci

#endif  // KAPSEL_COMMON_OCI_SPEC_H_
