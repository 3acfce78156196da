#include "guest-agent/container/cgroup.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "common/status.h"

namespace kapsel::agent {
namespace {

std::optional<uint64_t> ParseValue(absl::string_view text) {
  text = absl::StripAsciiWhitespace(text);
  if (text == "max") return CgroupStats::kUnlimited;
  uint64_t value = 0;
  if (!absl::SimpleAtoi(text, &value)) return std::nullopt;
  return value;
}

std::optional<uint64_t> ReadValue(const std::string& path) {
  absl::StatusOr<std::string> text = ReadSmallFile(path);
  if (!text.ok()) return std::nullopt;
  return ParseValue(*text);
}

// "key value" lines (memory.stat, cpu.stat, cgroup.events).
std::map<std::string, uint64_t> ParseKeyValues(absl::string_view text) {
  std::map<std::string, uint64_t> values;
  for (absl::string_view line : absl::StrSplit(text, '\n', absl::SkipEmpty())) {
    std::pair<absl::string_view, absl::string_view> kv = absl::StrSplit(line, ' ');
    if (std::optional<uint64_t> v = ParseValue(kv.second)) values[std::string(kv.first)] = *v;
  }
  return values;
}

bool HasWord(absl::string_view list, absl::string_view word) {
  for (absl::string_view w : absl::StrSplit(list, absl::ByAnyChar(" \n"), absl::SkipEmpty())) {
    if (w == word) return true;
  }
  return false;
}

}  // namespace

absl::StatusOr<std::string> ReadSmallFile(const std::string& path) {
  UniqueFd fd(open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return ErrnoError(absl::StrCat("opening ", path));
  std::string text;
  char buf[4096];
  for (;;) {
    ssize_t n = read(fd.get(), buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return ErrnoError(absl::StrCat("reading ", path));
    if (n == 0) break;
    text.append(buf, n);
  }
  return text;
}

absl::Status WriteSmallFile(const std::string& path, absl::string_view value) {
  UniqueFd fd(open(path.c_str(), O_WRONLY | O_CLOEXEC));
  if (!fd) return ErrnoError(absl::StrCat("opening ", path));
  ssize_t n;
  do {
    n = write(fd.get(), value.data(), value.size());
  } while (n < 0 && errno == EINTR);
  if (n < 0) return ErrnoError(absl::StrCat("writing \"", value, "\" to ", path));
  if (static_cast<size_t>(n) != value.size()) {
    return absl::InternalError(absl::StrCat("short write of \"", value, "\" to ", path));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<Cgroup>> Cgroup::Create(const std::string& root,
                                                       const std::string& relative_path) {
  if (root.empty() || root.front() != '/') {
    return absl::InvalidArgumentError(
        absl::StrCat("cgroup root \"", root, "\" is not an absolute path"));
  }
  struct stat st {};
  if (stat(absl::StrCat(root, "/cgroup.controllers").c_str(), &st) != 0) {
    return ErrnoError(absl::StrCat("cgroup root ", root, " is not a cgroup v2 directory"));
  }
  std::vector<std::string> parts = absl::StrSplit(relative_path, '/', absl::SkipEmpty());
  if (parts.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("cgroup path \"", relative_path, "\" names no directory"));
  }
  std::string path = root;
  std::vector<std::string> created;
  auto undo = [&created] {
    for (auto it = created.rbegin(); it != created.rend(); ++it) rmdir(it->c_str());
  };
  for (size_t i = 0; i < parts.size(); ++i) {
    if (parts[i] == "." || parts[i] == "..") {
      undo();
      return absl::InvalidArgumentError(
          absl::StrCat("cgroup path \"", relative_path, "\" must not contain . or .."));
    }
    absl::StrAppend(&path, "/", parts[i]);
    if (mkdir(path.c_str(), 0755) == 0) {
      created.push_back(path);
    } else if (errno != EEXIST || i + 1 == parts.size()) {
      absl::Status status =
          errno == EEXIST ? absl::AlreadyExistsError(absl::StrCat(
                                "cgroup ", path, " already exists (in use by another container?)"))
                          : ErrnoError(absl::StrCat("creating cgroup ", path));
      undo();
      return status;
    }
  }
  UniqueFd fd(open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fd) {
    absl::Status status = ErrnoError(absl::StrCat("opening cgroup ", path));
    undo();
    return status;
  }
  return std::unique_ptr<Cgroup>(
      new Cgroup(root, std::move(path), std::move(created), std::move(fd)));
}

Cgroup::~Cgroup() { Remove().IgnoreError(); }

absl::Status Cgroup::EnableController(const std::string& controller, const std::string& field) {
  absl::StatusOr<std::string> available = ReadSmallFile(path_ + "/cgroup.controllers");
  if (available.ok() && HasWord(*available, controller)) return absl::OkStatus();
  // Enable it from the root down to the cgroup's parent.
  std::string relative = path_.substr(root_.size());
  std::vector<std::string> parts = absl::StrSplit(relative, '/', absl::SkipEmpty());
  std::string dir = root_;
  for (size_t i = 0; i + 1 <= parts.size(); ++i) {
    absl::StatusOr<std::string> here = ReadSmallFile(dir + "/cgroup.controllers");
    if (!here.ok() || !HasWord(*here, controller)) {
      return absl::FailedPreconditionError(
          absl::StrCat("linux.resources.", field, " needs the cgroup v2 \"", controller,
                       "\" controller, which is not available in ", dir, "/cgroup.controllers"));
    }
    absl::StatusOr<std::string> enabled = ReadSmallFile(dir + "/cgroup.subtree_control");
    if (!enabled.ok() || !HasWord(*enabled, controller)) {
      absl::Status status =
          WriteSmallFile(dir + "/cgroup.subtree_control", absl::StrCat("+", controller));
      if (!status.ok()) {
        return Annotate(status, absl::StrCat("enabling the ", controller, " controller for ",
                                             "linux.resources.", field));
      }
    }
    absl::StrAppend(&dir, "/", parts[i]);
  }
  return absl::OkStatus();
}

absl::Status Cgroup::Apply(const std::vector<CgroupWrite>& writes) {
  for (const CgroupWrite& write : writes) {
    if (!write.controller.empty()) RETURN_IF_ERROR(EnableController(write.controller, write.field));
  }
  for (const CgroupWrite& write : writes) {
    absl::Status status = WriteSmallFile(absl::StrCat(path_, "/", write.file), write.value);
    if (!status.ok()) return Annotate(status, absl::StrCat("linux.resources.", write.field));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<pid_t>> Cgroup::Procs() const {
  ASSIGN_OR_RETURN(std::string text, ReadSmallFile(path_ + "/cgroup.procs"));
  std::vector<pid_t> pids;
  for (absl::string_view line : absl::StrSplit(text, '\n', absl::SkipEmpty())) {
    pid_t pid = 0;
    if (absl::SimpleAtoi(line, &pid)) pids.push_back(pid);
  }
  return pids;
}

absl::StatusOr<std::string> Cgroup::ReadEventsField(const std::string& key) const {
  ASSIGN_OR_RETURN(std::string text, ReadSmallFile(path_ + "/cgroup.events"));
  for (absl::string_view line : absl::StrSplit(text, '\n', absl::SkipEmpty())) {
    std::pair<absl::string_view, absl::string_view> kv = absl::StrSplit(line, ' ');
    if (kv.first == key) return std::string(kv.second);
  }
  return absl::NotFoundError(absl::StrCat("no \"", key, "\" in ", path_, "/cgroup.events"));
}

absl::StatusOr<bool> Cgroup::Populated() const {
  absl::StatusOr<std::string> value = ReadEventsField("populated");
  if (!value.ok()) return value.status();
  return *value == "1";
}

absl::Status Cgroup::SetFrozen(bool frozen, absl::Duration timeout) {
  RETURN_IF_ERROR(WriteSmallFile(path_ + "/cgroup.freeze", frozen ? "1" : "0"));
  absl::Time deadline = absl::Now() + timeout;
  for (;;) {
    absl::StatusOr<std::string> value = ReadEventsField("frozen");
    if (!value.ok()) return value.status();
    if ((*value == "1") == frozen) return absl::OkStatus();
    if (absl::Now() > deadline) {
      return absl::DeadlineExceededError(absl::StrCat("cgroup ", path_, " did not become ",
                                                      frozen ? "frozen" : "thawed", " within ",
                                                      absl::FormatDuration(timeout)));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
}

absl::Status Cgroup::KillAll(absl::Duration timeout) {
  absl::Status kill_status = WriteSmallFile(path_ + "/cgroup.kill", "1");
  absl::Time deadline = absl::Now() + timeout;
  for (;;) {
    ASSIGN_OR_RETURN(bool populated, Populated());
    if (!populated) return absl::OkStatus();
    if (!kill_status.ok()) {
      // No cgroup.kill (kernel < 5.14): kill what is listed, again until it is empty.
      ASSIGN_OR_RETURN(std::vector<pid_t> pids, Procs());
      for (pid_t pid : pids) kill(pid, SIGKILL);
    }
    if (absl::Now() > deadline) {
      return absl::DeadlineExceededError(absl::StrCat("processes in cgroup ", path_,
                                                      " still run after SIGKILL and ",
                                                      absl::FormatDuration(timeout)));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
}

absl::StatusOr<CgroupStats> Cgroup::Stats() const {
  CgroupStats stats;
  stats.memory_current = ReadValue(path_ + "/memory.current");
  stats.memory_max = ReadValue(path_ + "/memory.max");
  if (absl::StatusOr<std::string> text = ReadSmallFile(path_ + "/memory.stat"); text.ok()) {
    stats.memory_stat = ParseKeyValues(*text);
  }
  ASSIGN_OR_RETURN(std::string cpu, ReadSmallFile(path_ + "/cpu.stat"));
  std::map<std::string, uint64_t> cpu_values = ParseKeyValues(cpu);
  auto cpu_field = [&cpu_values](const char* key) -> std::optional<uint64_t> {
    auto it = cpu_values.find(key);
    if (it == cpu_values.end()) return std::nullopt;
    return it->second;
  };
  stats.cpu_usage_usec = cpu_field("usage_usec");
  stats.cpu_user_usec = cpu_field("user_usec");
  stats.cpu_system_usec = cpu_field("system_usec");
  stats.pids_current = ReadValue(path_ + "/pids.current");
  stats.pids_max = ReadValue(path_ + "/pids.max");
  if (absl::StatusOr<std::string> text = ReadSmallFile(path_ + "/io.stat"); text.ok()) {
    for (absl::string_view line : absl::StrSplit(*text, '\n', absl::SkipEmpty())) {
      std::vector<absl::string_view> words = absl::StrSplit(line, ' ', absl::SkipEmpty());
      if (words.empty()) continue;
      std::pair<absl::string_view, absl::string_view> dev = absl::StrSplit(words[0], ':');
      CgroupStats::IoDevice device;
      if (!absl::SimpleAtoi(dev.first, &device.major) ||
          !absl::SimpleAtoi(dev.second, &device.minor)) {
        continue;
      }
      for (size_t i = 1; i < words.size(); ++i) {
        std::pair<absl::string_view, absl::string_view> kv = absl::StrSplit(words[i], '=');
        uint64_t value = 0;
        if (absl::SimpleAtoi(kv.second, &value)) device.values[std::string(kv.first)] = value;
      }
      stats.io.push_back(std::move(device));
    }
  }
  return stats;
}

absl::Status Cgroup::Remove() {
  if (removed_) return absl::OkStatus();
  dir_fd_.reset();
  if (rmdir(path_.c_str()) != 0 && errno != ENOENT) {
    return ErrnoError(absl::StrCat("removing cgroup ", path_));
  }
  removed_ = true;
  // Parents made by Create go too unless another container still uses them.
  for (auto it = created_.rbegin(); it != created_.rend(); ++it) {
    if (*it == path_) continue;
    if (rmdir(it->c_str()) != 0) break;
  }
  return absl::OkStatus();
}

}  // namespace kapsel::agent
