// `containerd-shim-kapsel-v2 ... -bundle B delete`: containerd runs it after the shim is gone (a
// normal teardown or a crash). It removes what a dead shim may have left and prints a raw
// DeleteResponse on stdout.
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <string>

#include "absl/strings/str_cat.h"
#include "common/ttrpc/address.h"
#include "google/protobuf/util/time_util.h"
#include "shim/api/task.pb.h"
#include "shim/commands.h"
#include "shim/config.h"
#include "shim/log.h"
#include "shim/mounts.h"
#include "shim/sandbox.h"

namespace kapsel::shim {

int RunDelete(const ShimArgs& args) {
  char cwd[4096];
  const std::string bundle =
      !args.bundle.empty() ? args.bundle : (getcwd(cwd, sizeof(cwd)) ? cwd : "");
  std::ifstream in(absl::StrCat(bundle, "/", kBundleSandboxFile));
  std::string dir, role;
  std::getline(in, dir);
  std::getline(in, role);
  int rc = 0;
  if (!dir.empty() && dir[0] == '/') {
    absl::Status status;
    if (role == "owner") {
      status = CleanUpSandboxDir(dir);
      // The shim's socket, if its shim died without removing it.
      const std::string parent = dir.substr(0, dir.rfind('/'));
      const std::string state_dir = parent.substr(0, parent.rfind('/'));
      const std::string address = ShimSocketAddress(state_dir, args.address, args.ns, args.id);
      if (absl::StatusOr<ttrpc::UnixAddress> a = ttrpc::ParseUnixAddress(address);
          a.ok() && !ttrpc::DialUnix(address).ok()) {
        unlink(a->addr.sun_path);
      }
    } else {
      const std::string container_dir = SandboxPaths(dir).shared + "/" + args.id;
      status = UnmountAll(container_dir);
      status.Update(RemoveTree(container_dir));
    }
    if (!status.ok()) {
      std::fprintf(stderr, "containerd-shim-kapsel-v2 delete: %s\n", status.ToString().c_str());
      rc = 1;
    }
  }
  containerd::task::v2::DeleteResponse response;
  response.set_exit_status(137);
  *response.mutable_exited_at() = google::protobuf::util::TimeUtil::GetCurrentTime();
  const std::string bytes = response.SerializeAsString();
  std::fwrite(bytes.data(), 1, bytes.size(), stdout);
  return rc;
}

}  // namespace kapsel::shim
