// Taps for the virtio-net tests, in a private network namespace: the test process enters a new
// one first (EnterPrivateNetns), so every interface it creates disappears with the process on
// every path, even a crash. A TestTap is the tap the device gets (its fd, opened as kapsel's
// callers do) plus an AF_PACKET socket bound to it, which sees the frames the device writes and
// injects frames for the device to read.
#ifndef KAPSEL_TESTS_VMM_NET_TEST_TAP_H_
#define KAPSEL_TESTS_VMM_NET_TEST_TAP_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/unique_fd.h"

namespace kapsel::vmm::virtio::testing {

// The EtherType of the test frames (IEEE local experimental): the packet socket sees only these.
inline constexpr uint16_t kTestEtherType = 0x88b5;

// unshare(CLONE_NEWNET), with IPv6 off for new interfaces (no router solicitations or DAD frames
// on the tap). Call before any thread exists.
absl::Status EnterPrivateNetns();

// Opens a tap on /dev/net/tun with `flags` (IFF_TAP | IFF_NO_PI | IFF_VNET_HDR for the device).
absl::StatusOr<UniqueFd> CreateTap(const std::string& name, int flags);

// An Ethernet frame of `size` bytes (at least 14) with the test EtherType; payload byte i is
// (seed + i) & 0xff.
std::vector<uint8_t> TestFrame(size_t size, uint8_t seed);

class TestTap {
 public:
  // Creates tap `name`, brings it up and binds a packet socket to it.
  static absl::StatusOr<TestTap> Create(const std::string& name);

  // The device's end; moved out by the test.
  UniqueFd& fd() { return fd_; }
  const std::string& name() const { return name_; }

  // Sends `frame` into the tap (for the device to read).
  absl::Status Inject(const std::vector<uint8_t>& frame);
  // The next test frame the device wrote to the tap, waiting up to timeout_ms; empty if none.
  std::vector<uint8_t> Receive(int timeout_ms);

 private:
  TestTap(UniqueFd fd, UniqueFd packet, std::string name)
      : fd_(std::move(fd)), packet_(std::move(packet)), name_(std::move(name)) {}

  UniqueFd fd_;
  UniqueFd packet_;
  std::string name_;
};

}  // namespace kapsel::vmm::virtio::testing

#endif  // KAPSEL_TESTS_VMM_NET_TEST_TAP_H_
