#include "common/oci/spec.h"

#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "google/protobuf/util/json_util.h"

namespace kapsel::oci {

namespace {

// Parses OCI JSON into `message`, rejecting unknown fields; errors start with `what`.
absl::Status ParseStrict(const std::string& json, absl::string_view what,
                         google::protobuf::Message* message) {
  google::protobuf::util::JsonParseOptions options;
  options.ignore_unknown_fields = false;
  auto status = google::protobuf::util::JsonStringToMessage(json, message, options);
  if (!status.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("invalid ", what, ": ", std::string(status.message())));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<v1::Spec> ParseSpec(const std::string& json) {
  v1::Spec spec;
  RETURN_IF_ERROR(ParseStrict(json, "OCI runtime spec", &spec));
  return spec;
}

absl::StatusOr<v1::Process> ParseProcess(const std::string& json) {
  v1::Process process;
  RETURN_IF_ERROR(ParseStrict(json, "OCI process", &process));
  return process;
}

absl::StatusOr<v1::Resources> ParseResources(const std::string& json) {
  v1::Resources resources;
  RETURN_IF_ERROR(ParseStrict(json, "OCI Linux resources", &resources));
  return resources;
}

absl::StatusOr<v1::Spec> ReadSpecFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read ", path));
  std::stringstream text;
  text << in.rdbuf();
  absl::StatusOr<v1::Spec> spec = ParseSpec(text.str());
  if (!spec.ok()) {
    return absl::Status(spec.status().code(), absl::StrCat(path, ": ", spec.status().message()));
  }
  return spec;
}

}  // namespace kapsel::oci
