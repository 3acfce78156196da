// kapsel-cri: a small Kubernetes CRI client (a few crictl verbs) for kapsel's tests, talking gRPC
// to containerd's CRI plugin at $CONTAINERD_ADDRESS (or --address). Requests come as JSON files
// in the CRI's JSON mapping; answers are printed as JSON.
//
//   kapsel-cri version
//   kapsel-cri runp POD.json HANDLER             prints the pod sandbox id
//   kapsel-cri create POD_ID CONTAINER.json POD.json   prints the container id
//   kapsel-cri start|stop|rm ID                  (stop: SIGTERM, SIGKILL after 10 s)
//   kapsel-cri stopp|rmp POD_ID
//   kapsel-cri inspect ID | inspectp POD_ID      ContainerStatus / PodSandboxStatus as JSON
//   kapsel-cri podip POD_ID                      the pod's IPv4 address on its CNI network
//   kapsel-cri exec ID CMD [ARG...]              ExecSync: its stdout and stderr, its exit code
//
// Built on Debian's gRPC and (shared) protobuf, apart from kapsel's statically linked code.
#include <arpa/inet.h>
#include <grpcpp/grpcpp.h>
#include <netinet/in.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "google/protobuf/util/json_util.h"
#include "tests/support/cri/cri.grpc.pb.h"

namespace {

using google::protobuf::Message;

constexpr int kCallSeconds = 300;  // RunPodSandbox boots a VM; a slow test host needs time

int Usage() {
  std::fputs(
      "usage: kapsel-cri [--address unix://PATH] VERB ...\n"
      "  version | runp POD.json HANDLER | create POD_ID CONTAINER.json POD.json\n"
      "  start|stop|rm|inspect ID | stopp|rmp|inspectp|podip POD_ID | exec ID CMD [ARG...]\n",
      stderr);
  return 2;
}

bool ReadJson(const std::string& path, Message* message) {
  std::ifstream in(path);
  if (!in) {
    std::fprintf(stderr, "kapsel-cri: cannot read %s\n", path.c_str());
    return false;
  }
  std::stringstream text;
  text << in.rdbuf();
  google::protobuf::util::Status status =
      google::protobuf::util::JsonStringToMessage(text.str(), message);
  if (!status.ok()) {
    std::fprintf(stderr, "kapsel-cri: %s: %s\n", path.c_str(), status.ToString().c_str());
    return false;
  }
  return true;
}

void PrintJson(const Message& message) {
  std::string out;
  google::protobuf::util::JsonPrintOptions options;
  options.add_whitespace = true;
  options.always_print_primitive_fields = true;
  (void)google::protobuf::util::MessageToJsonString(message, &out, options);
  std::fputs(out.c_str(), stdout);
}

// Prints the pod's IPv4 address from its status (the CNI result containerd reports), or says why
// there is none and returns 1: a pod on the node's network or without CNI has an empty address.
int PrintPodIp(const std::string& pod_id, const runtime::v1::PodSandboxStatus& status) {
  const std::string& ip = status.network().ip();
  if (ip.empty()) {
    std::fprintf(stderr, "kapsel-cri: podip: pod %s has no IP (is it on a CNI network?)\n",
                 pod_id.c_str());
    return 1;
  }
  in_addr addr;
  if (inet_pton(AF_INET, ip.c_str(), &addr) != 1) {
    std::fprintf(stderr, "kapsel-cri: podip: pod %s: \"%s\" is not an IPv4 address\n",
                 pod_id.c_str(), ip.c_str());
    return 1;
  }
  std::printf("%s\n", ip.c_str());
  return 0;
}

class Cri {
 public:
  explicit Cri(const std::string& address)
      : stub_(runtime::v1::RuntimeService::NewStub(
            grpc::CreateChannel(address, grpc::InsecureChannelCredentials()))) {}

  // One unary call; prints a failure as "kapsel-cri: VERB: CODE: MESSAGE".
  template <typename Request, typename Response>
  bool Call(const char* verb,
            grpc::Status (runtime::v1::RuntimeService::Stub::*method)(grpc::ClientContext*,
                                                                      const Request&, Response*),
            const Request& request, Response* response) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(kCallSeconds));
    grpc::Status status = (stub_.get()->*method)(&context, request, response);
    if (!status.ok()) {
      std::fprintf(stderr, "kapsel-cri: %s: code %d: %s\n", verb, status.error_code(),
                   status.error_message().c_str());
      return false;
    }
    return true;
  }

 private:
  std::unique_ptr<runtime::v1::RuntimeService::Stub> stub_;
};

