#include "guest-agent/container/device_filter.h"

#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "common/status.h"

namespace kapsel::agent {
namespace {

constexpr int kAllAccess = BPF_DEVCG_ACC_MKNOD | BPF_DEVCG_ACC_READ | BPF_DEVCG_ACC_WRITE;

BpfInstruction Insn(uint8_t code, uint8_t dst, uint8_t src, int16_t off, int32_t imm) {
  return BpfInstruction{code, static_cast<uint8_t>((dst & 0xf) | (src << 4)), off, imm};
}

struct ParsedRule {
  bool allow = false;
  int type = 0;  // 0: all, else BPF_DEVCG_DEV_*
  int access = kAllAccess;
  int64_t major = -1;
  int64_t minor = -1;
};

absl::StatusOr<ParsedRule> Parse(const oci::v1::DeviceCgroup& rule, int index) {
  std::string field = absl::StrCat("linux.resources.devices[", index, "]");
  ParsedRule parsed;
  parsed.allow = rule.allow();
  if (rule.type().empty() || rule.type() == "a") {
    parsed.type = 0;
  } else if (rule.type() == "c") {
    parsed.type = BPF_DEVCG_DEV_CHAR;
  } else if (rule.type() == "b") {
    parsed.type = BPF_DEVCG_DEV_BLOCK;
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat(field, ": unknown type \"", rule.type(), "\" (a, c or b)"));
  }
  if (!rule.access().empty()) {
    parsed.access = 0;
    for (char c : rule.access()) {
      if (c == 'r') {
        parsed.access |= BPF_DEVCG_ACC_READ;
      } else if (c == 'w') {
        parsed.access |= BPF_DEVCG_ACC_WRITE;
      } else if (c == 'm') {
        parsed.access |= BPF_DEVCG_ACC_MKNOD;
      } else {
        return absl::InvalidArgumentError(
            absl::StrCat(field, ": unknown access \"", rule.access(), "\" (r, w, m)"));
      }
    }
  }
  if (rule.has_major() && rule.major() >= 0) {
    if (rule.major() > 0xfff) return absl::InvalidArgumentError(field + ": invalid major");
    parsed.major = rule.major();
  }
  if (rule.has_minor() && rule.minor() >= 0) {
    if (rule.minor() > 0xfffff) return absl::InvalidArgumentError(field + ": invalid minor");
    parsed.minor = rule.minor();
  }
  return parsed;
}

long Bpf(int cmd, bpf_attr* attr) { return syscall(SYS_bpf, cmd, attr, sizeof *attr); }

}  // namespace

absl::Status CheckDeviceRules(const DeviceRules& rules) {
  for (int i = 0; i < rules.size(); ++i) RETURN_IF_ERROR(Parse(rules[i], i).status());
  return absl::OkStatus();
}

absl::StatusOr<std::vector<BpfInstruction>> CompileDeviceRules(const DeviceRules& rules) {
  std::vector<BpfInstruction> program;
  if (rules.empty()) return program;
  // r2 = type, r3 = access, r4 = major, r5 = minor (from struct bpf_cgroup_dev_ctx in r1).
  program.push_back(Insn(BPF_LDX | BPF_MEM | BPF_W, 2, 1, 0, 0));
  program.push_back(Insn(BPF_ALU64 | BPF_MOV | BPF_X, 3, 2, 0, 0));
  program.push_back(Insn(BPF_ALU64 | BPF_AND | BPF_K, 2, 0, 0, 0xffff));
  program.push_back(Insn(BPF_ALU64 | BPF_RSH | BPF_K, 3, 0, 0, 16));
  program.push_back(Insn(BPF_LDX | BPF_MEM | BPF_W, 4, 1, 4, 0));
  program.push_back(Insn(BPF_LDX | BPF_MEM | BPF_W, 5, 1, 8, 0));
  // Last match wins: test the rules from the last one back.
  for (int i = rules.size() - 1; i >= 0; --i) {
    ASSIGN_OR_RETURN(ParsedRule rule, Parse(rules[i], i));
    // Each check jumps past the block ("next") when the rule does not match.
    std::vector<BpfInstruction> block;
    std::vector<size_t> to_next;
    if (rule.type != 0) {
      to_next.push_back(block.size());
      block.push_back(Insn(BPF_JMP | BPF_JNE | BPF_K, 2, 0, 0, rule.type));
    }
    if (rule.access != kAllAccess || !rule.allow) {
      block.push_back(Insn(BPF_ALU64 | BPF_MOV | BPF_X, 6, 3, 0, 0));
      if (rule.allow) {
        // Every requested access must be covered.
        block.push_back(Insn(BPF_ALU64 | BPF_AND | BPF_K, 6, 0, 0, ~rule.access & kAllAccess));
        to_next.push_back(block.size());
        block.push_back(Insn(BPF_JMP | BPF_JNE | BPF_K, 6, 0, 0, 0));
      } else {
        // Any requested access covered denies.
        block.push_back(Insn(BPF_ALU64 | BPF_AND | BPF_K, 6, 0, 0, rule.access));
        to_next.push_back(block.size());
        block.push_back(Insn(BPF_JMP | BPF_JEQ | BPF_K, 6, 0, 0, 0));
      }
    }
    if (rule.major >= 0) {
      to_next.push_back(block.size());
      block.push_back(Insn(BPF_JMP | BPF_JNE | BPF_K, 4, 0, 0, static_cast<int32_t>(rule.major)));
    }
    if (rule.minor >= 0) {
      to_next.push_back(block.size());
      block.push_back(Insn(BPF_JMP | BPF_JNE | BPF_K, 5, 0, 0, static_cast<int32_t>(rule.minor)));
    }
    block.push_back(Insn(BPF_ALU64 | BPF_MOV | BPF_K, 0, 0, 0, rule.allow ? 1 : 0));
    block.push_back(Insn(BPF_JMP | BPF_EXIT, 0, 0, 0, 0));
    for (size_t at : to_next) block[at].off = static_cast<int16_t>(block.size() - at - 1);
    program.insert(program.end(), block.begin(), block.end());
    // A rule that matches every request (a privileged container's "a *:* rwm" allow) decides
    // alone: the earlier rules and the final default could never run, and the verifier rejects
    // unreachable instructions.
    if (to_next.empty()) return program;
  }
  program.push_back(Insn(BPF_ALU64 | BPF_MOV | BPF_K, 0, 0, 0, 1));
  program.push_back(Insn(BPF_JMP | BPF_EXIT, 0, 0, 0, 0));
  return program;
}

