// Reading a VmConfig from the command line and from a JSON file, with defaults and validation.
#ifndef KAPSEL_VMM_CONFIG_H_
#define KAPSEL_VMM_CONFIG_H_

#include <array>
#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "vmm/config.pb.h"

namespace kapsel::vmm {

inline constexpr uint32_t kDefaultMemMib = 256;
inline constexpr uint32_t kMinMemMib = 32;
inline constexpr uint32_t kMaxMemMib = 256 * 1024;
inline constexpr uint32_t kMaxVcpus = 32;
inline constexpr uint32_t kMinGuestCid = 3;
// sockaddr_un holds 107 path bytes; the guest-to-host sockets append "_<port>" (up to 11).
inline constexpr size_t kMaxVsockPathLength = 96;
// virtio-fs: the tag field of the device's configuration space; at most this many devices.
inline constexpr size_t kMaxFsTagLength = 36;
inline constexpr size_t kMaxFsDevices = 8;
// virtio-net: at most this many devices; MTU range when one is given.
inline constexpr size_t kMaxNetDevices = 4;
inline constexpr uint32_t kMinNetMtu = 68;
inline constexpr uint32_t kMaxNetMtu = 65535 - 14;
// Interface names hold IFNAMSIZ - 1 bytes.
inline constexpr size_t kMaxTapNameLength = 15;
inline constexpr char kDefaultCmdline[] = "console=ttyS0 reboot=k panic=-1 quiet";

// The usage text for --help and usage errors.
std::string Usage();

// Parses argv (flags documented in Usage()). --config F is read first; flags override or add to it.
// Errors (InvalidArgument) name the flag or the file that was wrong. Sets *help when --help is
// given.
absl::StatusOr<v1::VmConfig> ParseCommandLine(int argc, char** argv, bool* help);

// Reads a VmConfig from a JSON file (field names as in config.proto, snake_case or lowerCamelCase).
absl::StatusOr<v1::VmConfig> ReadConfigFile(const std::string& path);

// Parses a MAC address "aa:bb:cc:dd:ee:ff" (hex, either case); refuses multicast and all-zero
// addresses.
absl::StatusOr<std::array<uint8_t, 6>> ParseMac(absl::string_view text);

// Fills defaults and checks ranges; errors name the field.
absl::StatusOr<v1::VmConfig> Validate(v1::VmConfig config);

}  // namespace kapsel::vmm

#endif  // KAPSEL_VMM_CONFIG_H_
