#include "guest-agent/container/seccomp_filter.h"

#include <linux/seccomp.h>
#include <seccomp.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "common/status.h"
#include "common/unique_fd.h"

namespace kapsel::agent {
namespace {

struct FilterDeleter {
  void operator()(void* ctx) const { seccomp_release(ctx); }
};
using Filter = std::unique_ptr<void, FilterDeleter>;

absl::StatusOr<uint32_t> ParseAction(const std::string& name, std::optional<uint32_t> errno_ret,
                                     absl::string_view field) {
  uint32_t ret = errno_ret.value_or(EPERM);
  if (name == "SCMP_ACT_ALLOW") return SCMP_ACT_ALLOW;
  if (name == "SCMP_ACT_ERRNO") return SCMP_ACT_ERRNO(ret);
  if (name == "SCMP_ACT_KILL" || name == "SCMP_ACT_KILL_THREAD") return SCMP_ACT_KILL_THREAD;
  if (name == "SCMP_ACT_KILL_PROCESS") return SCMP_ACT_KILL_PROCESS;
  if (name == "SCMP_ACT_TRAP") return SCMP_ACT_TRAP;
  if (name == "SCMP_ACT_TRACE") return SCMP_ACT_TRACE(ret);
  if (name == "SCMP_ACT_LOG") return SCMP_ACT_LOG;
  if (name == "SCMP_ACT_NOTIFY") {
    return absl::InvalidArgumentError(
        absl::StrCat(field, ": SCMP_ACT_NOTIFY is not supported (no seccomp agent)"));
  }
  return absl::InvalidArgumentError(absl::StrCat(field, ": unknown action \"", name, "\""));
}

absl::StatusOr<scmp_compare> ParseOperator(const std::string& name) {
  if (name == "SCMP_CMP_NE") return SCMP_CMP_NE;
  if (name == "SCMP_CMP_LT") return SCMP_CMP_LT;
  if (name == "SCMP_CMP_LE") return SCMP_CMP_LE;
  if (name == "SCMP_CMP_EQ") return SCMP_CMP_EQ;
  if (name == "SCMP_CMP_GE") return SCMP_CMP_GE;
  if (name == "SCMP_CMP_GT") return SCMP_CMP_GT;
  if (name == "SCMP_CMP_MASKED_EQ") return SCMP_CMP_MASKED_EQ;
  return absl::InvalidArgumentError(
      absl::StrCat("linux.seccomp: unknown argument operator \"", name, "\""));
}

absl::StatusOr<uint32_t> ParseArchitecture(const std::string& name) {
  absl::string_view short_name = name;
  if (!absl::ConsumePrefix(&short_name, "SCMP_ARCH_")) {
    return absl::InvalidArgumentError(
        absl::StrCat("linux.seccomp.architectures: unknown architecture \"", name, "\""));
  }
  std::string lower = absl::AsciiStrToLower(short_name);
  uint32_t arch = seccomp_arch_resolve_name(lower.c_str());
  if (arch == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("linux.seccomp.architectures: unknown architecture \"", name, "\""));
  }
  return arch;
}

absl::StatusOr<unsigned int> ParseFlag(const std::string& name) {
  if (name == "SECCOMP_FILTER_FLAG_TSYNC") return SECCOMP_FILTER_FLAG_TSYNC;
  if (name == "SECCOMP_FILTER_FLAG_LOG") return SECCOMP_FILTER_FLAG_LOG;
  if (name == "SECCOMP_FILTER_FLAG_SPEC_ALLOW") return SECCOMP_FILTER_FLAG_SPEC_ALLOW;
  if (name == "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV") {
    return absl::InvalidArgumentError(
        "linux.seccomp.flags: SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV needs a seccomp listener, "
        "which is not supported");
  }
  return absl::InvalidArgumentError(
      absl::StrCat("linux.seccomp.flags: unknown flag \"", name, "\""));
}

absl::StatusOr<std::vector<sock_filter>> Export(const scmp_filter_ctx ctx) {
  UniqueFd memfd(memfd_create("kapsel-seccomp", MFD_CLOEXEC));
  if (!memfd) return ErrnoError("memfd_create for the seccomp program");
  int rc = seccomp_export_bpf(ctx, memfd.get());
  if (rc < 0) return ErrnoError(-rc, "seccomp_export_bpf");
  struct stat st {};
  if (fstat(memfd.get(), &st) != 0) return ErrnoError("fstat of the seccomp program");
  if (st.st_size == 0 || st.st_size % sizeof(sock_filter) != 0 ||
      st.st_size / sizeof(sock_filter) > BPF_MAXINSNS) {
    return absl::InvalidArgumentError(
        absl::StrCat("linux.seccomp: the compiled program has an invalid size (", st.st_size,
                     " bytes; the kernel takes at most ", BPF_MAXINSNS, " instructions)"));
  }
  std::vector<sock_filter> program(st.st_size / sizeof(sock_filter));
  size_t want = st.st_size;
  char* out = reinterpret_cast<char*>(program.data());
  size_t done = 0;
  while (done < want) {
    ssize_t n = pread(memfd.get(), out + done, want - done, done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return ErrnoError("reading the seccomp program");
    done += n;
  }
  return program;
}

}  // namespace

absl::StatusOr<SeccompProgram> CompileSeccomp(const oci::v1::Seccomp& seccomp) {
  if (!seccomp.listener_path().empty()) {
    return absl::InvalidArgumentError(
        "linux.seccomp.listenerPath is not supported (no seccomp agent)");
  }
  if (!seccomp.listener_metadata().empty()) {
    return absl::InvalidArgumentError("linux.seccomp.listenerMetadata is not supported");
  }
  std::optional<uint32_t> default_errno;
  if (seccomp.has_default_errno_ret()) default_errno = seccomp.default_errno_ret();
  if (seccomp.default_action().empty()) {
    return absl::InvalidArgumentError("linux.seccomp.defaultAction is missing");
  }
  ASSIGN_OR_RETURN(uint32_t default_action, ParseAction(seccomp.default_action(), default_errno,
                                                        "linux.seccomp.defaultAction"));

  SeccompProgram result;
  for (const std::string& flag : seccomp.flags()) {
    ASSIGN_OR_RETURN(unsigned int value, ParseFlag(flag));
    result.flags |= value;
  }

  Filter filter(seccomp_init(default_action));
  if (!filter) return absl::InternalError("seccomp_init failed");
  // kapsel sets no_new_privs itself (process.noNewPrivileges); the exported program does not
  // carry this attribute anyway.
  seccomp_attr_set(filter.get(), SCMP_FLTATR_CTL_NNP, 0);
  for (const std::string& name : seccomp.architectures()) {
    ASSIGN_OR_RETURN(uint32_t arch, ParseArchitecture(name));
    int rc = seccomp_arch_add(filter.get(), arch);
    if (rc < 0 && rc != -EEXIST) {
      return ErrnoError(-rc, absl::StrCat("linux.seccomp.architectures: adding ", name));
    }
  }

  for (int i = 0; i < seccomp.syscalls_size(); ++i) {
    const oci::v1::SeccompSyscall& rule = seccomp.syscalls(i);
    std::string field = absl::StrCat("linux.seccomp.syscalls[", i, "]");
    std::optional<uint32_t> errno_ret;
    if (rule.has_errno_ret()) errno_ret = rule.errno_ret();
    ASSIGN_OR_RETURN(uint32_t action, ParseAction(rule.action(), errno_ret, field));
    std::vector<scmp_arg_cmp> args;
    for (const oci::v1::SeccompArg& arg : rule.args()) {
      if (arg.index() > 5) {
        return absl::InvalidArgumentError(
            absl::StrCat(field, ": argument index ", arg.index(), " is out of range (0-5)"));
      }
      ASSIGN_OR_RETURN(scmp_compare op, ParseOperator(arg.op()));
      args.push_back(scmp_arg_cmp{arg.index(), op, arg.value(), arg.value_two()});
    }
    // A rule that repeats the default action changes nothing (and libseccomp refuses it).
    if (action == default_action) continue;
    for (const std::string& name : rule.names()) {
      int nr = seccomp_syscall_resolve_name(name.c_str());
      if (nr == __NR_SCMP_ERROR) continue;  // not known here: nothing to filter
      int rc = seccomp_rule_add_array(filter.get(), action, nr, args.size(), args.data());
      if (rc < 0) {
        return ErrnoError(-rc, absl::StrCat(field, ": adding the rule for ", name));
      }
    }
  }
  ASSIGN_OR_RETURN(result.instructions, Export(filter.get()));
  return result;
}

}  // namespace kapsel::agent
