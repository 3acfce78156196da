#include "shim/config.h"

#include <unistd.h>

#include <fstream>
#include <set>
#include <sstream>
#include <toml.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status.h"

namespace kapsel::shim {
namespace {

std::string SelfDir() {
  char buf[4096];
  const ssize_t n = readlink("/proc/self/exe", buf, sizeof(buf) - 1);
  if (n <= 0) return ".";
  std::string path(buf, static_cast<size_t>(n));
  return path.substr(0, path.rfind('/'));
}

using Table = toml::value;

// Errors for keys of `table` not in `known`.
absl::Status CheckKeys(const Table& table, const std::string& where,
                       const std::set<std::string>& known) {
  for (const auto& [key, value] : table.as_table()) {
    if (known.count(key) == 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("unknown key '", where.empty() ? "" : where + ".", key,
                       "' (known: ", absl::StrJoin(known, ", "), ")"));
    }
  }
  return absl::OkStatus();
}

absl::Status GetString(const Table& table, const std::string& where, const std::string& key,
                       std::string* out) {
  if (!table.contains(key)) return absl::OkStatus();
  const Table& v = table.at(key);
  if (!v.is_string()) {
    return absl::InvalidArgumentError(absl::StrCat(where, ".", key, " must be a string"));
  }
  *out = v.as_string().str;
  return absl::OkStatus();
}

absl::Status GetUint(const Table& table, const std::string& where, const std::string& key,
                     int64_t min, int64_t max, int64_t* out) {
  if (!table.contains(key)) return absl::OkStatus();
  const Table& v = table.at(key);
  if (!v.is_integer() || v.as_integer() < min || v.as_integer() > max) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ".", key, " must be an integer from ", min, " to ", max));
  }
  *out = v.as_integer();
  return absl::OkStatus();
}

absl::Status GetBool(const Table& table, const std::string& where, const std::string& key,
                     bool* out) {
  if (!table.contains(key)) return absl::OkStatus();
  const Table& v = table.at(key);
  if (!v.is_boolean()) {
    return absl::InvalidArgumentError(absl::StrCat(where, ".", key, " must be true or false"));
  }
  *out = v.as_boolean();
  return absl::OkStatus();
}

