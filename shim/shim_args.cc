#include "shim/shim_args.h"

#include <cstdint>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/status.h"

namespace kapsel::shim {

absl::StatusOr<ShimArgs> ParseShimArgs(const std::vector<std::string>& argv) {
  ShimArgs args;
  for (size_t i = 1; i < argv.size(); ++i) {
    std::string flag = argv[i];
    if (!absl::StartsWith(flag, "-")) {
      if (!args.action.empty() || (flag != "start" && flag != "delete")) {
        return UsageError(absl::StrCat("unexpected argument '", flag,
                                       "' (actions: start, delete; none to serve)"));
      }
      args.action = flag;
      continue;
    }
    std::string name = flag.substr(flag.find_first_not_of('-'));
    std::string value;
    bool has_value = false;
    if (size_t eq = name.find('='); eq != std::string::npos) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
      has_value = true;
    }
    if (name == "debug") {
      args.debug = !has_value || value == "true" || value == "1";
      args.flags.push_back(argv[i]);
      continue;
    }
    std::string* target = name == "namespace"        ? &args.ns
                          : name == "address"        ? &args.address
                          : name == "publish-binary" ? &args.publish_binary
                          : name == "id"             ? &args.id
                          : name == "bundle"         ? &args.bundle
                                                     : nullptr;
    if (target == nullptr) return UsageError(absl::StrCat("unknown flag '", flag, "'"));
    if (!has_value) {
      if (i + 1 >= argv.size()) return UsageError(absl::StrCat("flag ", flag, " needs a value"));
      value = argv[++i];
      args.flags.push_back(flag);
    } else {
      args.flags.push_back(flag.substr(0, flag.find('=')));
    }
    args.flags.push_back(value);
    *target = value;
  }
  if (args.ns.empty()) return UsageError("-namespace is required");
  if (args.id.empty()) return UsageError("-id is required");
  return args;
}

std::string ShimSocketAddress(const std::string& state_dir, const std::string& address,
                              const std::string& ns, const std::string& group) {
  // FNV-1a, 64 bits: stable across processes and builds.
  uint64_t hash = 0xcbf29ce484222325ULL;
  for (const std::string& part : {address, std::string(1, '\0'), ns, std::string(1, '\0'), group}) {
    for (unsigned char c : part) {
      hash ^= c;
      hash *= 0x100000001b3ULL;
    }
  }
  return absl::StrFormat("unix://%s/s/%016x.sock", state_dir, hash);
}

}  // namespace kapsel::shim
