// The vhost-user wire format and the frontend against a test peer playing the backend on a
// socketpair: message layout, fd passing, REPLY_ACK, and refusal of bad replies.
#include <dirent.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <string>

#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "tests/vmm/vhost_user/backend_peer.h"
#include "vmm/vhost_user/frontend.h"
#include "vmm/vhost_user/message.h"

namespace kapsel::vmm::vhost_user {
namespace {

using testing::ReadMessage;
using testing::Reply;
using testing::ReplyU64;
using testing::SocketPair;
using testing::WriteRaw;

uint32_t U32At(const std::vector<uint8_t>& bytes, size_t at) {
  uint32_t v;
  std::memcpy(&v, bytes.data() + at, 4);
  return v;
}
uint64_t U64At(const std::vector<uint8_t>& bytes, size_t at) {
  uint64_t v;
  std::memcpy(&v, bytes.data() + at, 8);
  return v;
}

int CountOpenFds() {
  int n = 0;
  DIR* dir = opendir("/proc/self/fd");
  while (readdir(dir) != nullptr) ++n;
  closedir(dir);
  return n;
}

void ExpectMessageNames(const absl::Status& status, const std::string& needle) {
  EXPECT_FALSE(status.ok());
  EXPECT_NE(status.message().find(needle), std::string::npos)
      << "'" << status.message() << "' does not name " << needle;
}

TEST(MessageTest, HeaderLayout) {
  const std::vector<uint8_t> bytes = Encode(Request::kGetFeatures, 0, {});
  ASSERT_EQ(bytes.size(), 12u);
  EXPECT_EQ(U32At(bytes, 0), 1u);  // GET_FEATURES
  EXPECT_EQ(U32At(bytes, 4), 1u);  // version 1, no other flag
  EXPECT_EQ(U32At(bytes, 8), 0u);
  const std::vector<uint8_t> acked =
      Encode(Request::kSetVringNum, kFlagNeedReply, EncodeVringState({1, 256}));
  ASSERT_EQ(acked.size(), 20u);
  EXPECT_EQ(U32At(acked, 0), 8u);
  EXPECT_EQ(U32At(acked, 4), 1u | 8u);
  EXPECT_EQ(U32At(acked, 8), 8u);
  EXPECT_EQ(U32At(acked, 12), 1u);
  EXPECT_EQ(U32At(acked, 16), 256u);
}

TEST(MessageTest, VringAddrLayout) {
  const std::vector<uint8_t> p = EncodeVringAddr({.index = 1,
                                                  .flags = 0,
                                                  .desc_user_addr = 0x1111,
                                                  .used_user_addr = 0x2222,
                                                  .avail_user_addr = 0x3333,
                                                  .log_guest_addr = 0x4444});
  ASSERT_EQ(p.size(), 40u);
  EXPECT_EQ(U32At(p, 0), 1u);
  EXPECT_EQ(U64At(p, 8), 0x1111u);   // descriptor table
  EXPECT_EQ(U64At(p, 16), 0x2222u);  // used ring comes before the available ring
  EXPECT_EQ(U64At(p, 24), 0x3333u);
  EXPECT_EQ(U64At(p, 32), 0x4444u);
  absl::StatusOr<VringAddr> back = DecodeVringAddr(p);
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(back->avail_user_addr, 0x3333u);
  EXPECT_FALSE(DecodeVringAddr(absl::MakeConstSpan(p).subspan(1)).ok());
}

TEST(MessageTest, MemTableLayoutAndLimits) {
  std::vector<MemRegion> regions = {{0, 0x1000, 0x7f0000000000, 0},
                                    {0x100000000, 0x2000, 0x7f0000100000, 0x1000}};
  absl::StatusOr<std::vector<uint8_t>> p = EncodeMemTable(regions);
  ASSERT_TRUE(p.ok());
  ASSERT_EQ(p->size(), 8u + 2 * 32);
  EXPECT_EQ(U32At(*p, 0), 2u);
  EXPECT_EQ(U32At(*p, 4), 0u);
  EXPECT_EQ(U64At(*p, 8 + 32), 0x100000000u);
  EXPECT_EQ(U64At(*p, 8 + 32 + 8), 0x2000u);
  EXPECT_EQ(U64At(*p, 8 + 32 + 16), 0x7f0000100000u);
  EXPECT_EQ(U64At(*p, 8 + 32 + 24), 0x1000u);
  absl::StatusOr<std::vector<MemRegion>> back = DecodeMemTable(*p);
  ASSERT_TRUE(back.ok());
  ASSERT_EQ(back->size(), 2u);
  EXPECT_EQ((*back)[1].mmap_offset, 0x1000u);

  EXPECT_FALSE(EncodeMemTable({}).ok());
  std::vector<MemRegion> nine(9, regions[0]);
  EXPECT_FALSE(EncodeMemTable(nine).ok());
}

TEST(MessageTest, VringFileValue) {
  EXPECT_EQ(VringFileValue(1, true), 1u);
  EXPECT_EQ(VringFileValue(1, false), 0x101u);
}

TEST(MessageTest, CheckReplyRejectsEveryBadField) {
  const Header good{.request = 11, .flags = kVersion | kFlagReply, .size = 8};
  EXPECT_TRUE(CheckReply(good, Request::kGetVringBase, 8).ok());
  Header wrong_request = good;
  wrong_request.request = 1;
  ExpectMessageNames(CheckReply(wrong_request, Request::kGetVringBase, 8), "GET_VRING_BASE");
  ExpectMessageNames(CheckReply(wrong_request, Request::kGetVringBase, 8), "GET_FEATURES");
  Header not_reply = good;
  not_reply.flags = kVersion;
  ExpectMessageNames(CheckReply(not_reply, Request::kGetVringBase, 8), "reply flag");
  Header version2 = good;
  version2.flags = 2 | kFlagReply;
  ExpectMessageNames(CheckReply(version2, Request::kGetVringBase, 8), "version");
  Header big = good;
  big.size = 4096;
  ExpectMessageNames(CheckReply(big, Request::kGetVringBase, 8), "4096-byte");
}

class FrontendTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto [frontend_end, backend_end] = SocketPair();
    backend_ = std::move(backend_end);
    frontend_ = Frontend::FromSocket(std::move(frontend_end), {.timeout = absl::Seconds(2)});
  }

