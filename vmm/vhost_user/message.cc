#include "vmm/vhost_user/message.h"

#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace kapsel::vmm::vhost_user {
namespace {

void Put32(std::vector<uint8_t>& out, uint32_t value) {
  const size_t at = out.size();
  out.resize(at + sizeof(value));
  std::memcpy(out.data() + at, &value, sizeof(value));
}

void Put64(std::vector<uint8_t>& out, uint64_t value) {
  const size_t at = out.size();
  out.resize(at + sizeof(value));
  std::memcpy(out.data() + at, &value, sizeof(value));
}

uint32_t Get32(absl::Span<const uint8_t> bytes, size_t at) {
  uint32_t value;
  std::memcpy(&value, bytes.data() + at, sizeof(value));
  return value;
}

uint64_t Get64(absl::Span<const uint8_t> bytes, size_t at) {
  uint64_t value;
  std::memcpy(&value, bytes.data() + at, sizeof(value));
  return value;
}

absl::Status CheckSize(absl::Span<const uint8_t> payload, size_t want, const char* what) {
  if (payload.size() != want) {
    return absl::InvalidArgumentError(
        absl::StrFormat("vhost-user: %s payload is %d bytes, want %d", what, payload.size(), want));
  }
  return absl::OkStatus();
}

constexpr size_t kVringStateSize = 8;
constexpr size_t kVringAddrSize = 40;
constexpr size_t kMemRegionSize = 32;
constexpr size_t kMemTableHeaderSize = 8;

}  // namespace

std::string RequestName(uint32_t request) {
  switch (static_cast<Request>(request)) {
    case Request::kGetFeatures:
      return "GET_FEATURES";
    case Request::kSetFeatures:
      return "SET_FEATURES";
    case Request::kSetOwner:
      return "SET_OWNER";
    case Request::kResetOwner:
      return "RESET_OWNER";
    case Request::kSetMemTable:
      return "SET_MEM_TABLE";
    case Request::kSetLogBase:
      return "SET_LOG_BASE";
    case Request::kSetLogFd:
      return "SET_LOG_FD";
    case Request::kSetVringNum:
      return "SET_VRING_NUM";
    case Request::kSetVringAddr:
      return "SET_VRING_ADDR";
    case Request::kSetVringBase:
      return "SET_VRING_BASE";
    case Request::kGetVringBase:
      return "GET_VRING_BASE";
    case Request::kSetVringKick:
      return "SET_VRING_KICK";
    case Request::kSetVringCall:
      return "SET_VRING_CALL";
    case Request::kSetVringErr:
      return "SET_VRING_ERR";
    case Request::kGetProtocolFeatures:
      return "GET_PROTOCOL_FEATURES";
    case Request::kSetProtocolFeatures:
      return "SET_PROTOCOL_FEATURES";
    case Request::kGetQueueNum:
      return "GET_QUEUE_NUM";
    case Request::kSetVringEnable:
      return "SET_VRING_ENABLE";
  }
  return absl::StrCat("request ", request);
}

std::vector<uint8_t> Encode(Request request, uint32_t flags, absl::Span<const uint8_t> payload) {
  std::vector<uint8_t> out;
  out.reserve(kHeaderSize + payload.size());
  Put32(out, static_cast<uint32_t>(request));
  Put32(out, (flags & ~kFlagVersionMask) | kVersion);
  Put32(out, static_cast<uint32_t>(payload.size()));
  out.insert(out.end(), payload.begin(), payload.end());
  return out;
}

std::vector<uint8_t> EncodeU64(uint64_t value) {
  std::vector<uint8_t> out;
  Put64(out, value);
  return out;
}

std::vector<uint8_t> EncodeVringState(const VringState& state) {
  std::vector<uint8_t> out;
  Put32(out, state.index);
  Put32(out, state.num);
  return out;
}

std::vector<uint8_t> EncodeVringAddr(const VringAddr& addr) {
  std::vector<uint8_t> out;
  Put32(out, addr.index);
  Put32(out, addr.flags);
  Put64(out, addr.desc_user_addr);
  Put64(out, addr.used_user_addr);
  Put64(out, addr.avail_user_addr);
  Put64(out, addr.log_guest_addr);
  return out;
}

