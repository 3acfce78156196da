#include "shim/log.h"

#include <unistd.h>

#include <atomic>

#include "absl/strings/str_replace.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "google/protobuf/text_format.h"

namespace kapsel::shim {
namespace {
std::atomic<int> g_level{static_cast<int>(LogLevel::kInfo)};
constexpr const char* kNames[] = {"debug", "info", "warning", "error"};
}  // namespace

void SetLogLevel(const std::string& level) {
  if (level == "debug") g_level = static_cast<int>(LogLevel::kDebug);
  if (level == "info") g_level = static_cast<int>(LogLevel::kInfo);
  if (level == "warn") g_level = static_cast<int>(LogLevel::kWarn);
  if (level == "error") g_level = static_cast<int>(LogLevel::kError);
}

bool LogEnabled(LogLevel level) { return static_cast<int>(level) >= g_level.load(); }

void LogLine(LogLevel level, const std::string& message) {
  const std::string escaped =
      absl::StrReplaceAll(message, {{"\\", "\\\\"}, {"\"", "\\\""}, {"\n", "\\n"}});
  const std::string line = absl::StrCat(
      "time=\"", absl::FormatTime("%Y-%m-%dT%H:%M:%E6SZ", absl::Now(), absl::UTCTimeZone()),
      "\" level=", kNames[static_cast<int>(level)], " msg=\"", escaped, "\" runtime=kapsel\n");
  // One write per line so concurrent lines do not interleave.
  [[maybe_unused]] ssize_t n = write(STDERR_FILENO, line.data(), line.size());
}

std::string MessageText(const google::protobuf::Message& message) {
  google::protobuf::TextFormat::Printer printer;
  printer.SetSingleLineMode(true);
  printer.SetExpandAny(false);
  std::string text;
  printer.PrintToString(message, &text);
  return text;
}

}  // namespace kapsel::shim
