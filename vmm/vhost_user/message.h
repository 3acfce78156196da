// The vhost-user wire format (QEMU docs/interop/vhost-user.rst), frontend side: a 12-byte header
// (request, flags, payload size) followed by the payload, all little-endian; file descriptors
// travel as SCM_RIGHTS ancillary data on the same Unix stream socket.
//
// Only the messages kapsel-vmm sends are encoded here, and only the replies it expects are
// decoded. Every reply is checked (request code, flags, size) before its payload is used: the
// backend is another process and may be buggy or gone.
#ifndef KAPSEL_VMM_VHOST_USER_MESSAGE_H_
#define KAPSEL_VMM_VHOST_USER_MESSAGE_H_

#include <bit>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace kapsel::vmm::vhost_user {

static_assert(std::endian::native == std::endian::little,
              "vhost-user is little-endian; this encoder copies host integers as they are");

// Front-end requests (the "master" message types of the specification).
enum class Request : uint32_t {
  kGetFeatures = 1,
  kSetFeatures = 2,
  kSetOwner = 3,
  kResetOwner = 4,
  kSetMemTable = 5,
  kSetLogBase = 6,
  kSetLogFd = 7,
  kSetVringNum = 8,
  kSetVringAddr = 9,
  kSetVringBase = 10,
  kGetVringBase = 11,
  kSetVringKick = 12,
  kSetVringCall = 13,
  kSetVringErr = 14,
  kGetProtocolFeatures = 15,
  kSetProtocolFeatures = 16,
  kGetQueueNum = 17,
  kSetVringEnable = 18,
};

// "GET_FEATURES", ... ("request 99" for codes we do not know).
std::string RequestName(uint32_t request);
inline std::string RequestName(Request request) {
  return RequestName(static_cast<uint32_t>(request));
}

// Header flags: bits 0-1 are the protocol version (1), bit 2 marks a reply, bit 3 asks for a
// REPLY_ACK answer.
inline constexpr uint32_t kVersion = 1;
inline constexpr uint32_t kFlagVersionMask = 0x3;
inline constexpr uint32_t kFlagReply = 1u << 2;
inline constexpr uint32_t kFlagNeedReply = 1u << 3;

// Virtio feature bit 30: the backend speaks GET/SET_PROTOCOL_FEATURES (and rings start disabled
// until SET_VRING_ENABLE).
inline constexpr int kFeatureProtocolFeatures = 30;
// Protocol feature bits (GET_PROTOCOL_FEATURES).
inline constexpr int kProtocolFeatureMq = 0;
inline constexpr int kProtocolFeatureReplyAck = 3;
inline constexpr int kProtocolFeatureConfig = 9;

// SET_MEM_TABLE carries at most this many regions (one fd each).
inline constexpr size_t kMaxMemRegions = 8;
// The u64 of SET_VRING_KICK/CALL/ERR: bits 0-7 the ring index, bit 8 "no file descriptor".
inline constexpr uint64_t kVringIndexMask = 0xff;
inline constexpr uint64_t kVringNoFd = 1u << 8;

inline constexpr size_t kHeaderSize = 12;
// The largest payload we ever send (a full memory table) and the largest reply we accept.
inline constexpr size_t kMaxPayloadSize = 8 + kMaxMemRegions * 32;

struct Header {
  uint32_t request = 0;
  uint32_t flags = 0;
  uint32_t size = 0;
};

// struct vhost_vring_state: a ring index and a number (size or base).
struct VringState {
  uint32_t index = 0;
  uint32_t num = 0;
};

// struct vhost_vring_addr. The three ring addresses are the FRONTEND's virtual addresses
// (kapsel-vmm's mapping of guest memory), which the backend translates through the memory table's
// userspace_addr fields.
struct VringAddr {
  uint32_t index = 0;
  uint32_t flags = 0;  // bit 0: log used-ring writes (we never ask for it)
  uint64_t desc_user_addr = 0;
  uint64_t used_user_addr = 0;
  uint64_t avail_user_addr = 0;
  uint64_t log_guest_addr = 0;
};

// One region of VhostUserMemory: guest physical range, our mapping of it and its offset in the
// file descriptor sent alongside.
struct MemRegion {
  uint64_t guest_phys_addr = 0;
  uint64_t memory_size = 0;
  uint64_t userspace_addr = 0;
  uint64_t mmap_offset = 0;
};

// A whole message: header fields and payload bytes (fds travel separately).
struct Message {
  uint32_t request = 0;
  uint32_t flags = 0;
  std::vector<uint8_t> payload;
};

// Header + payload as sent on the socket (flags get the version bits).
std::vector<uint8_t> Encode(Request request, uint32_t flags, absl::Span<const uint8_t> payload);

std::vector<uint8_t> EncodeU64(uint64_t value);
std::vector<uint8_t> EncodeVringState(const VringState& state);
std::vector<uint8_t> EncodeVringAddr(const VringAddr& addr);
// Error if there are no regions or more than kMaxMemRegions.
absl::StatusOr<std::vector<uint8_t>> EncodeMemTable(absl::Span<const MemRegion> regions);
// The u64 payload of SET_VRING_KICK/CALL/ERR.
uint64_t VringFileValue(uint32_t index, bool has_fd);

// Splits the first kHeaderSize bytes into a Header.
Header DecodeHeader(absl::Span<const uint8_t> bytes);
// Checks that `header` is a version-1 reply to `request` whose payload is `expected_size`
// bytes. The error names the request.
absl::Status CheckReply(const Header& header, Request request, uint32_t expected_size);
// Payload decoders; the size must be exact.
absl::StatusOr<uint64_t> DecodeU64(absl::Span<const uint8_t> payload);
absl::StatusOr<VringState> DecodeVringState(absl::Span<const uint8_t> payload);
// Decoders for the backend side (tests and fuzzing play the backend with them).
absl::StatusOr<VringAddr> DecodeVringAddr(absl::Span<const uint8_t> payload);
absl::StatusOr<std::vector<MemRegion>> DecodeMemTable(absl::Span<const uint8_t> payload);

}  // namespace kapsel::vmm::vhost_user

#endif  // KAPSEL_VMM_VHOST_USER_MESSAGE_H_
