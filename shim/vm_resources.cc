#include "shim/vm_resources.h"

#include <optional>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace kapsel::shim {
namespace {

using Annotations = google::protobuf::Map<std::string, std::string>;

constexpr char kKapselVmPrefix[] = "io.kapsel.vm.";
constexpr uint64_t kMib = 1024 * 1024;

// A plain decimal integer: digits with an optional leading '-' (no spaces, no '+'), in range of
// int64. SimpleAtoi alone would also take surrounding whitespace and a '+'.
std::optional<int64_t> ParseDecimal(absl::string_view text) {
  absl::string_view digits = text;
  if (absl::StartsWith(digits, "-")) digits.remove_prefix(1);
  if (digits.empty()) return std::nullopt;
  for (char c : digits) {
    if (!absl::ascii_isdigit(static_cast<unsigned char>(c))) return std::nullopt;
  }
  int64_t value = 0;
  if (!absl::SimpleAtoi(text, &value)) return std::nullopt;
  return value;
}

absl::Status BadAnnotation(const std::string& key, const std::string& value,
                           const std::string& want) {
  return absl::InvalidArgumentError(
      absl::StrCat("annotation ", key, "=\"", absl::CEscape(value), "\": want ", want));
}

// io.kapsel.vm.<key>: an integer in [min, max], or nullopt when absent.
absl::StatusOr<std::optional<uint32_t>> ExplicitSize(const Annotations& annotations,
                                                     const std::string& key, uint32_t min,
                                                     uint32_t max, const char* unit) {
  auto it = annotations.find(key);
  if (it == annotations.end()) return std::nullopt;
  std::optional<int64_t> value = ParseDecimal(it->second);
  if (!value.has_value() || *value < min || *value > max) {
    return BadAnnotation(key, it->second, absl::StrCat("an integer from ", min, " to ", max, unit));
  }
  return static_cast<uint32_t>(*value);
}

// A CRI sizing annotation (written by containerd, FormatInt/FormatUint): an integer, or nullopt
// when absent.
absl::StatusOr<std::optional<int64_t>> CriInteger(const Annotations& annotations,
                                                  const std::string& key, bool allow_negative) {
  auto it = annotations.find(key);
  if (it == annotations.end()) return std::nullopt;
  std::optional<int64_t> value = ParseDecimal(it->second);
  if (!value.has_value() || (!allow_negative && *value < 0)) {
    return BadAnnotation(key, it->second, allow_negative ? "an integer" : "a non-negative integer");
  }
  return value;
}

// a / b rounded up (b > 0).
uint64_t CeilDiv(uint64_t a, uint64_t b) { return a / b + (a % b != 0 ? 1 : 0); }

// `base` + `add` (from `who`: the pod or the container), at most `max`; the source says how it
// was reached.
uint32_t AddClamped(uint32_t base, uint64_t add, uint32_t max, const char* who,
                    const std::string& what, std::string* source) {
  const uint64_t sum = add > max ? uint64_t{max} + 1 : base + add;
  *source = absl::StrCat("config ", base, " + ", who, " ", add, " (", what, ")");
  if (sum > max) {
    absl::StrAppend(source, ", clamped to the maximum ", max);
    return max;
  }
  return static_cast<uint32_t>(sum);
}

}  // namespace

std::string VmResources::ToString() const {
  return absl::StrCat(vcpus, vcpus == 1 ? " vCPU (" : " vCPUs (", vcpus_source, "), ", memory_mib,
                      " MiB (", memory_source, ")");
}

ContainerLimits OwnLimits(const oci::v1::Spec& spec) {
  auto type = spec.annotations().find(kCriContainerTypeAnnotation);
  if (type != spec.annotations().end() && type->second == "sandbox") return {};
  const oci::v1::Resources& resources = spec.linux().resources();
  return {.memory_bytes = resources.memory().limit(),
          .cpu_quota = resources.cpu().quota(),
          .cpu_period = resources.cpu().period()};
}

