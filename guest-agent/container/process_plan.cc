#include "guest-agent/container/process_plan.h"

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/status.h"
#include "guest-agent/container/capabilities.h"
#include "guest-agent/container/rlimits.h"

namespace kapsel::agent {

void ProcessPlan::Finalize() {
  argv.clear();
  envp.clear();
  for (std::string& arg : args) argv.push_back(arg.data());
  argv.push_back(nullptr);
  for (std::string& var : env) envp.push_back(var.data());
  envp.push_back(nullptr);
}

std::vector<std::string> ExecCandidates(const std::string& arg0,
                                        const std::vector<std::string>& env) {
  if (absl::StrContains(arg0, '/')) return {arg0};
  std::string path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
  for (const std::string& var : env) {
    if (absl::StartsWith(var, "PATH=")) path = var.substr(5);
  }
  std::vector<std::string> candidates;
  for (absl::string_view dir : absl::StrSplit(path, ':')) {
    if (dir.empty()) dir = ".";
    candidates.push_back(absl::StrCat(dir, "/", arg0));
  }
  return candidates;
}

absl::StatusOr<std::unique_ptr<ProcessPlan>> BuildProcessPlan(
    const oci::v1::Process& process, const std::optional<SeccompProgram>& seccomp, int last_cap) {
  auto unsupported = [](absl::string_view field) {
    return absl::InvalidArgumentError(absl::StrCat("process.", field, " is not supported"));
  };
  if (!process.command_line().empty()) return unsupported("commandLine (Windows only)");
  if (!process.apparmor_profile().empty()) return unsupported("apparmorProfile");
  if (!process.selinux_label().empty()) return unsupported("selinuxLabel");
  if (process.has_io_priority()) return unsupported("ioPriority");
  if (process.has_scheduler()) return unsupported("scheduler");
  if (process.has_exec_cpu_affinity()) return unsupported("execCPUAffinity");
  if (!process.user().username().empty()) return unsupported("user.username (Windows only)");

  auto plan = std::make_unique<ProcessPlan>();
  if (process.args().empty() || process.args(0).empty()) {
    return absl::InvalidArgumentError("process.args is empty");
  }
  plan->args.assign(process.args().begin(), process.args().end());
  for (const std::string& var : process.env()) {
    if (var.find('=') == std::string::npos || var.front() == '=') {
      return absl::InvalidArgumentError(
          absl::StrCat("process.env: \"", var, "\" is not KEY=value"));
    }
    plan->env.push_back(var);
  }
  plan->exec_paths = ExecCandidates(plan->args[0], plan->env);
  plan->cwd = process.cwd().empty() ? "/" : process.cwd();
  if (plan->cwd.front() != '/') {
    return absl::InvalidArgumentError(
        absl::StrCat("process.cwd \"", plan->cwd, "\" is not an absolute path"));
  }
  plan->terminal = process.terminal();
  if (process.has_console_size()) {
    if (!process.terminal()) {
      return absl::InvalidArgumentError("process.consoleSize is given without process.terminal");
    }
    if (process.console_size().height() > 0xffff || process.console_size().width() > 0xffff) {
      return absl::InvalidArgumentError("process.consoleSize is too large");
    }
    plan->console_rows = static_cast<unsigned short>(process.console_size().height());
    plan->console_cols = static_cast<unsigned short>(process.console_size().width());
  }
  plan->uid = process.user().uid();
  plan->gid = process.user().gid();
  plan->additional_gids.assign(process.user().additional_gids().begin(),
                               process.user().additional_gids().end());
  if (process.user().has_umask()) {
    if (process.user().umask() > 0777) {
      return absl::InvalidArgumentError("process.user.umask is larger than 0777");
    }
    plan->umask = process.user().umask();
  }
  plan->last_cap = last_cap;
  if (process.has_capabilities()) {
    ASSIGN_OR_RETURN(plan->capabilities, CapabilitySetsFromSpec(process.capabilities(), last_cap));
  }
  plan->no_new_privileges = process.no_new_privileges();
  ASSIGN_OR_RETURN(plan->rlimits, RlimitSteps(process.rlimits()));
  if (process.has_oom_score_adj()) {
    if (process.oom_score_adj() < -1000 || process.oom_score_adj() > 1000) {
      return absl::InvalidArgumentError(absl::StrCat(
          "process.oomScoreAdj ", process.oom_score_adj(), " is out of range (-1000..1000)"));
    }
    plan->oom_score_adj = absl::StrCat(process.oom_score_adj());
  }
  plan->seccomp = seccomp;
  return plan;
}

}  // namespace kapsel::agent