  // Negotiates REPLY_ACK (the reply to GET is queued before the call).
  void EnableReplyAck() {
    ASSERT_TRUE(frontend_->SetProtocolFeatures(uint64_t{1} << kProtocolFeatureReplyAck).ok());
    auto sent = ReadMessage(backend_.get());
    ASSERT_TRUE(sent.has_value());
    EXPECT_EQ(sent->message.request, 16u);
    EXPECT_EQ(sent->message.flags, kVersion);  // no ack for the message that enables acks
  }

  UniqueFd backend_;
  std::unique_ptr<Frontend> frontend_;
};

TEST_F(FrontendTest, GetFeaturesSendsTheRequestAndReturnsTheReply) {
  ReplyU64(backend_.get(), Request::kGetFeatures, 0x140000000);
  absl::StatusOr<uint64_t> features = frontend_->GetFeatures();
  ASSERT_TRUE(features.ok()) << features.status();
  EXPECT_EQ(*features, 0x140000000u);
  auto sent = ReadMessage(backend_.get());
  ASSERT_TRUE(sent.has_value());
  EXPECT_EQ(sent->message.request, 1u);
  EXPECT_EQ(sent->message.flags, kVersion);
  EXPECT_TRUE(sent->message.payload.empty());
  EXPECT_TRUE(sent->fds.empty());
}

TEST_F(FrontendTest, ReplyToAnotherRequestBreaksTheConnection) {
  ReplyU64(backend_.get(), Request::kGetProtocolFeatures, 1);
  absl::StatusOr<uint64_t> features = frontend_->GetFeatures();
  ExpectMessageNames(features.status(), "GET_FEATURES");
  ExpectMessageNames(features.status(), "GET_PROTOCOL_FEATURES");
  EXPECT_FALSE(frontend_->broken().ok());
  // Nothing more is sent on a stream we can no longer parse.
  absl::Status later = frontend_->SetOwner();
  ExpectMessageNames(later, "failed earlier");
  ExpectMessageNames(later, "SET_OWNER");
}

TEST_F(FrontendTest, ReplyWithoutTheReplyFlagIsRefused) {
  WriteRaw(backend_.get(), 1, kVersion, EncodeU64(1));
  ExpectMessageNames(frontend_->GetFeatures().status(), "reply flag");
}

TEST_F(FrontendTest, ReplyOfTheWrongSizeIsRefused) {
  Reply(backend_.get(), Request::kGetFeatures, {1, 2, 3, 4});
  ExpectMessageNames(frontend_->GetFeatures().status(), "4-byte payload");
  // A huge announced size is refused from the header, before any payload is read.
  auto [f, b] = SocketPair();
  auto other = Frontend::FromSocket(std::move(f), {.timeout = absl::Milliseconds(300)});
  WriteRaw(b.get(), 1, kVersion | kFlagReply, {});
  ExpectMessageNames(other->GetFeatures().status(), "0-byte payload");
  auto [f2, b2] = SocketPair();
  auto third = Frontend::FromSocket(std::move(f2), {.timeout = absl::Milliseconds(300)});
  std::vector<uint8_t> header(12);
  const uint32_t request = 1, flags = kVersion | kFlagReply, size = 0xffffffff;
  std::memcpy(header.data(), &request, 4);
  std::memcpy(header.data() + 4, &flags, 4);
  std::memcpy(header.data() + 8, &size, 4);
  ASSERT_EQ(send(b2.get(), header.data(), header.size(), 0), 12);
  ExpectMessageNames(third->GetFeatures().status(), "4294967295-byte payload");
}

