#include "shim/shim_args.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace kapsel::shim {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

TEST(ShimArgsTest, ParsesContainerdStartCommandLine) {
  // As containerd 1.6 runs it (recorded by a probe shim).
  absl::StatusOr<ShimArgs> args =
      ParseShimArgs({"containerd-shim-kapsel-v2", "-namespace", "default", "-address",
                     "/run/containerd/containerd.sock", "-publish-binary", "/usr/bin/containerd",
                     "-id", "c1", "-debug", "start"});
  ASSERT_TRUE(args.ok()) << args.status();
  EXPECT_EQ(args->ns, "default");
  EXPECT_EQ(args->address, "/run/containerd/containerd.sock");
  EXPECT_EQ(args->publish_binary, "/usr/bin/containerd");
  EXPECT_EQ(args->id, "c1");
  EXPECT_TRUE(args->debug);
  EXPECT_EQ(args->action, "start");
  // Serving re-executes with the same flags and no action.
  EXPECT_THAT(args->flags,
              ElementsAre("-namespace", "default", "-address", "/run/containerd/containerd.sock",
                          "-publish-binary", "/usr/bin/containerd", "-id", "c1", "-debug"));
}

TEST(ShimArgsTest, DeleteWithBundleAndEqualsSyntax) {
  absl::StatusOr<ShimArgs> args =
      ParseShimArgs({"shim", "--namespace=k8s.io", "-id=c2", "-bundle", "/b", "delete"});
  ASSERT_TRUE(args.ok()) << args.status();
  EXPECT_EQ(args->ns, "k8s.io");
  EXPECT_EQ(args->id, "c2");
  EXPECT_EQ(args->bundle, "/b");
  EXPECT_EQ(args->action, "delete");
}

TEST(ShimArgsTest, ErrorsNameTheProblem) {
  EXPECT_THAT(
      ParseShimArgs({"shim", "-namespace", "n", "-id", "x", "-bogus", "1"}).status().message(),
      HasSubstr("-bogus"));
  EXPECT_THAT(ParseShimArgs({"shim", "-namespace", "n", "-id"}).status().message(),
              HasSubstr("-id needs a value"));
  EXPECT_THAT(ParseShimArgs({"shim", "-id", "x"}).status().message(), HasSubstr("-namespace"));
  EXPECT_THAT(ParseShimArgs({"shim", "-namespace", "n", "-id", "x", "stop"}).status().message(),
              HasSubstr("'stop'"));
}

TEST(ShimArgsTest, SocketAddressIsStableAndDistinct) {
  const std::string a = ShimSocketAddress("/run/kapsel", "/run/containerd.sock", "ns", "pod1");
  EXPECT_EQ(a, ShimSocketAddress("/run/kapsel", "/run/containerd.sock", "ns", "pod1"));
  EXPECT_NE(a, ShimSocketAddress("/run/kapsel", "/run/containerd.sock", "ns", "pod2"));
  EXPECT_NE(a, ShimSocketAddress("/run/kapsel", "/run/containerd.sock", "other", "pod1"));
  EXPECT_THAT(a, ::testing::StartsWith("unix:///run/kapsel/s/"));
  EXPECT_LT(a.size(), 100u) << "must fit a sockaddr_un";
}

}  // namespace
}  // namespace kapsel::shim
