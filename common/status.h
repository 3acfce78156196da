// Helpers for absl::Status: errno-based errors and early-return macros.
#ifndef KAPSEL_COMMON_STATUS_H_
#define KAPSEL_COMMON_STATUS_H_

#include <cerrno>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace kapsel {

// A status for a failed system call: `context: strerror(err)`, with a code derived from err.
absl::Status ErrnoError(int err, absl::string_view context);
// The same, for the current errno.
inline absl::Status ErrnoError(absl::string_view context) { return ErrnoError(errno, context); }

// Prefixes a non-OK status's message with context ("context: message"), keeping its code.
absl::Status Annotate(const absl::Status& status, absl::string_view context);

// An error in what the user asked for (a flag's value, a file it names), as opposed to a failure of
// the system: programs exit with their usage code for these. The code is InvalidArgument; the
// mark is a payload, so errno-derived InvalidArgument errors are not mistaken for usage errors.
absl::Status UsageError(absl::string_view message);
bool IsUsageError(const absl::Status& status);

}  // namespace kapsel

#define KAPSEL_STATUS_CONCAT_INNER_(a, b) a##b
#define KAPSEL_STATUS_CONCAT_(a, b) KAPSEL_STATUS_CONCAT_INNER_(a, b)

// Returns the status from the enclosing function if `expr` is not OK.
#define RETURN_IF_ERROR(expr)                        \
  do {                                               \
    ::absl::Status kapsel_status_ = (expr);          \
    if (!kapsel_status_.ok()) return kapsel_status_; \
  } while (0)

// `ASSIGN_OR_RETURN(auto x, StatusOrExpr())`: declares/assigns x or returns the error.
#define ASSIGN_OR_RETURN(lhs, expr) \
  KAPSEL_ASSIGN_OR_RETURN_IMPL_(KAPSEL_STATUS_CONCAT_(kapsel_statusor_, __LINE__), lhs, expr)
#define KAPSEL_ASSIGN_OR_RETURN_IMPL_(statusor, lhs, expr) \
  auto statusor = (expr);                                  \
  if (!statusor.ok()) return statusor.status();            \
  lhs = std::move(statusor).value()

#endif  // KAPSEL_COMMON_STATUS_H_
