// The guest image's /init until the guest agent takes its place: a tiny static program that checks
// the microVM's hardware from inside and powers the VM off. It prints one line per finding, then a
// final marker line with the uptime:
//   kapsel-guest: cpus=2
//   kapsel-guest: rng=<32 hex digits>          (16 bytes from virtio-rng)
//   kapsel-guest: disk vda: <first line>       (the first sector of each virtio disk)
//   kapsel-guest: root /dev/root ext4 ro,relatime,dax=always  (the mount on /: source type options)
//   KAPSEL_GUEST_READY uptime=0.42
// Command line switches: kapsel.write_disk (write "written by the guest" to sector 1 of vda and
// flush), kapsel.exit_init (return from init instead of powering off: the kernel panics),
// kapsel.hold (stay up after the marker until the VM is stopped from outside), kapsel.net_up
// (before the marker, bring every network interface but lo up, so its driver posts its rx
// buffers; print "kapsel-guest: net up <name>").
// vsock, after the marker: kapsel.vsock_hello=PORT (connect to the host, CID 2, at PORT, send
// "hello from the guest\n", print "kapsel-guest: vsock hello reply: <line>"), then
// kapsel.vsock_echo=PORT (listen on PORT, print "kapsel-guest: vsock echo port=PORT", echo every
// connection until its end of file, one process each, until the VM is stopped from outside).
#include <dirent.h>
#include <fcntl.h>
#include <net/if.h>
#include <signal.h>
#include <sys/socket.h>
// clang-format off: needs sys/socket.h first
#include <linux/vm_sockets.h>
// clang-format on
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

namespace {

std::string ReadFile(const char* path, size_t max = 4096) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return "";
  std::string data(max, '\0');
  ssize_t n = read(fd, data.data(), max);
  close(fd);
  data.resize(n > 0 ? static_cast<size_t>(n) : 0);
  return data;
}

std::string FirstLine(const std::string& s) {
  std::string line;
  for (char c : s) {
    if (c == '\n' || c == '\0') break;
    line.push_back(std::isprint(static_cast<unsigned char>(c)) ? c : '.');
  }
  return line;
}

void Mount(const char* source, const char* target, const char* type) {
  mkdir(target, 0755);
  if (mount(source, target, type, 0, nullptr) != 0) {
    std::printf("kapsel-guest: mount %s on %s failed: %s\n", type, target, std::strerror(errno));
  }
}

int CountCpus() {
  // "0" or "0-3" or "0,2-3".
  std::string online = FirstLine(ReadFile("/sys/devices/system/cpu/online"));
  int count = 0;
  size_t pos = 0;
  while (pos < online.size()) {
    size_t comma = online.find(',', pos);
    std::string part =
        online.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
    size_t dash = part.find('-');
    if (dash == std::string::npos) {
      ++count;
    } else {
      count += std::atoi(part.c_str() + dash + 1) - std::atoi(part.c_str()) + 1;
    }
    if (comma == std::string::npos) break;
    pos = comma + 1;
  }
  return count;
}

// The mount on / (the last one there): its source, type and options.
void ReportRoot() {
  const std::string mounts = ReadFile("/proc/self/mounts");
  std::string root;
  size_t start = 0;
  while (start < mounts.size()) {
    size_t end = mounts.find('\n', start);
    if (end == std::string::npos) end = mounts.size();
    const std::string line = mounts.substr(start, end - start);
    start = end + 1;
    char source[256], target[256], type[64], options[1024];
    if (std::sscanf(line.c_str(), "%255s %255s %63s %1023s", source, target, type, options) == 4 &&
        std::strcmp(target, "/") == 0) {
      root = std::string(source) + " " + type + " " + options;
    }
  }
  std::printf("kapsel-guest: root %s\n", root.c_str());
}

void ReportRng() {
  int fd = open("/dev/hwrng", O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    std::printf("kapsel-guest: rng unavailable: %s\n", std::strerror(errno));
    return;
  }
  unsigned char bytes[16];
  ssize_t n = read(fd, bytes, sizeof(bytes));
  close(fd);
  std::printf("kapsel-guest: rng=");
  for (ssize_t i = 0; i < n; ++i) std::printf("%02x", bytes[i]);
  std::printf("\n");
}

