// The frontend ("master") end of one vhost-user connection: a Unix stream socket to a backend
// process (virtiofsd for virtio-fs) that runs a device's virtqueues in guest memory we share with
// it. Each call sends one message and, where the protocol has one, waits for the reply, which is
// checked (request code, flags, size) before use.
//
// With VHOST_USER_PROTOCOL_F_REPLY_ACK negotiated, every message without a reply of its own asks
// for an acknowledgement, so a backend that rejects a message (or dies while handling it) is
// reported at that message rather than later.
//
// A transport failure (timeout, short read, malformed reply) leaves the byte stream in an unknown
// state: the connection is then "broken" and every later call fails with the first error.
//
// Not thread-safe: the owner serializes calls.
#ifndef KAPSEL_VMM_VHOST_USER_FRONTEND_H_
#define KAPSEL_VMM_VHOST_USER_FRONTEND_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "common/unique_fd.h"
#include "vmm/vhost_user/message.h"

namespace kapsel::vmm::vhost_user {

struct FrontendOptions {
  // How long a reply (or room in the socket buffer) may take before the backend is considered
  // hung. GET_VRING_BASE waits for the backend to finish the ring's in-flight requests.
  absl::Duration timeout = absl::Seconds(10);
};

class Frontend {
 public:
  // Connects to the backend listening on `path`. Errors say whether nothing listens there.
  static absl::StatusOr<std::unique_ptr<Frontend>> Connect(const std::string& path,
                                                           FrontendOptions options = {});
  // Takes an already-connected stream socket (tests use a socketpair).
  static std::unique_ptr<Frontend> FromSocket(UniqueFd socket, FrontendOptions options = {});

  Frontend(const Frontend&) = delete;
  Frontend& operator=(const Frontend&) = delete;

  // The socket, for watching it for hang-up (never read it outside these calls).
  int socket_fd() const { return socket_.get(); }
  // The first transport error (OK while the connection is usable).
  const absl::Status& broken() const { return broken_; }

  absl::StatusOr<uint64_t> GetFeatures();
  absl::Status SetFeatures(uint64_t features);
  absl::StatusOr<uint64_t> GetProtocolFeatures();
  // Also decides whether later messages ask for REPLY_ACK (if `features` has it).
  absl::Status SetProtocolFeatures(uint64_t features);
  absl::Status SetOwner();
  // How many rings the backend supports (only with VHOST_USER_PROTOCOL_F_MQ negotiated).
  absl::StatusOr<uint64_t> GetQueueNum();
  // One fd per region (the same fd may appear several times).
  absl::Status SetMemTable(absl::Span<const MemRegion> regions, absl::Span<const int> fds);
  absl::Status SetVringNum(uint32_t index, uint32_t num);
  absl::Status SetVringAddr(const VringAddr& addr);
  absl::Status SetVringBase(uint32_t index, uint32_t base);
  // Stops the ring and returns the next available index the backend would have used.
  absl::StatusOr<uint32_t> GetVringBase(uint32_t index);
  // The eventfd the backend reads for the ring's notifications (kick) / writes when it used
  // buffers (call).
  absl::Status SetVringKick(uint32_t index, int fd);
  absl::Status SetVringCall(uint32_t index, int fd);
  absl::Status SetVringEnable(uint32_t index, bool enable);

 private:
  Frontend(UniqueFd socket, FrontendOptions options)
      : socket_(std::move(socket)), options_(options) {}

  // Sends one message (with `fds` as SCM_RIGHTS) and, when `ack` is set and REPLY_ACK was
  // negotiated, waits for the acknowledgement.
  absl::Status SendRequest(Request request, absl::Span<const uint8_t> payload,
                           absl::Span<const int> fds, bool ack);
  // Waits for the reply to `request` and returns its payload of exactly `size` bytes.
  absl::StatusOr<std::vector<uint8_t>> ReceiveReply(Request request, uint32_t size);
  absl::Status WriteAll(Request request, absl::Span<const uint8_t> bytes, absl::Span<const int> fds,
                        absl::Time deadline);
  absl::Status ReadAll(Request request, absl::Span<uint8_t> bytes, absl::Time deadline);
  // Marks the connection broken with `status` and returns it.
  absl::Status Break(absl::Status status);

  UniqueFd socket_;
  FrontendOptions options_;
  bool reply_ack_ = false;
  absl::Status broken_;
};

}  // namespace kapsel::vmm::vhost_user

#endif  // KAPSEL_VMM_VHOST_USER_FRONTEND_H_