TEST_F(FrontendTest, ReplyCarryingFileDescriptorsIsRefusedAndTheyAreClosed) {
  const int before = CountOpenFds();
  {
    int pipe_fds[2];
    ASSERT_EQ(pipe2(pipe_fds, O_CLOEXEC), 0);
    std::vector<uint8_t> bytes = Encode(Request::kGetFeatures, kFlagReply, EncodeU64(1));
    iovec iov{.iov_base = bytes.data(), .iov_len = bytes.size()};
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * 2)] = {};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof(control);
    cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * 2);
    std::memcpy(CMSG_DATA(c), pipe_fds, sizeof(pipe_fds));
    ASSERT_EQ(sendmsg(backend_.get(), &msg, 0), static_cast<ssize_t>(bytes.size()));
    close(pipe_fds[0]);
    close(pipe_fds[1]);
  }
  ExpectMessageNames(frontend_->GetFeatures().status(), "file descriptors");
  EXPECT_EQ(CountOpenFds(), before);
}

TEST_F(FrontendTest, BackendClosingIsAClearError) {
  backend_.reset();
  absl::Status status = frontend_->GetFeatures().status();
  EXPECT_FALSE(status.ok());
  // Either the send or the wait for the reply notices, and says the backend closed it.
  EXPECT_NE(status.message().find("closed the connection"), std::string::npos) << status;
}

TEST_F(FrontendTest, NoReplyTimesOut) {
  auto [f, b] = SocketPair();
  auto frontend = Frontend::FromSocket(std::move(f), {.timeout = absl::Milliseconds(200)});
  const absl::Time start = absl::Now();
  absl::Status status = frontend->GetVringBase(0).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kDeadlineExceeded) << status;
  ExpectMessageNames(status, "GET_VRING_BASE");
  EXPECT_LT(absl::Now() - start, absl::Seconds(2));
}

TEST_F(FrontendTest, ReplyAckIsRequestedAndChecked) {
  EnableReplyAck();
  ReplyU64(backend_.get(), Request::kSetOwner, 0);
  ASSERT_TRUE(frontend_->SetOwner().ok());
  auto sent = ReadMessage(backend_.get());
  ASSERT_TRUE(sent.has_value());
  EXPECT_EQ(sent->message.request, 3u);
  EXPECT_EQ(sent->message.flags, kVersion | kFlagNeedReply);

  // A nonzero ack is the backend refusing the message; the connection stays usable.
  ReplyU64(backend_.get(), Request::kSetVringNum, 1);
  absl::Status refused = frontend_->SetVringNum(0, 1024);
  ExpectMessageNames(refused, "rejected SET_VRING_NUM");
  EXPECT_TRUE(frontend_->broken().ok());
  ReplyU64(backend_.get(), Request::kSetVringBase, 0);
  EXPECT_TRUE(frontend_->SetVringBase(0, 0).ok());
  // Messages with replies of their own do not ask for an ack.
  ReplyU64(backend_.get(), Request::kGetFeatures, 1);
  ASSERT_TRUE(frontend_->GetFeatures().ok());
  for (int i = 0; i < 2; ++i) ASSERT_TRUE(ReadMessage(backend_.get()).has_value());
  auto get = ReadMessage(backend_.get());
  ASSERT_TRUE(get.has_value());
  EXPECT_EQ(get->message.request, 1u);
  EXPECT_EQ(get->message.flags, kVersion);
}

TEST_F(FrontendTest, WithoutReplyAckNothingIsAwaited) {
  ASSERT_TRUE(frontend_->SetOwner().ok());
  ASSERT_TRUE(frontend_->SetVringEnable(1, true).ok());
  auto owner = ReadMessage(backend_.get());
  auto enable = ReadMessage(backend_.get());
  ASSERT_TRUE(owner.has_value() && enable.has_value());
  EXPECT_EQ(owner->message.flags, kVersion);
  EXPECT_EQ(enable->message.request, 18u);
  EXPECT_EQ(U32At(enable->message.payload, 0), 1u);
  EXPECT_EQ(U32At(enable->message.payload, 4), 1u);
}