void ReportDisks(bool write_disk) {
  for (char letter = 'a'; letter <= 'h'; ++letter) {
    std::string dev = std::string("/dev/vd") + letter;
    int fd = open(dev.c_str(), O_RDWR | O_CLOEXEC);
    if (fd < 0) fd = open(dev.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return;
    char sector[512];
    ssize_t n = pread(fd, sector, sizeof(sector), 0);
    std::printf("kapsel-guest: disk vd%c: %s\n", letter,
                n > 0 ? FirstLine(std::string(sector, n)).c_str() : "(unreadable)");
    if (write_disk && letter == 'a') {
      char out[512] = "written by the guest\n";
      bool ok = pwrite(fd, out, sizeof(out), 512) == sizeof(out) && fsync(fd) == 0;
      std::printf("kapsel-guest: disk vda write: %s\n", ok ? "ok" : std::strerror(errno));
    }
    close(fd);
  }
}

void NetUp() {
  DIR* dir = opendir("/sys/class/net");
  if (dir == nullptr) return;
  const int sock = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  while (dirent* entry = readdir(dir)) {
    const std::string name = entry->d_name;
    if (name == "." || name == ".." || name == "lo" || name.size() >= IFNAMSIZ) continue;
    ifreq request{};
    std::memcpy(request.ifr_name, name.c_str(), name.size());
    bool ok = sock >= 0 && ioctl(sock, SIOCGIFFLAGS, &request) == 0;
    request.ifr_flags |= IFF_UP;
    ok = ok && ioctl(sock, SIOCSIFFLAGS, &request) == 0;
    std::printf("kapsel-guest: net up %s: %s\n", name.c_str(), ok ? "ok" : std::strerror(errno));
  }
  if (sock >= 0) close(sock);
  closedir(dir);
}

// The value of "NAME=VALUE" on the command line, or -1.
long FlagNumber(const std::string& cmdline, const std::string& name) {
  const std::string key = name + "=";
  size_t pos = cmdline.find(key);
  while (pos != std::string::npos && pos != 0 && cmdline[pos - 1] != ' ') {
    pos = cmdline.find(key, pos + 1);
  }
  if (pos == std::string::npos) return -1;
  return std::strtol(cmdline.c_str() + pos + key.size(), nullptr, 10);
}

sockaddr_vm VsockAddress(unsigned cid, long port) {
  sockaddr_vm addr{};
  addr.svm_family = AF_VSOCK;
  addr.svm_cid = cid;
  addr.svm_port = static_cast<unsigned>(port);
  return addr;
}

bool WriteAll(int fd, const char* data, size_t n) {
  while (n > 0) {
    ssize_t w = write(fd, data, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return false;
    data += w;
    n -= static_cast<size_t>(w);
  }
  return true;
}

void VsockHello(long port) {
  int fd = socket(AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_vm addr = VsockAddress(VMADDR_CID_HOST, port);
  if (fd < 0 || connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    std::printf("kapsel-guest: vsock hello failed: %s\n", std::strerror(errno));
    if (fd >= 0) close(fd);
    return;
  }
  const char hello[] = "hello from the guest\n";
  WriteAll(fd, hello, sizeof(hello) - 1);
  std::string line;
  char c;
  while (line.size() < 256 && read(fd, &c, 1) == 1 && c != '\n') line.push_back(c);
  close(fd);
  std::printf("kapsel-guest: vsock hello reply: %s\n", FirstLine(line).c_str());
}

void Echo(int fd) {
  static char buf[64 * 1024];
  while (true) {
    ssize_t n = read(fd, buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0 || !WriteAll(fd, buf, static_cast<size_t>(n))) return;
  }
}

[[noreturn]] void VsockEcho(long port) {
  signal(SIGCHLD, SIG_IGN);  // connection processes are reaped by the kernel
  int listener = socket(AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_vm addr = VsockAddress(VMADDR_CID_ANY, port);
  if (listener < 0 || bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      listen(listener, 64) != 0) {
    std::printf("kapsel-guest: vsock echo failed: %s\n", std::strerror(errno));
  } else {
    std::printf("kapsel-guest: vsock echo port=%ld\n", port);
  }
  std::fflush(stdout);
  while (true) {
    int fd = listener >= 0 ? accept4(listener, nullptr, nullptr, SOCK_CLOEXEC) : -1;
    if (fd < 0) {
      pause();
      continue;
    }
    if (fork() == 0) {
      Echo(fd);
      _exit(0);
    }
    close(fd);
  }
}

}  // namespace

int main() {
  mkdir("/dev", 0755);
  mount("devtmpfs", "/dev", "devtmpfs", 0, nullptr);
  int console = open("/dev/console", O_RDWR);
  if (console >= 0) {
    for (int fd = 0; fd < 3; ++fd) dup2(console, fd);
    if (console > 2) close(console);
  }
  setvbuf(stdout, nullptr, _IOLBF, 0);
  Mount("proc", "/proc", "proc");
  Mount("sysfs", "/sys", "sysfs");

  const std::string cmdline = ReadFile("/proc/cmdline");
  auto has_flag = [&cmdline](const char* flag) {
    size_t pos = cmdline.find(flag);
    if (pos == std::string::npos) return false;
    char after = cmdline[pos + std::strlen(flag)];
    return (pos == 0 || cmdline[pos - 1] == ' ') && (after == ' ' || after == '\n' || after == 0);
  };

  std::printf("kapsel-guest: cpus=%d\n", CountCpus());
  ReportRng();
  ReportRoot();
  ReportDisks(has_flag("kapsel.write_disk"));
  if (has_flag("kapsel.net_up")) NetUp();
  std::string uptime = ReadFile("/proc/uptime");
  std::printf("KAPSEL_GUEST_READY uptime=%s\n", uptime.substr(0, uptime.find(' ')).c_str());
  std::fflush(stdout);

  if (long port = FlagNumber(cmdline, "kapsel.vsock_hello"); port >= 0) VsockHello(port);
  if (long port = FlagNumber(cmdline, "kapsel.vsock_echo"); port >= 0) VsockEcho(port);
  std::fflush(stdout);

  if (has_flag("kapsel.exit_init")) return 1;  // the kernel panics: "Attempted to kill init"
  while (has_flag("kapsel.hold")) pause();
  sync();
  reboot(RB_AUTOBOOT);  // with reboot=k: the i8042 reset line, which stops the VMM
  return 0;
}