DeviceRules WithDefaultDevices(const DeviceRules& rules) {
  DeviceRules all = rules;
  if (rules.empty()) return all;
  struct Default {
    int64_t major;
    int64_t minor;  // -1: any
  };
  // null, zero, full, random, urandom, tty, console, ptmx, and the pty slaves.
  constexpr Default kDefaults[] = {{1, 3}, {1, 5}, {1, 7}, {1, 8},   {1, 9},
                                   {5, 0}, {5, 1}, {5, 2}, {136, -1}};
  for (const Default& d : kDefaults) {
    oci::v1::DeviceCgroup* allow = all.Add();
    allow->set_allow(true);
    allow->set_type("c");
    allow->set_major(d.major);
    if (d.minor >= 0) allow->set_minor(d.minor);
    allow->set_access("rwm");
  }
  return all;
}

absl::Status ApplyDeviceRules(const DeviceRules& spec_rules, int cgroup_fd, UniqueFd* attached) {
  const DeviceRules rules = WithDefaultDevices(spec_rules);
  ASSIGN_OR_RETURN(std::vector<BpfInstruction> program, CompileDeviceRules(rules));
  if (program.empty()) return absl::OkStatus();
  static const char kLicense[] = "Apache-2.0";
  char log[16384] = {};
  bpf_attr load;
  memset(&load, 0, sizeof load);
  load.prog_type = BPF_PROG_TYPE_CGROUP_DEVICE;
  load.insns = reinterpret_cast<uint64_t>(program.data());
  load.insn_cnt = static_cast<uint32_t>(program.size());
  load.license = reinterpret_cast<uint64_t>(kLicense);
  UniqueFd prog(static_cast<int>(Bpf(BPF_PROG_LOAD, &load)));
  if (!prog) {
    // Load again with the verifier's log, for the error (a log that does not fit its buffer
    // fails the load by itself, so the first attempt goes without).
    const int err = errno;
    load.log_buf = reinterpret_cast<uint64_t>(log);
    load.log_size = sizeof log;
    load.log_level = 1;
    UniqueFd again(static_cast<int>(Bpf(BPF_PROG_LOAD, &load)));
    return ErrnoError(
        err, absl::StrCat("linux.resources.devices: loading the cgroup device program (needs "
                          "CONFIG_CGROUP_BPF; verifier: ",
                          log, ")"));
  }
  bpf_attr attach;
  memset(&attach, 0, sizeof attach);
  attach.target_fd = static_cast<uint32_t>(cgroup_fd);
  attach.attach_bpf_fd = static_cast<uint32_t>(prog.get());
  attach.attach_type = BPF_CGROUP_DEVICE;
  attach.attach_flags = BPF_F_ALLOW_MULTI;
  if (Bpf(BPF_PROG_ATTACH, &attach) != 0) {
    return ErrnoError("linux.resources.devices: attaching the device program to the cgroup");
  }
  if (*attached) {
    bpf_attr detach;
    memset(&detach, 0, sizeof detach);
    detach.target_fd = static_cast<uint32_t>(cgroup_fd);
    detach.attach_bpf_fd = static_cast<uint32_t>(attached->get());
    detach.attach_type = BPF_CGROUP_DEVICE;
    if (Bpf(BPF_PROG_DETACH, &detach) != 0) {
      return ErrnoError("linux.resources.devices: detaching the previous device program");
    }
  }
  *attached = std::move(prog);
  return absl::OkStatus();
}

}  // namespace kapsel::agent