absl::Status Apply(const Table& root, Config* config) {
  if (!root.is_table()) return absl::InvalidArgumentError("not a TOML table");
  RETURN_IF_ERROR(CheckKeys(root, "", {"vm", "virtiofsd", "shim"}));
  auto table = [&root](const std::string& name) -> absl::StatusOr<const Table*> {
    if (!root.contains(name)) return nullptr;
    if (!root.at(name).is_table()) {
      return absl::InvalidArgumentError(absl::StrCat("[", name, "] must be a table"));
    }
    return &root.at(name);
  };
  absl::StatusOr<const Table*> vm = table("vm");
  if (!vm.ok()) return vm.status();
  if (*vm != nullptr) {
    const Table& t = **vm;
    RETURN_IF_ERROR(
        CheckKeys(t, "vm",
                  {"kernel", "image", "initrd", "vmm", "vcpus", "memory_mib", "max_vcpus",
                   "max_memory_mib", "boot_timeout_seconds", "kernel_cmdline",
                   "free_page_reporting", "share_kernel_text", "jail"}));
    int64_t vcpus = config->vcpus, mem = config->memory_mib, max_vcpus = config->max_vcpus,
            max_mem = config->max_memory_mib, boot = absl::ToInt64Seconds(config->boot_timeout);
    for (const absl::Status& s :
         {GetString(t, "vm", "kernel", &config->kernel),
          GetString(t, "vm", "image", &config->image),
          GetString(t, "vm", "initrd", &config->initrd), GetString(t, "vm", "vmm", &config->vmm),
          GetString(t, "vm", "kernel_cmdline", &config->kernel_cmdline),
          GetUint(t, "vm", "vcpus", 1, 32, &vcpus), GetUint(t, "vm", "memory_mib", 64, 65536, &mem),
          GetUint(t, "vm", "max_vcpus", 1, 32, &max_vcpus),
          GetUint(t, "vm", "max_memory_mib", 64, 65536, &max_mem),
          GetUint(t, "vm", "boot_timeout_seconds", 1, 3600, &boot),
          GetBool(t, "vm", "free_page_reporting", &config->free_page_reporting),
          GetBool(t, "vm", "share_kernel_text", &config->share_kernel_text),
          GetBool(t, "vm", "jail", &config->jail)}) {
      RETURN_IF_ERROR(s);
    }
    config->vcpus = static_cast<uint32_t>(vcpus);
    config->memory_mib = static_cast<uint32_t>(mem);
    if (vcpus > max_vcpus) {
      return absl::InvalidArgumentError(
          absl::StrCat("vm.vcpus (", vcpus, ") is above vm.max_vcpus (", max_vcpus, ")"));
    }
    if (mem > max_mem) {
      return absl::InvalidArgumentError(
          absl::StrCat("vm.memory_mib (", mem, ") is above vm.max_memory_mib (", max_mem, ")"));
    }
    config->max_vcpus = static_cast<uint32_t>(max_vcpus);
    config->max_memory_mib = static_cast<uint32_t>(max_mem);
    config->boot_timeout = absl::Seconds(boot);
  }
  absl::StatusOr<const Table*> fs = table("virtiofsd");
  if (!fs.ok()) return fs.status();
  if (*fs != nullptr) {
    RETURN_IF_ERROR(CheckKeys(**fs, "virtiofsd", {"path", "cache"}));
    RETURN_IF_ERROR(GetString(**fs, "virtiofsd", "path", &config->virtiofsd));
    RETURN_IF_ERROR(GetString(**fs, "virtiofsd", "cache", &config->virtiofsd_cache));
    if (config->virtiofsd_cache != "none" && config->virtiofsd_cache != "auto" &&
        config->virtiofsd_cache != "always") {
      return absl::InvalidArgumentError(
          absl::StrCat("virtiofsd.cache must be none, auto or "
                       "always, not '",
                       config->virtiofsd_cache, "'"));
    }
  }
  absl::StatusOr<const Table*> shim = table("shim");
  if (!shim.ok()) return shim.status();
  if (*shim != nullptr) {
    RETURN_IF_ERROR(CheckKeys(**shim, "shim", {"log_level", "state_dir"}));
    RETURN_IF_ERROR(GetString(**shim, "shim", "log_level", &config->log_level));
    RETURN_IF_ERROR(GetString(**shim, "shim", "state_dir", &config->state_dir));
    const std::set<std::string> levels = {"debug", "info", "warn", "error"};
    if (levels.count(config->log_level) == 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "shim.log_level must be debug, info, warn or error, not '", config->log_level, "'"));
    }
  }
  if (!config->image.empty() && config->image[0] != '/') {
    return absl::InvalidArgumentError(
        absl::StrCat("paths must be absolute, not '", config->image, "'"));
  }
  for (const std::string* path :
       {&config->kernel, &config->initrd, &config->vmm, &config->virtiofsd, &config->state_dir}) {
    if (path->empty() || (*path)[0] != '/') {
      return absl::InvalidArgumentError(absl::StrCat("paths must be absolute, not '", *path, "'"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

Config DefaultConfig() {
  Config config;
  const std::string bin = SelfDir();
  const std::string guest = bin.substr(0, bin.rfind('/')) + "/guest";
  config.kernel = guest + "/vmlinux";
  config.image = guest + "/agent-root.img";
  config.initrd = guest + "/agent-initramfs.cpio";
  config.vmm = bin + "/kapsel-vmm";
  return config;
}

absl::StatusOr<Config> ParseConfig(const std::string& toml_text, const std::string& origin) {
  Config config = DefaultConfig();
  try {
    std::istringstream in(toml_text);
    const toml::value root = toml::parse(in, origin);
    if (absl::Status s = Apply(root, &config); !s.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(origin, ": ", s.message()));
    }
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(origin, ": ", e.what()));
  }
  return config;
}

absl::StatusOr<Config> LoadConfig(const std::string& path) {
  const std::string file = path.empty() ? kDefaultConfigPath : path;
  std::ifstream in(file);
  if (!in) {
    if (path.empty()) return DefaultConfig();
    return absl::NotFoundError(absl::StrCat("kapsel config ", file, " cannot be read"));
  }
  std::stringstream text;
  text << in.rdbuf();
  return ParseConfig(text.str(), file);
}

}  // namespace kapsel::shim