TEST_F(FrontendTest, MemTablePassesOneFdPerRegion) {
  int memfd = memfd_create("vhost-user-test", MFD_CLOEXEC);
  ASSERT_GE(memfd, 0);
  UniqueFd mem(memfd);
  std::vector<MemRegion> regions = {{0, 0x1000, 0x10000, 0}, {0x100000, 0x1000, 0x20000, 0x1000}};
  const int fds[] = {memfd, memfd};
  ASSERT_TRUE(frontend_->SetMemTable(regions, fds).ok());
  auto sent = ReadMessage(backend_.get());
  ASSERT_TRUE(sent.has_value());
  EXPECT_EQ(sent->message.request, 5u);
  ASSERT_EQ(sent->fds.size(), 2u);
  struct stat ours, theirs;
  ASSERT_EQ(fstat(memfd, &ours), 0);
  for (const UniqueFd& fd : sent->fds) {
    ASSERT_EQ(fstat(fd.get(), &theirs), 0);
    EXPECT_EQ(theirs.st_ino, ours.st_ino);
  }
  absl::StatusOr<std::vector<MemRegion>> table = DecodeMemTable(sent->message.payload);
  ASSERT_TRUE(table.ok()) << table.status();
  EXPECT_EQ((*table)[1].guest_phys_addr, 0x100000u);
  EXPECT_EQ((*table)[1].userspace_addr, 0x20000u);
  EXPECT_FALSE(frontend_->SetMemTable(regions, absl::MakeConstSpan(fds, 1)).ok());
}

TEST_F(FrontendTest, KickAndCallCarryTheRingIndexAndTheEventfd) {
  int pipe_fds[2];
  ASSERT_EQ(pipe2(pipe_fds, O_CLOEXEC), 0);
  UniqueFd r(pipe_fds[0]), w(pipe_fds[1]);
  ASSERT_TRUE(frontend_->SetVringKick(1, r.get()).ok());
  ASSERT_TRUE(frontend_->SetVringCall(0, -1).ok());
  auto kick = ReadMessage(backend_.get());
  ASSERT_TRUE(kick.has_value());
  EXPECT_EQ(kick->message.request, 12u);
  EXPECT_EQ(U64At(kick->message.payload, 0), 1u);
  ASSERT_EQ(kick->fds.size(), 1u);
  // The fd that arrived is the same pipe: what we write comes out of it.
  ASSERT_EQ(write(w.get(), "k", 1), 1);
  char c = 0;
  ASSERT_EQ(read(kick->fds[0].get(), &c, 1), 1);
  EXPECT_EQ(c, 'k');
  auto call = ReadMessage(backend_.get());
  ASSERT_TRUE(call.has_value());
  EXPECT_EQ(call->message.request, 13u);
  EXPECT_EQ(U64At(call->message.payload, 0), 0x100u);  // ring 0, no fd
  EXPECT_TRUE(call->fds.empty());
}

TEST_F(FrontendTest, GetVringBaseChecksTheRing) {
  Reply(backend_.get(), Request::kGetVringBase, EncodeVringState({1, 77}));
  absl::StatusOr<uint32_t> base = frontend_->GetVringBase(1);
  ASSERT_TRUE(base.ok()) << base.status();
  EXPECT_EQ(*base, 77u);
  Reply(backend_.get(), Request::kGetVringBase, EncodeVringState({0, 5}));
  ExpectMessageNames(frontend_->GetVringBase(1).status(), "ring 0");
}

TEST(FrontendConnectTest, ErrorsSayWhatIsMissingAndLeakNothing) {
  char dir[] = "/tmp/kapsel-vhost-user-XXXXXX";
  ASSERT_NE(mkdtemp(dir), nullptr);
  const int before = CountOpenFds();
  const std::string missing = std::string(dir) + "/missing.sock";
  absl::Status status = Frontend::Connect(missing).status();
  ExpectMessageNames(status, missing);
  ExpectMessageNames(status, "no such socket");

  // A socket file whose listener is gone.
  const std::string stale = std::string(dir) + "/stale.sock";
  {
    UniqueFd s(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strcpy(addr.sun_path, stale.c_str());
    ASSERT_EQ(bind(s.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  }
  status = Frontend::Connect(stale).status();
  ExpectMessageNames(status, "nothing listens");
  ExpectMessageNames(Frontend::Connect(std::string(200, 'x')).status(), "1..107 bytes");
  EXPECT_EQ(CountOpenFds(), before);
  unlink(stale.c_str());
  rmdir(dir);
}

}  // namespace
}  // namespace kapsel::vmm::vhost_user