absl::StatusOr<std::vector<uint8_t>> EncodeMemTable(absl::Span<const MemRegion> regions) {
  if (regions.empty() || regions.size() > kMaxMemRegions) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "vhost-user: SET_MEM_TABLE with %d regions (want 1..%d)", regions.size(), kMaxMemRegions));
  }
  std::vector<uint8_t> out;
  Put32(out, static_cast<uint32_t>(regions.size()));
  Put32(out, 0);  // padding
  for (const MemRegion& r : regions) {
    Put64(out, r.guest_phys_addr);
    Put64(out, r.memory_size);
    Put64(out, r.userspace_addr);
    Put64(out, r.mmap_offset);
  }
  return out;
}

uint64_t VringFileValue(uint32_t index, bool has_fd) {
  return (uint64_t{index} & kVringIndexMask) | (has_fd ? 0 : kVringNoFd);
}

Header DecodeHeader(absl::Span<const uint8_t> bytes) {
  Header header;
  if (bytes.size() < kHeaderSize) return header;
  header.request = Get32(bytes, 0);
  header.flags = Get32(bytes, 4);
  header.size = Get32(bytes, 8);
  return header;
}

absl::Status CheckReply(const Header& header, Request request, uint32_t expected_size) {
  const std::string name = RequestName(request);
  if (header.request != static_cast<uint32_t>(request)) {
    return absl::DataLossError(absl::StrCat("vhost-user: the backend answered ", name, " with a ",
                                            RequestName(header.request), " message"));
  }
  if ((header.flags & kFlagVersionMask) != kVersion) {
    return absl::DataLossError(absl::StrFormat("vhost-user: reply to %s has protocol version %d",
                                               name, header.flags & kFlagVersionMask));
  }
  if ((header.flags & kFlagReply) == 0) {
    return absl::DataLossError(absl::StrFormat(
        "vhost-user: reply to %s lacks the reply flag (flags %#x)", name, header.flags));
  }
  if (header.size != expected_size) {
    return absl::DataLossError(
        absl::StrFormat("vhost-user: reply to %s has a %d-byte payload, want %d", name, header.size,
                        expected_size));
  }
  return absl::OkStatus();
}

absl::StatusOr<uint64_t> DecodeU64(absl::Span<const uint8_t> payload) {
  if (absl::Status s = CheckSize(payload, sizeof(uint64_t), "u64"); !s.ok()) return s;
  return Get64(payload, 0);
}

absl::StatusOr<VringState> DecodeVringState(absl::Span<const uint8_t> payload) {
  if (absl::Status s = CheckSize(payload, kVringStateSize, "vring state"); !s.ok()) return s;
  return VringState{.index = Get32(payload, 0), .num = Get32(payload, 4)};
}

absl::StatusOr<VringAddr> DecodeVringAddr(absl::Span<const uint8_t> payload) {
  if (absl::Status s = CheckSize(payload, kVringAddrSize, "vring address"); !s.ok()) return s;
  VringAddr addr;
  addr.index = Get32(payload, 0);
  addr.flags = Get32(payload, 4);
  addr.desc_user_addr = Get64(payload, 8);
  addr.used_user_addr = Get64(payload, 16);
  addr.avail_user_addr = Get64(payload, 24);
  addr.log_guest_addr = Get64(payload, 32);
  return addr;
}

absl::StatusOr<std::vector<MemRegion>> DecodeMemTable(absl::Span<const uint8_t> payload) {
  if (payload.size() < kMemTableHeaderSize) {
    return absl::InvalidArgumentError("vhost-user: memory table shorter than its header");
  }
  const uint32_t n = Get32(payload, 0);
  if (n == 0 || n > kMaxMemRegions) {
    return absl::InvalidArgumentError(
        absl::StrCat("vhost-user: memory table with ", n, " regions"));
  }
  if (absl::Status s = CheckSize(payload, kMemTableHeaderSize + n * kMemRegionSize, "memory table");
      !s.ok()) {
    return s;
  }
  std::vector<MemRegion> regions;
  for (uint32_t i = 0; i < n; ++i) {
    const size_t at = kMemTableHeaderSize + i * kMemRegionSize;
    regions.push_back({.guest_phys_addr = Get64(payload, at),
                       .memory_size = Get64(payload, at + 8),
                       .userspace_addr = Get64(payload, at + 16),
                       .mmap_offset = Get64(payload, at + 24)});
  }
  return regions;
}

}  // namespace kapsel::vmm::vhost_user
