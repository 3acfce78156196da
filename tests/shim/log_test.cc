#include "shim/log.h"

#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "google/protobuf/stubs/logging.h"
#include "gtest/gtest.h"
#include "shim/api/task.pb.h"

namespace kapsel::shim {
namespace {

std::vector<std::string>* protobuf_logs = nullptr;

void CaptureProtobufLog(google::protobuf::LogLevel, const char*, int, const std::string& message) {
  protobuf_logs->push_back(message);
}

// An exec's request carries its process spec as an Any of a type the shim does not link: the
// debug text shows it packed, on one line, and libprotobuf has nothing to complain about.
TEST(MessageText, LeavesAnUnknownAnyPackedWithoutAWarning) {
  containerd::task::v2::ExecProcessRequest request;
  request.set_id("box");
  request.set_exec_id("probe");
  request.mutable_spec()->set_type_url("types.containerd.io/opencontainers/runtime-spec/1/Process");
  request.mutable_spec()->set_value("{\"args\":[\"true\"]}");
  std::vector<std::string> logs;
  protobuf_logs = &logs;
  google::protobuf::LogHandler* previous = google::protobuf::SetLogHandler(&CaptureProtobufLog);
  const std::string text = MessageText(request);
  google::protobuf::SetLogHandler(previous);
  protobuf_logs = nullptr;
  EXPECT_THAT(logs, ::testing::IsEmpty());
  EXPECT_THAT(text, ::testing::HasSubstr("exec_id: \"probe\""));
  EXPECT_THAT(text, ::testing::HasSubstr("runtime-spec/1/Process"));
  EXPECT_EQ(text.find('\n'), std::string::npos) << text;
}

}  // namespace
}  // namespace kapsel::shim