absl::StatusOr<VmResources> SizeVm(const Config& config, const Annotations& annotations,
                                   const ContainerLimits& limits) {
  for (const auto& [key, value] : annotations) {
    if (absl::StartsWith(key, kKapselVmPrefix) && key != kVcpusAnnotation &&
        key != kMemoryMibAnnotation) {
      return absl::InvalidArgumentError(absl::StrCat("unknown annotation ", key,
                                                     " (known: ", kVcpusAnnotation, ", ",
                                                     kMemoryMibAnnotation, ")"));
    }
  }
  VmResources resources{config.vcpus, config.memory_mib, "config", "config"};

  // containerd >= 1.7 only: 1.6 (what the end-to-end tests run) does not write these, so the
  // unit tests are all that covers them.
  absl::StatusOr<std::optional<int64_t>> memory =
      CriInteger(annotations, kCriSandboxMemoryAnnotation, /*allow_negative=*/true);
  if (!memory.ok()) return memory.status();
  // What the pod adds (its CRI sums) or else, for a container alone in its VM, the container.
  if (memory->has_value() && **memory > 0) {
    resources.memory_mib = AddClamped(
        config.memory_mib, CeilDiv(static_cast<uint64_t>(**memory), kMib), config.max_memory_mib,
        "pod", absl::StrCat(kCriSandboxMemoryAnnotation, ", MiB"), &resources.memory_source);
  } else if (limits.memory_bytes > 0) {
    resources.memory_mib =
        AddClamped(config.memory_mib, CeilDiv(static_cast<uint64_t>(limits.memory_bytes), kMib),
                   config.max_memory_mib, "container", "linux.resources.memory.limit, MiB",
                   &resources.memory_source);
  }
  absl::StatusOr<std::optional<int64_t>> quota =
      CriInteger(annotations, kCriSandboxCpuQuotaAnnotation, /*allow_negative=*/true);
  if (!quota.ok()) return quota.status();
  absl::StatusOr<std::optional<int64_t>> period =
      CriInteger(annotations, kCriSandboxCpuPeriodAnnotation, /*allow_negative=*/false);
  if (!period.ok()) return period.status();
  if (quota->has_value() && period->has_value() && **quota > 0 && **period > 0) {
    resources.vcpus = AddClamped(
        config.vcpus, CeilDiv(static_cast<uint64_t>(**quota), static_cast<uint64_t>(**period)),
        config.max_vcpus, "pod",
        absl::StrCat(kCriSandboxCpuQuotaAnnotation, " / ", kCriSandboxCpuPeriodAnnotation,
                     ", rounded up"),
        &resources.vcpus_source);
  } else if (limits.cpu_quota > 0 && limits.cpu_period > 0) {
    resources.vcpus = AddClamped(
        config.vcpus, CeilDiv(static_cast<uint64_t>(limits.cpu_quota), limits.cpu_period),
        config.max_vcpus, "container", "linux.resources.cpu.quota / period, rounded up",
        &resources.vcpus_source);
  }

  // Explicit sizes win.
  absl::StatusOr<std::optional<uint32_t>> vcpus =
      ExplicitSize(annotations, kVcpusAnnotation, 1, config.max_vcpus, "");
  if (!vcpus.ok()) return vcpus.status();
  if (vcpus->has_value()) {
    resources.vcpus = **vcpus;
    resources.vcpus_source = absl::StrCat("annotation ", kVcpusAnnotation);
  }
  absl::StatusOr<std::optional<uint32_t>> mib =
      ExplicitSize(annotations, kMemoryMibAnnotation, 64, config.max_memory_mib, " (MiB)");
  if (!mib.ok()) return mib.status();
  if (mib->has_value()) {
    resources.memory_mib = **mib;
    resources.memory_source = absl::StrCat("annotation ", kMemoryMibAnnotation);
  }
  return resources;
}

}  // namespace kapsel::shim
