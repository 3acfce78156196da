// The shim's log: one line per message on stderr (the bundle's `log` fifo, which containerd copies
// into its own log), in logrus' text format so containerd's log readers recognize it.
#ifndef KAPSEL_SHIM_LOG_H_
#define KAPSEL_SHIM_LOG_H_

#include <string>

#include "absl/strings/str_cat.h"
#include "google/protobuf/message.h"

namespace kapsel::shim {

enum class LogLevel { kDebug = 0, kInfo = 1, kWarn = 2, kError = 3 };

// "debug", "info", "warn" or "error"; anything else keeps the current level.
void SetLogLevel(const std::string& level);
bool LogEnabled(LogLevel level);
void LogLine(LogLevel level, const std::string& message);

// `message` on one line for a debug log line, with Any fields left packed (expanding one whose
// type the shim does not link, like the OCI Process spec in an exec, has libprotobuf print a
// warning on stderr). Only worth its cost when LogEnabled(kDebug).
std::string MessageText(const google::protobuf::Message& message);

template <typename... Args>
void LogDebug(const Args&... args) {
  if (LogEnabled(LogLevel::kDebug)) LogLine(LogLevel::kDebug, absl::StrCat(args...));
}
template <typename... Args>
void LogInfo(const Args&... args) {
  if (LogEnabled(LogLevel::kInfo)) LogLine(LogLevel::kInfo, absl::StrCat(args...));
}
template <typename... Args>
void LogWarn(const Args&... args) {
  if (LogEnabled(LogLevel::kWarn)) LogLine(LogLevel::kWarn, absl::StrCat(args...));
}
template <typename... Args>
void LogError(const Args&... args) {
  LogLine(LogLevel::kError, absl::StrCat(args...));
}

}  // namespace kapsel::shim

#endif  // KAPSEL_SHIM_LOG_H_
