// Request/Response encoding, status mapping and Unix socket addresses.
#include <cstddef>
#include <cstring>

#include "common/ttrpc/address.h"
#include "common/ttrpc/proto/ttrpc.pb.h"
#include "common/ttrpc/request_codec.h"
#include "gtest/gtest.h"

namespace kapsel::ttrpc {
namespace {

Frame RequestFrame(uint32_t stream_id, const std::string& data) {
  Frame frame;
  frame.header = {static_cast<uint32_t>(data.size()), stream_id,
                  static_cast<uint8_t>(MessageType::kRequest), 0};
  frame.data = data;
  return frame;
}

TEST(RequestCodecTest, RequestRoundTrip) {
  Metadata metadata = {{"containerd-namespace-ttrpc", "k8s.io"}, {"k", "1"}, {"k", "2"}};
  absl::StatusOr<std::string> data =
      EncodeRequest("svc.S", "M", std::string("p\0q", 3), absl::Milliseconds(1500), metadata);
  ASSERT_TRUE(data.ok()) << data.status();

  // The wire fields, as a Go peer sees them.
  ::ttrpc::Request proto;
  ASSERT_TRUE(proto.ParseFromString(*data));
  EXPECT_EQ(proto.service(), "svc.S");
  EXPECT_EQ(proto.method(), "M");
  EXPECT_EQ(proto.timeout_nano(), 1'500'000'000);
  ASSERT_EQ(proto.metadata_size(), 3);
  EXPECT_EQ(proto.metadata(2).value(), "2");

  absl::Time now = absl::FromUnixSeconds(1000);
  absl::StatusOr<InboundRequest> request = DecodeRequestFrame(RequestFrame(7, *data), now);
  ASSERT_TRUE(request.ok()) << request.status();
  EXPECT_EQ(request->stream_id, 7u);
  EXPECT_EQ(request->payload, std::string("p\0q", 3));
  EXPECT_EQ(request->context.service, "svc.S");
  EXPECT_EQ(request->context.method, "M");
  EXPECT_EQ(request->context.metadata, metadata);
  EXPECT_EQ(request->context.deadline, now + absl::Milliseconds(1500));
  EXPECT_EQ(MetadataValues(request->context.metadata, "k"), (std::vector<std::string>{"1", "2"}));
  EXPECT_EQ(FirstMetadataValue(request->context.metadata, kNamespaceMetadataKey), "k8s.io");
  EXPECT_EQ(FirstMetadataValue(request->context.metadata, "none"), std::nullopt);
}

TEST(RequestCodecTest, NoTimeoutMeansNoDeadline) {
  absl::StatusOr<std::string> data = EncodeRequest("s", "m", "", absl::InfiniteDuration(), {});
  ASSERT_TRUE(data.ok());
  ::ttrpc::Request proto;
  ASSERT_TRUE(proto.ParseFromString(*data));
  EXPECT_EQ(proto.timeout_nano(), 0);
  absl::StatusOr<InboundRequest> request = DecodeRequestFrame(RequestFrame(1, *data), absl::Now());
  ASSERT_TRUE(request.ok());
  EXPECT_EQ(request->context.deadline, absl::InfiniteFuture());
}

TEST(RequestCodecTest, BadFramesGiveTheStatusToAnswer) {
  std::string valid = *EncodeRequest("s", "m", "", absl::InfiniteDuration(), {});
  Frame wrong_type = RequestFrame(1, valid);
  wrong_type.header.type = 2;
  EXPECT_TRUE(absl::IsInvalidArgument(DecodeRequestFrame(wrong_type, absl::Now()).status()));
  EXPECT_TRUE(
      absl::IsInvalidArgument(DecodeRequestFrame(RequestFrame(2, valid), absl::Now()).status()));
  EXPECT_TRUE(absl::IsInvalidArgument(
      DecodeRequestFrame(RequestFrame(1, "\xff\xff\xff\xff"), absl::Now()).status()));
  Frame oversized = RequestFrame(1, "");
  oversized.header.length = kMaxMessageSize + 1;
  oversized.oversized = true;
  EXPECT_TRUE(absl::IsResourceExhausted(DecodeRequestFrame(oversized, absl::Now()).status()));
}

TEST(RequestCodecTest, OversizedRequestIsRefused) {
  EXPECT_TRUE(absl::IsResourceExhausted(
      EncodeRequest("s", "m", std::string(kMaxMessageSize, 'x'), absl::InfiniteDuration(), {})
          .status()));
}

TEST(RequestCodecTest, ResponseCarriesStatusOrPayload) {
  absl::StatusOr<std::string> ok = DecodeResponse(EncodeResponse(absl::OkStatus(), "payload"));
  ASSERT_TRUE(ok.ok());
  EXPECT_EQ(*ok, "payload");
  absl::StatusOr<std::string> error =
      DecodeResponse(EncodeResponse(absl::NotFoundError("no such container"), "ignored"));
  EXPECT_EQ(error.status(), absl::NotFoundError("no such container"));
  // Go's ttrpc sends status code 0 for success; an absent status is success too.
  ::ttrpc::Response bare;
  bare.set_payload("x");
  EXPECT_EQ(*DecodeResponse(bare.SerializeAsString()), "x");
  EXPECT_FALSE(DecodeResponse("\xff\xff").ok());
  // A response too big for a frame becomes ResourceExhausted.
  std::string huge = EncodeResponse(absl::OkStatus(), std::string(kMaxMessageSize, 'h'));
  EXPECT_LE(huge.size(), kMaxMessageSize);
  EXPECT_TRUE(absl::IsResourceExhausted(DecodeResponse(huge).status()));
}

TEST(RequestCodecTest, StatusCodes) {
  for (int code = 1; code <= 16; ++code) {
    absl::Status status(static_cast<absl::StatusCode>(code), "m");
    EXPECT_EQ(StatusFromProto(StatusToProto(status)), status);
  }
  google::rpc::Status odd;
  odd.set_code(99);
  odd.set_message("strange");
  EXPECT_TRUE(absl::IsUnknown(StatusFromProto(odd)));
  odd.set_code(-3);
  EXPECT_TRUE(absl::IsUnknown(StatusFromProto(odd)));
}

TEST(AddressTest, Forms) {
  for (const char* address : {"unix:///run/a.sock", "unix:/run/a.sock", "/run/a.sock"}) {
    absl::StatusOr<UnixAddress> parsed = ParseUnixAddress(address);
    ASSERT_TRUE(parsed.ok()) << address << ": " << parsed.status();
    EXPECT_STREQ(parsed->addr.sun_path, "/run/a.sock") << address;
    EXPECT_EQ(parsed->length, offsetof(sockaddr_un, sun_path) + 12);
  }
  for (const char* address : {"@kapsel", "unix://@kapsel"}) {
    absl::StatusOr<UnixAddress> parsed = ParseUnixAddress(address);
    ASSERT_TRUE(parsed.ok()) << address;
    EXPECT_EQ(parsed->addr.sun_path[0], '\0');
    EXPECT_EQ(std::memcmp(parsed->addr.sun_path + 1, "kapsel", 6), 0);
    EXPECT_EQ(parsed->length, offsetof(sockaddr_un, sun_path) + 7);
  }
  EXPECT_FALSE(ParseUnixAddress("").ok());
  EXPECT_FALSE(ParseUnixAddress("unix://").ok());
  EXPECT_FALSE(ParseUnixAddress("vsock://3:1024").ok());
  EXPECT_FALSE(ParseUnixAddress(std::string(200, 'p')).ok());
}

}  // namespace
}  // namespace kapsel::ttrpc
