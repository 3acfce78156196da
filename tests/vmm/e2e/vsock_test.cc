// vsock end to end: kapsel-vmm with --vsock boots the real guest kernel, whose virtio-vsock
// driver talks to our device; the marker /init says hello to a host Unix listener, then echoes
// every connection on a vsock port. One boot serves every case (each boot costs seconds in the
// test host); kapsel-vmm runs jailed (--jail), so the guest's connections to the host go through
// the jail. Run through tests/testhost/e2e.
#include <signal.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/unique_fd.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/support/e2e_guest.h"
#include "tests/support/subprocess.h"

namespace kapsel {
namespace {

using ::testing::HasSubstr;

const std::string kVmm = KAPSEL_BIN_DIR "/kapsel-vmm";
const std::string kVmlinux = KAPSEL_GUEST_DIR "/vmlinux";
const std::string kInitramfs = KAPSEL_INITRAMFS;
constexpr int kEchoPort = 5000;
constexpr int kHelloPort = 6000;
constexpr char kHostReply[] = "hello from the host\n";

sockaddr_un Address(const std::string& path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", path.c_str());
  return addr;
}

UniqueFd Socket(int timeout_s = 60) {
  UniqueFd fd(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  timeval tv{timeout_s, 0};
  setsockopt(fd.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  setsockopt(fd.get(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
  return fd;
}

bool WriteAll(int fd, const char* data, size_t n) {
  while (n > 0) {
    ssize_t w = send(fd, data, n, MSG_NOSIGNAL);
    if (w <= 0) return false;
    data += w;
    n -= static_cast<size_t>(w);
  }
  return true;
}

std::string ReadLine(int fd) {
  std::string line;
  char c;
  while (line.size() < 256 && read(fd, &c, 1) == 1) {
    line.push_back(c);
    if (c == '\n') break;
  }
  return line;
}

uint8_t PatternByte(uint64_t i, uint64_t seed) {
  return static_cast<uint8_t>((i * 131 + seed * 7 + (i >> 12)) & 0xff);
}

class VsockE2eTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    char dir[] = "/tmp/kapsel-vsock-e2e-XXXXXX";
    ASSERT_NE(mkdtemp(dir), nullptr);
    dir_ = new std::string(dir);
    path_ = new std::string(*dir_ + "/vsock.sock");
    // The host listener the guest says hello to, served by a thread.
    hello_listener_ = new UniqueFd(Socket());
    sockaddr_un addr = Address(absl::StrCat(*path_, "_", kHelloPort));
    ASSERT_EQ(bind(hello_listener_->get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
    ASSERT_EQ(listen(hello_listener_->get(), 4), 0);
    hello_line_ = new std::string;
    hello_thread_ = new std::thread([] {
      UniqueFd conn(accept4(hello_listener_->get(), nullptr, nullptr, SOCK_CLOEXEC));
      if (!conn) return;
      *hello_line_ = ReadLine(conn.get());
      WriteAll(conn.get(), kHostReply, sizeof(kHostReply) - 1);
    });

    absl::StatusOr<std::unique_ptr<testing::Subprocess>> vm = testing::Subprocess::Start(
        {kVmm, "--kernel", kVmlinux, "--initrd", kInitramfs, "--mem", "256", "--vcpus",
         testing::E2eGuestVcpus(), "--vsock", absl::StrCat("3,", *path_), "--jail", "--cmdline",
         absl::StrCat("console=ttyS0 reboot=k panic=-1 quiet kapsel.vsock_hello=", kHelloPort,
                      " kapsel.vsock_echo=", kEchoPort)});
    ASSERT_TRUE(vm.ok()) << vm.status();
    vm_ = vm->release();
    ASSERT_TRUE(vm_->WaitForOutput(absl::StrCat("kapsel-guest: vsock echo port=", kEchoPort),
                                   absl::Seconds(180)))
        << "the guest did not start its echo server";
  }

  static void TearDownTestSuite() {
    if (vm_ != nullptr) {
      vm_->Signal(SIGTERM);
      testing::ProcessResult r = vm_->Wait(absl::Seconds(60));
      EXPECT_EQ(r.exit_code, 128 + SIGTERM) << r.out << r.err;
      EXPECT_THAT(r.out, HasSubstr("KAPSEL_GUEST_READY"));
      EXPECT_THAT(r.out, HasSubstr("kapsel-guest: vsock hello reply: hello from the host"))
          << r.out;
      std::fprintf(stderr, "guest console:\n%s\nkapsel-vmm stderr:\n%s\n", r.out.c_str(),
                   r.err.c_str());
      delete vm_;
    }
    // kapsel-vmm removed its listener socket.
    EXPECT_NE(access(path_->c_str(), F_OK), 0);
    shutdown(hello_listener_->get(), SHUT_RDWR);
    hello_thread_->join();
    delete hello_thread_;
    delete hello_listener_;
    unlink(absl::StrCat(*path_, "_", kHelloPort).c_str());
    rmdir(dir_->c_str());
    delete hello_line_;
    delete path_;
    delete dir_;
  }

  // Connects to the guest's `port` through the VMM; returns the socket after "OK <port>".
  static UniqueFd ConnectToGuest(int port) {
    UniqueFd fd = Socket();
    sockaddr_un addr = Address(*path_);
    EXPECT_EQ(connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
    const std::string connect_line = absl::StrCat("CONNECT ", port, "\n");
    EXPECT_TRUE(WriteAll(fd.get(), connect_line.data(), connect_line.size()));
    return fd;
  }

  // Sends `size` pattern bytes on a new echo connection and checks they come back; returns the
  // seconds it took.
  static double EchoPattern(uint64_t size, uint64_t seed) {
    UniqueFd fd = ConnectToGuest(kEchoPort);
    const std::string ok = ReadLine(fd.get());
    EXPECT_TRUE(ok.rfind("OK ", 0) == 0) << ok;
    const auto start = std::chrono::steady_clock::now();
    std::thread writer([&] {
      std::vector<char> buf(256 * 1024);
      for (uint64_t off = 0; off < size; off += buf.size()) {
        const size_t n = std::min<uint64_t>(buf.size(), size - off);
        for (size_t i = 0; i < n; ++i) buf[i] = static_cast<char>(PatternByte(off + i, seed));
        if (!WriteAll(fd.get(), buf.data(), n)) {
          ADD_FAILURE() << "write failed at " << off;
          return;
        }
      }
      shutdown(fd.get(), SHUT_WR);
    });
    uint64_t got = 0;
    uint64_t mismatches = 0;
    std::vector<char> buf(256 * 1024);
    while (true) {
      ssize_t n = read(fd.get(), buf.data(), buf.size());
      if (n <= 0) break;
      for (ssize_t i = 0; i < n; ++i) {
        if (static_cast<uint8_t>(buf[i]) != PatternByte(got + i, seed)) ++mismatches;
      }
      got += static_cast<uint64_t>(n);
    }
    writer.join();
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    EXPECT_EQ(got, size) << "echo of seed " << seed;
    EXPECT_EQ(mismatches, 0u) << "echo of seed " << seed;
    return seconds;
  }

  static std::string* dir_;
  static std::string* path_;
  static UniqueFd* hello_listener_;
  static std::string* hello_line_;
  static std::thread* hello_thread_;
  static testing::Subprocess* vm_;
};

std::string* VsockE2eTest::dir_ = nullptr;
std::string* VsockE2eTest::path_ = nullptr;
UniqueFd* VsockE2eTest::hello_listener_ = nullptr;
std::string* VsockE2eTest::hello_line_ = nullptr;
std::thread* VsockE2eTest::hello_thread_ = nullptr;
testing::Subprocess* VsockE2eTest::vm_ = nullptr;

// The line of /proc/PID/status that starts with `key`.
std::string StatusLine(pid_t pid, const std::string& key) {
  std::ifstream in(absl::StrCat("/proc/", pid, "/status"));
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(key, 0) == 0) return line;
  }
  return "";
}

std::vector<std::string> Entries(const std::string& dir) {
  std::vector<std::string> names;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
    names.push_back(entry.path().filename().string());
  }
  std::sort(names.begin(), names.end());
  return names;
}

TEST_F(VsockE2eTest, VmmRunsJailed) {
  const pid_t pid = vm_->pid();
  for (const char* set : {"CapInh:", "CapPrm:", "CapEff:", "CapBnd:", "CapAmb:"}) {
    EXPECT_EQ(StatusLine(pid, set), absl::StrCat(set, "\t0000000000000000"));
  }
  for (const char* ns : {"mnt", "net"}) {
    EXPECT_NE(std::filesystem::read_symlink(absl::StrCat("/proc/", pid, "/ns/", ns)),
              std::filesystem::read_symlink(absl::StrCat("/proc/self/ns/", ns)))
        << ns;
  }
  // Its root holds the path to the vsock socket's directory and nothing else.
  const std::string root = absl::StrCat("/proc/", pid, "/root");
  const std::filesystem::path dir(*dir_);
  EXPECT_THAT(Entries(root), ::testing::ElementsAre("tmp"));
  EXPECT_THAT(Entries(root + "/tmp"), ::testing::ElementsAre(dir.filename().string()));
  EXPECT_THAT(Entries(root + *dir_), ::testing::Contains("vsock.sock"));
}

TEST_F(VsockE2eTest, GuestSaysHelloToAHostListener) {
  // The guest connected to CID 2 port kHelloPort: our listener at PATH_6000 got its line (the
  // reply line is checked on the console at the end).
  const absl::Time deadline = absl::Now() + absl::Seconds(60);
  while (hello_line_->empty() && absl::Now() < deadline) absl::SleepFor(absl::Milliseconds(50));
  EXPECT_EQ(*hello_line_, "hello from the guest\n");
}

TEST_F(VsockE2eTest, HostToGuestEcho) {
  UniqueFd fd = ConnectToGuest(kEchoPort);
  const std::string ok = ReadLine(fd.get());
  EXPECT_TRUE(ok.rfind("OK 1073741", 0) == 0) << ok;  // ports from 2^30 = 1073741824
  const std::string message = "a short message\n";
  ASSERT_TRUE(WriteAll(fd.get(), message.data(), message.size()));
  EXPECT_EQ(ReadLine(fd.get()), message);
  shutdown(fd.get(), SHUT_WR);
  char c;
  EXPECT_EQ(read(fd.get(), &c, 1), 0);  // the echo ends, the connection closes
}

TEST_F(VsockE2eTest, ConnectWhereNothingListensIsClosed) {
  UniqueFd fd = ConnectToGuest(kEchoPort + 1);
  // No "OK": the guest answered RST, and the VMM says so before closing.
  EXPECT_EQ(ReadLine(fd.get()), "ERR the guest refused or reset the connection (RST)\n");
  char c;
  EXPECT_EQ(read(fd.get(), &c, 1), 0);
}

TEST_F(VsockE2eTest, Echo64MiB) {
  constexpr uint64_t kSize = 64ull << 20;
  const double seconds = EchoPattern(kSize, 1);
  const double mib_per_s = kSize / seconds / (1 << 20);
  std::fprintf(stderr, "vsock echo: 64 MiB each way in %.2f s: %.1f MiB/s\n", seconds, mib_per_s);
  RecordProperty("echo_mib_per_s", std::to_string(mib_per_s));
}

TEST_F(VsockE2eTest, ConcurrentConnections) {
  constexpr int kConnections = 8;
  std::vector<std::thread> threads;
  for (int i = 0; i < kConnections; ++i) {
    threads.emplace_back([i] { EchoPattern(1 << 20, 100 + i); });
  }
  for (std::thread& t : threads) t.join();
}

TEST_F(VsockE2eTest, MalformedConnectIsClosed) {
  UniqueFd fd = Socket();
  sockaddr_un addr = Address(*path_);
  ASSERT_EQ(connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  ASSERT_TRUE(WriteAll(fd.get(), "HELLO\n", 6));
  char c;
  const ssize_t n = read(fd.get(), &c, 1);
  EXPECT_TRUE(n == 0 || (n < 0 && errno == ECONNRESET));
}

}  // namespace
}  // namespace kapsel