int Run(Cri& cri, const std::vector<std::string>& args) {
  using S = runtime::v1::RuntimeService::Stub;
  namespace r = runtime::v1;
  const std::string& verb = args[0];
  const size_t n = args.size();
  if (verb == "version" && n == 1) {
    r::VersionRequest request;
    r::VersionResponse response;
    if (!cri.Call("version", &S::Version, request, &response)) return 1;
    PrintJson(response);
    return 0;
  }
  if (verb == "runp" && n == 3) {
    r::RunPodSandboxRequest request;
    if (!ReadJson(args[1], request.mutable_config())) return 2;
    request.set_runtime_handler(args[2]);
    r::RunPodSandboxResponse response;
    if (!cri.Call("runp", &S::RunPodSandbox, request, &response)) return 1;
    std::printf("%s\n", response.pod_sandbox_id().c_str());
    return 0;
  }
  if (verb == "create" && n == 4) {
    r::CreateContainerRequest request;
    request.set_pod_sandbox_id(args[1]);
    if (!ReadJson(args[2], request.mutable_config()) ||
        !ReadJson(args[3], request.mutable_sandbox_config())) {
      return 2;
    }
    r::CreateContainerResponse response;
    if (!cri.Call("create", &S::CreateContainer, request, &response)) return 1;
    std::printf("%s\n", response.container_id().c_str());
    return 0;
  }
  if (verb == "start" && n == 2) {
    r::StartContainerRequest request;
    request.set_container_id(args[1]);
    r::StartContainerResponse response;
    return cri.Call("start", &S::StartContainer, request, &response) ? 0 : 1;
  }
  if (verb == "stop" && n == 2) {
    r::StopContainerRequest request;
    request.set_container_id(args[1]);
    request.set_timeout(10);
    r::StopContainerResponse response;
    return cri.Call("stop", &S::StopContainer, request, &response) ? 0 : 1;
  }
  if (verb == "rm" && n == 2) {
    r::RemoveContainerRequest request;
    request.set_container_id(args[1]);
    r::RemoveContainerResponse response;
    return cri.Call("rm", &S::RemoveContainer, request, &response) ? 0 : 1;
  }
  if (verb == "stopp" && n == 2) {
    r::StopPodSandboxRequest request;
    request.set_pod_sandbox_id(args[1]);
    r::StopPodSandboxResponse response;
    return cri.Call("stopp", &S::StopPodSandbox, request, &response) ? 0 : 1;
  }
  if (verb == "rmp" && n == 2) {
    r::RemovePodSandboxRequest request;
    request.set_pod_sandbox_id(args[1]);
    r::RemovePodSandboxResponse response;
    return cri.Call("rmp", &S::RemovePodSandbox, request, &response) ? 0 : 1;
  }
  if (verb == "inspect" && n == 2) {
    r::ContainerStatusRequest request;
    request.set_container_id(args[1]);
    r::ContainerStatusResponse response;
    if (!cri.Call("inspect", &S::ContainerStatus, request, &response)) return 1;
    PrintJson(response.status());
    return 0;
  }
  if (verb == "inspectp" && n == 2) {
    r::PodSandboxStatusRequest request;
    request.set_pod_sandbox_id(args[1]);
    r::PodSandboxStatusResponse response;
    if (!cri.Call("inspectp", &S::PodSandboxStatus, request, &response)) return 1;
    PrintJson(response.status());
    return 0;
  }
  if (verb == "podip" && n == 2) {
    r::PodSandboxStatusRequest request;
    request.set_pod_sandbox_id(args[1]);
    r::PodSandboxStatusResponse response;
    if (!cri.Call("podip", &S::PodSandboxStatus, request, &response)) return 1;
    return PrintPodIp(args[1], response.status());
  }
  if (verb == "exec" && n >= 3) {
    r::ExecSyncRequest request;
    request.set_container_id(args[1]);
    for (size_t i = 2; i < n; ++i) request.add_cmd(args[i]);
    request.set_timeout(kCallSeconds - 10);
    r::ExecSyncResponse response;
    if (!cri.Call("exec", &S::ExecSync, request, &response)) return 1;
    std::fwrite(response.stdout().data(), 1, response.stdout().size(), stdout);
    std::fwrite(response.stderr().data(), 1, response.stderr().size(), stderr);
    return response.exit_code();
  }
  return Usage();
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  std::string address;
  if (const char* env = std::getenv("CONTAINERD_ADDRESS"); env != nullptr) address = env;
  if (args.size() >= 2 && args[0] == "--address") {
    address = args[1];
    args.erase(args.begin(), args.begin() + 2);
  }
  if (args.empty()) return Usage();
  if (address.empty()) {
    std::fputs("kapsel-cri: no address: set CONTAINERD_ADDRESS or pass --address\n", stderr);
    return 2;
  }
  if (address.find("://") == std::string::npos) address = "unix://" + address;
  Cri cri(address);
  return Run(cri, args);
}
