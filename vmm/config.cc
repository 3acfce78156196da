#include "vmm/config.h"

#include <fcntl.h>
#include <getopt.h>
#include <sys/stat.h>

#include <fstream>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "google/protobuf/util/json_util.h"

namespace kapsel::vmm {
namespace {

enum Option {
  kKernel = 1000,
  kInitrd,
  kCmdline,
  kMem,
  kVcpus,
  kDisk,
  kConsole,
  kConfig,
  kAllowPvm,
  kVsock,
  kFs,
  kNet,
  kFreePageReporting,
  kPrivateKernel,
  kHelp,
  kNoSeccomp,
  kPmem,
  kJail,
};

const option kOptions[] = {
    {"kernel", required_argument, nullptr, kKernel},
    {"initrd", required_argument, nullptr, kInitrd},
    {"cmdline", required_argument, nullptr, kCmdline},
    {"mem", required_argument, nullptr, kMem},
    {"vcpus", required_argument, nullptr, kVcpus},
    {"disk", required_argument, nullptr, kDisk},
    {"console", required_argument, nullptr, kConsole},
    {"config", required_argument, nullptr, kConfig},
    {"allow-pvm", no_argument, nullptr, kAllowPvm},
    {"vsock", required_argument, nullptr, kVsock},
    {"fs", required_argument, nullptr, kFs},
    {"net", required_argument, nullptr, kNet},
    {"free-page-reporting", no_argument, nullptr, kFreePageReporting},
    {"private-kernel", no_argument, nullptr, kPrivateKernel},
    {"help", no_argument, nullptr, kHelp},
    {"no-seccomp", no_argument, nullptr, kNoSeccomp},
    {"pmem", required_argument, nullptr, kPmem},
    {"jail", no_argument, nullptr, kJail},
    {nullptr, 0, nullptr, 0},
};

absl::StatusOr<uint32_t> ParseNumber(const char* flag, const char* value) {
  uint32_t n;
  if (!absl::SimpleAtoi(value, &n)) {
    return absl::InvalidArgumentError(absl::StrCat("--", flag, ": '", value, "' is not a number"));
  }
  return n;
}

absl::StatusOr<v1::DiskConfig> ParseDisk(absl::string_view value) {
  std::vector<std::string> parts = absl::StrSplit(value, ',');
  v1::DiskConfig disk;
  disk.set_path(parts[0]);
  if (disk.path().empty()) return absl::InvalidArgumentError("--disk: empty path");
  for (size_t i = 1; i < parts.size(); ++i) {
    if (parts[i] == "ro") {
      disk.set_read_only(true);
    } else if (parts[i] != "rw") {
      return absl::InvalidArgumentError(
          absl::StrCat("--disk ", value, ": unknown option '", parts[i], "' (want ro or rw)"));
    }
  }
  return disk;
}

// "PATH[,root]".
absl::StatusOr<v1::PmemConfig> ParsePmem(absl::string_view value) {
  std::vector<std::string> parts = absl::StrSplit(value, ',');
  v1::PmemConfig pmem;
  pmem.set_path(parts[0]);
  if (pmem.path().empty()) return absl::InvalidArgumentError("--pmem: empty path");
  for (size_t i = 1; i < parts.size(); ++i) {
    if (parts[i] != "root") {
      return absl::InvalidArgumentError(
          absl::StrCat("--pmem ", value, ": unknown option '", parts[i], "' (want root)"));
    }
    pmem.set_root(true);
  }
  return pmem;
}

// "CID,PATH".
absl::StatusOr<v1::VsockConfig> ParseVsock(absl::string_view value) {
  const size_t comma = value.find(',');
  if (comma == absl::string_view::npos) {
    return absl::InvalidArgumentError(absl::StrCat("--vsock ", value, ": want CID,PATH"));
  }
  uint32_t cid;
  if (!absl::SimpleAtoi(value.substr(0, comma), &cid)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--vsock ", value, ": '", value.substr(0, comma), "' is not a CID"));
  }
  v1::VsockConfig vsock;
  vsock.set_guest_cid(cid);
  vsock.set_uds_path(std::string(value.substr(comma + 1)));
  return vsock;
}

absl::Status ValidateVsock(const v1::VsockConfig& vsock) {
  if (vsock.guest_cid() < kMinGuestCid || vsock.guest_cid() == UINT32_MAX) {
    return absl::InvalidArgumentError(absl::StrCat("--vsock: guest CID ", vsock.guest_cid(),
                                                   " is reserved (want ", kMinGuestCid, "..",
                                                   UINT32_MAX - 1, ")"));
  }
  const std::string& path = vsock.uds_path();
  if (path.empty()) return absl::InvalidArgumentError("--vsock: empty socket path");
  // Room for "_<port>" (up to 11 bytes) in sockaddr_un's 108-byte sun_path.
  if (path.size() > kMaxVsockPathLength) {
    return absl::InvalidArgumentError(
        absl::StrCat("--vsock ", path, ": longer than ", kMaxVsockPathLength, " bytes"));
  }
  const size_t slash = path.rfind('/');
  const std::string dir =
      slash == std::string::npos ? "." : (slash == 0 ? "/" : path.substr(0, slash));
  struct stat st;
  if (stat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--vsock ", path, ": directory ", dir, " does not exist"));
  }
  return absl::OkStatus();
}

// "TAG,SOCKET".
absl::StatusOr<v1::FsConfig> ParseFs(absl::string_view value) {
  const size_t comma = value.find(',');
  if (comma == absl::string_view::npos) {
    return absl::InvalidArgumentError(absl::StrCat("--fs ", value, ": want TAG,SOCKET"));
  }
  v1::FsConfig fs;
  fs.set_tag(std::string(value.substr(0, comma)));
  fs.set_socket_path(std::string(value.substr(comma + 1)));
  return fs;
}

absl::Status ValidateFs(const v1::FsConfig& fs) {
  if (fs.tag().empty() || fs.tag().size() > kMaxFsTagLength) {
    return absl::InvalidArgumentError(absl::StrCat("--fs ", fs.tag(), ",", fs.socket_path(),
                                                   ": the tag must have 1..", kMaxFsTagLength,
                                                   " bytes"));
  }
  if (fs.tag().find('\0') != std::string::npos) {
    return absl::InvalidArgumentError("--fs: the tag contains a NUL byte");
  }
  // sockaddr_un's sun_path holds 107 bytes and a NUL.
  if (fs.socket_path().empty() || fs.socket_path().size() > 107) {
    return absl::InvalidArgumentError(absl::StrCat("--fs ", fs.tag(), ",", fs.socket_path(),
                                                   ": the socket path must have 1..107 bytes"));
  }
  return absl::OkStatus();
}

// "fd=N,mac=MAC[,mtu=M]" or "tap=NAME,mac=MAC[,mtu=M]".
absl::StatusOr<v1::NetConfig> ParseNet(absl::string_view value) {
  auto error = [value](absl::string_view why) {
    return absl::InvalidArgumentError(absl::StrCat("--net ", value, ": ", why));
  };
  v1::NetConfig net;
  bool have_fd = false, have_tap = false, have_mac = false, have_mtu = false;
  for (absl::string_view part : absl::StrSplit(value, ',')) {
    const size_t eq = part.find('=');
    if (eq == absl::string_view::npos) {
      return error(absl::StrCat("'", part, "' is not KEY=VALUE (want fd=, tap=, mac=, mtu=)"));
    }
    const absl::string_view key = part.substr(0, eq);
    const absl::string_view val = part.substr(eq + 1);
    bool* seen = key == "fd"    ? &have_fd
                 : key == "tap" ? &have_tap
                 : key == "mac" ? &have_mac
                 : key == "mtu" ? &have_mtu
                                : nullptr;
    if (seen == nullptr) {
      return error(absl::StrCat("unknown key '", key, "' (want fd, tap, mac, mtu)"));
    }
    if (*seen) return error(absl::StrCat("'", key, "' given twice"));
    *seen = true;
    if (key == "fd") {
      int32_t fd;
      if (!absl::SimpleAtoi(val, &fd) || fd < 0) {
        return error(absl::StrCat("'", val, "' is not a file descriptor number"));
      }
      net.set_tap_fd(fd);
    } else if (key == "tap") {
      if (val.empty()) return error("empty tap name");
      net.set_tap_name(std::string(val));
    } else if (key == "mac") {
      net.set_mac(std::string(val));
    } else {
      uint32_t mtu;
      if (!absl::SimpleAtoi(val, &mtu) || mtu == 0) {
        return error(absl::StrCat("'", val, "' is not an MTU"));
      }
      net.set_mtu(mtu);
    }
  }
  if (have_fd == have_tap) return error("want exactly one of fd=N and tap=NAME");
  if (!have_mac) return error("mac=MAC is required");
  return net;
}

// How a NetConfig reads on the command line, for errors.
std::string NetFlag(const v1::NetConfig& net) {
  std::string s = net.tap_name().empty() ? absl::StrCat("fd=", net.tap_fd())
                                         : absl::StrCat("tap=", net.tap_name());
  absl::StrAppend(&s, ",mac=", net.mac());
  if (net.mtu() != 0) absl::StrAppend(&s, ",mtu=", net.mtu());
  return s;
}

absl::Status ValidateNet(const v1::NetConfig& net) {
  auto error = [&net](absl::string_view why) {
    return absl::InvalidArgumentError(absl::StrCat("--net ", NetFlag(net), ": ", why));
  };
  if (!net.tap_name().empty()) {
    if (net.tap_fd() != 0) return error("want exactly one of fd=N and tap=NAME");
    if (net.tap_name().size() > kMaxTapNameLength) {
      return error(absl::StrCat("the tap name is longer than ", kMaxTapNameLength, " bytes"));
    }
    if (net.tap_name().find_first_of(std::string("/: \t\n\0", 6)) != std::string::npos ||
        net.tap_name() == "." || net.tap_name() == "..") {
      return error(absl::StrCat("'", net.tap_name(), "' is not an interface name"));
    }
  } else {
    if (net.tap_fd() <= STDERR_FILENO) {
      return error(absl::StrCat("want an inherited tap fd of 3 or more (fd ", net.tap_fd(),
                                net.tap_fd() >= 0 ? " is standard I/O)" : " is not an fd)"));
    }
    if (fcntl(net.tap_fd(), F_GETFD) < 0) {
      return error(absl::StrCat("fd ", net.tap_fd(), " is not open"));
    }
  }
  absl::StatusOr<std::array<uint8_t, 6>> mac = ParseMac(net.mac());
  if (!mac.ok()) return error(mac.status().message());
  if (net.mtu() != 0 && (net.mtu() < kMinNetMtu || net.mtu() > kMaxNetMtu)) {
    return error(absl::StrCat("MTU ", net.mtu(), " out of range ", kMinNetMtu, "..", kMaxNetMtu));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::array<uint8_t, 6>> ParseMac(absl::string_view text) {
  const auto bad = [text](absl::string_view why) {
    return absl::InvalidArgumentError(absl::StrCat("MAC address '", text, "' ", why));
  };
  std::array<uint8_t, 6> mac{};
  std::vector<absl::string_view> parts = absl::StrSplit(text, ':');
  if (parts.size() != mac.size()) return bad("is not of the form aa:bb:cc:dd:ee:ff");
  for (size_t i = 0; i < mac.size(); ++i) {
    int value = 0;
    if (parts[i].size() != 2) return bad("is not of the form aa:bb:cc:dd:ee:ff");
    for (char c : parts[i]) {
      int digit;
      if (c >= '0' && c <= '9') {
        digit = c - '0';
      } else if (c >= 'a' && c <= 'f') {
        digit = c - 'a' + 10;
      } else if (c >= 'A' && c <= 'F') {
        digit = c - 'A' + 10;
      } else {
        return bad("is not of the form aa:bb:cc:dd:ee:ff");
      }
      value = value * 16 + digit;
    }
    mac[i] = static_cast<uint8_t>(value);
  }
  if ((mac[0] & 1) != 0) return bad("is a multicast address");
  if (mac == std::array<uint8_t, 6>{}) return bad("is all zeros");
  return mac;
}

std::string Usage() {
  return absl::StrCat(
      "usage: kapsel-vmm --kernel FILE [--initrd FILE] [--cmdline TEXT] [--mem MIB] [--vcpus N]\n"
      "                  [--disk PATH[,ro]]... [--console stdout|off|FILE] [--config FILE.json]\n"
      "                  [--vsock CID,PATH] [--fs TAG,SOCKET]...\n"
      "                  [--net fd=N|tap=NAME,mac=MAC[,mtu=M]]... [--free-page-reporting]\n"
      "                  [--private-kernel] [--pmem PATH[,root]] [--jail] [--allow-pvm]\n"
      "Boots a Linux kernel in a KVM microVM. Exit status: 0 guest powered off or rebooted,\n"
      "1 VMM error, 2 bad arguments, 3 guest panic, 4 guest triple fault, 5 KVM error,\n"
      "128+N stopped by signal N.\n"
      "  --mem      guest memory in MiB (default ",
      kDefaultMemMib, ", ", kMinMemMib, "..", kMaxMemMib,
      ")\n"
      "  --vcpus    number of vCPUs (default 1, at most ",
      kMaxVcpus,
      ")\n"
      "  --cmdline  kernel command line (default \"",
      kDefaultCmdline,
      "\");\n"
      "             virtio-mmio device entries are appended\n"
      "  --vsock    a virtio-vsock device: guest CID (3 or more) and a Unix socket path; host\n"
      "             programs connect to PATH and send \"CONNECT <port>\\n\", the guest reaches\n"
      "             host port N at PATH_N\n"
      "  --fs       a virtio-fs device the guest mounts as TAG (1..36 bytes), served by the\n"
      "             vhost-user backend (virtiofsd) already listening on SOCKET (repeatable)\n"
      "  --net      a virtio-net device on a tap: fd=N, an inherited open tap fd (opened with\n"
      "             IFF_TAP|IFF_NO_PI|IFF_VNET_HDR), or tap=NAME, a tap kapsel-vmm opens or\n"
      "             creates in its network namespace; mac=aa:bb:cc:dd:ee:ff; mtu=M offers the\n"
      "             guest an MTU (repeatable, at most ",
      kMaxNetDevices,
      ")\n"
      "  --jail     once the VM is built, confine kapsel-vmm (needs root): a mount namespace\n"
      "             whose root is an empty read-only tmpfs holding only the --vsock socket's\n"
      "             directory, a network namespace of its own, no capabilities\n"
      "  --no-seccomp  run without the seccomp filter that confines kapsel-vmm once the VM is\n"
      "             built (debugging only)\n"
      "  --free-page-reporting  a virtio-balloon device that only takes the guest's free page\n"
      "             reports: memory the guest frees goes back to the host\n"
      "  --pmem     persistent memory from a file (size a multiple of 2 MiB) above guest RAM,\n"
      "             copy-on-write: the guest's /dev/pmem0, whose pages VMs mapping the same file\n"
      "             share (the file must not be changed in place while VMs run); root boots from\n"
      "             it (root=/dev/pmem0 rootflags=dax ro rootwait: ext4 with 4 KiB blocks)\n"
      "  --private-kernel  copy an ELF kernel's text into guest memory; by default its pages\n"
      "             are mapped copy-on-write from the kernel file, shared with every VM that\n"
      "             boots it (the file must not be changed in place while VMs run)\n");
}

absl::StatusOr<v1::VmConfig> ReadConfigFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::InvalidArgumentError(absl::StrCat("--config: cannot read ", path));
  std::stringstream text;
  text << in.rdbuf();
  v1::VmConfig config;
  google::protobuf::util::JsonParseOptions options;
  options.ignore_unknown_fields = false;
  auto status = google::protobuf::util::JsonStringToMessage(text.str(), &config, options);
  if (!status.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--config ", path, ": ", std::string(status.message())));
  }
  return config;
}

absl::StatusOr<v1::VmConfig> ParseCommandLine(int argc, char** argv, bool* help) {
  *help = false;
  // First pass: only --config, so that the other flags override the file.
  v1::VmConfig config;
  for (int i = 1; i < argc; ++i) {
    absl::string_view arg = argv[i];
    std::string path;
    if (arg == "--config" && i + 1 < argc) {
      path = argv[i + 1];
    } else if (absl::StartsWith(arg, "--config=")) {
      path = std::string(arg.substr(9));
    } else {
      continue;
    }
    absl::StatusOr<v1::VmConfig> file = ReadConfigFile(path);
    if (!file.ok()) return file.status();
    config = *std::move(file);
  }

  // optind = 0 (not 1) makes glibc reinitialize getopt completely: otherwise it may resume inside
  // a short-option cluster of an earlier call's argv. The leading ':' in the option string makes
  // a missing value return ':' rather than '?'.
  optind = 0;
  opterr = 0;
  int option;
  while ((option = getopt_long(argc, argv, ":", kOptions, nullptr)) != -1) {
    switch (option) {
      case kKernel:
        config.set_kernel(optarg);
        break;
      case kInitrd:
        config.set_initrd(optarg);
        break;
      case kCmdline:
        config.set_cmdline(optarg);
        break;
      case kMem: {
        absl::StatusOr<uint32_t> n = ParseNumber("mem", optarg);
        if (!n.ok()) return n.status();
        config.set_mem_mib(*n);
        break;
      }
      case kVcpus: {
        absl::StatusOr<uint32_t> n = ParseNumber("vcpus", optarg);
        if (!n.ok()) return n.status();
        config.set_vcpus(*n);
        break;
      }
      case kDisk: {
        absl::StatusOr<v1::DiskConfig> disk = ParseDisk(optarg);
        if (!disk.ok()) return disk.status();
        *config.add_disks() = *std::move(disk);
        break;
      }
      case kConsole:
        config.set_console(optarg);
        break;
      case kConfig:
        break;  // read above
      case kAllowPvm:
        config.set_allow_pvm(true);
        break;
      case kFreePageReporting:
        config.set_free_page_reporting(true);
        break;
      case kPrivateKernel:
        config.set_private_kernel(true);
        break;
      case kVsock: {
        absl::StatusOr<v1::VsockConfig> vsock = ParseVsock(optarg);
        if (!vsock.ok()) return vsock.status();
        *config.mutable_vsock() = *std::move(vsock);
        break;
      }
      case kFs: {
        absl::StatusOr<v1::FsConfig> fs = ParseFs(optarg);
        if (!fs.ok()) return fs.status();
        *config.add_fs() = *std::move(fs);
        break;
      }
      case kNet: {
        absl::StatusOr<v1::NetConfig> net = ParseNet(optarg);
        if (!net.ok()) return net.status();
        *config.add_net() = *std::move(net);
        break;
      }
      case kHelp:
        *help = true;
        return config;
      case kNoSeccomp:
        config.set_no_seccomp(true);
        break;
      case kJail:
        config.set_jail(true);
        break;
      case kPmem: {
        absl::StatusOr<v1::PmemConfig> pmem = ParsePmem(optarg);
        if (!pmem.ok()) return pmem.status();
        *config.mutable_pmem() = *std::move(pmem);
        break;
      }
      case ':':
        return absl::InvalidArgumentError(absl::StrCat(argv[optind - 1], " needs a value"));
      default:
        // optopt is the character of an unknown short option (which may sit inside a cluster
        // such as -xy, where argv[optind - 1] is not the current argument).
        if (optopt > 0 && optopt < 256) {
          return absl::InvalidArgumentError(
              absl::StrCat("unknown argument '-", std::string(1, static_cast<char>(optopt)), "'"));
        }
        return absl::InvalidArgumentError(
            absl::StrCat("unknown argument '", argv[optind - 1], "'"));
    }
  }
  if (optind < argc) {
    return absl::InvalidArgumentError(absl::StrCat("unexpected argument '", argv[optind], "'"));
  }
  return Validate(std::move(config));
}

absl::StatusOr<v1::VmConfig> Validate(v1::VmConfig config) {
  if (config.kernel().empty()) return absl::InvalidArgumentError("--kernel is required");
  if (config.mem_mib() == 0) config.set_mem_mib(kDefaultMemMib);
  if (config.mem_mib() < kMinMemMib || config.mem_mib() > kMaxMemMib) {
    return absl::InvalidArgumentError(
        absl::StrCat("--mem ", config.mem_mib(), ": want ", kMinMemMib, "..", kMaxMemMib, " MiB"));
  }
  if (config.vcpus() == 0) config.set_vcpus(1);
  if (config.vcpus() > kMaxVcpus) {
    return absl::InvalidArgumentError(
        absl::StrCat("--vcpus ", config.vcpus(), ": want 1..", kMaxVcpus));
  }
  if (config.cmdline().empty()) config.set_cmdline(kDefaultCmdline);
  if (config.console().empty()) config.set_console("stdout");
  constexpr size_t kMaxDisks = 8;
  if (static_cast<size_t>(config.disks_size()) > kMaxDisks) {
    return absl::InvalidArgumentError(absl::StrCat("--disk: at most ", kMaxDisks, " disks"));
  }
  for (const v1::DiskConfig& disk : config.disks()) {
    if (disk.path().empty()) return absl::InvalidArgumentError("--disk: empty path");
  }
  if (config.has_pmem() && config.pmem().path().empty()) {
    return absl::InvalidArgumentError("--pmem: empty path");
  }
  if (config.has_pmem() && config.pmem().root() && !config.initrd().empty()) {
    return absl::InvalidArgumentError(
        "--pmem ...,root with --initrd: the initramfs's /init would run, not the root image's");
  }
  if (config.has_vsock()) {
    absl::Status vsock = ValidateVsock(config.vsock());
    if (!vsock.ok()) return vsock;
    if (config.jail() && config.vsock().uds_path()[0] != '/') {
      return absl::InvalidArgumentError(
          absl::StrCat("--vsock ", config.vsock().uds_path(),
                       ": with --jail the path must be absolute (the jail keeps its directory)"));
    }
  }
  if (static_cast<size_t>(config.fs_size()) > kMaxFsDevices) {
    return absl::InvalidArgumentError(absl::StrCat("--fs: at most ", kMaxFsDevices, " devices"));
  }
  for (int i = 0; i < config.fs_size(); ++i) {
    absl::Status fs = ValidateFs(config.fs(i));
    if (!fs.ok()) return fs;
    for (int j = 0; j < i; ++j) {
      if (config.fs(j).tag() == config.fs(i).tag()) {
        return absl::InvalidArgumentError(
            absl::StrCat("--fs: the tag '", config.fs(i).tag(), "' is used twice"));
      }
    }
  }
  if (static_cast<size_t>(config.net_size()) > kMaxNetDevices) {
    return absl::InvalidArgumentError(absl::StrCat("--net: at most ", kMaxNetDevices, " devices"));
  }
  for (int i = 0; i < config.net_size(); ++i) {
    const v1::NetConfig& net = config.net(i);
    absl::Status status = ValidateNet(net);
    if (!status.ok()) return status;
    for (int j = 0; j < i; ++j) {
      const v1::NetConfig& other = config.net(j);
      if (net.tap_name().empty() ? other.tap_fd() == net.tap_fd()
                                 : other.tap_name() == net.tap_name()) {
        return absl::InvalidArgumentError(
            absl::StrCat("--net ", NetFlag(net), ": the same tap is given twice"));
      }
      if (*ParseMac(other.mac()) == *ParseMac(net.mac())) {
        return absl::InvalidArgumentError(
            absl::StrCat("--net ", NetFlag(net), ": the MAC address is used twice"));
      }
    }
  }
  return config;
}

}  // namespace kapsel::vmm
