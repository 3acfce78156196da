#include "shim/event_publisher.h"

#include "absl/strings/str_cat.h"
#include "google/protobuf/empty.pb.h"
#include "google/protobuf/util/time_util.h"
#include "shim/api/events_service.pb.h"
#include "shim/log.h"

namespace kapsel::shim {
namespace {
constexpr int kAttempts = 10;
constexpr absl::Duration kCallTimeout = absl::Seconds(5);
}  // namespace

EventPublisher::EventPublisher(std::string ttrpc_address, std::string ns)
    : address_(std::move(ttrpc_address)), namespace_(std::move(ns)) {
  thread_ = std::thread([this] { Run(); });
}

EventPublisher::~EventPublisher() { Close(absl::Seconds(5)); }

void EventPublisher::Publish(const std::string& topic, const google::protobuf::Message& event) {
  containerd::types::Envelope envelope;
  *envelope.mutable_timestamp() = google::protobuf::util::TimeUtil::GetCurrentTime();
  envelope.set_namespace_(namespace_);
  envelope.set_topic(topic);
  envelope.mutable_event()->set_type_url(event.GetTypeName());
  envelope.mutable_event()->set_value(event.SerializeAsString());
  if (LogEnabled(LogLevel::kDebug)) LogDebug("event ", topic, " ", MessageText(event));
  absl::MutexLock lock(&mu_);
  if (closing_) return;
  queue_.push_back(std::move(envelope));
}

void EventPublisher::Close(absl::Duration timeout) {
  {
    absl::MutexLock lock(&mu_);
    if (!closing_) {
      closing_ = true;
      close_deadline_ = absl::Now() + timeout;
    }
  }
  if (thread_.joinable()) thread_.join();
}

absl::Status EventPublisher::Send(const containerd::types::Envelope& envelope) {
  if (client_ == nullptr) {
    absl::StatusOr<std::unique_ptr<ttrpc::Client>> client = ttrpc::Client::Dial(address_);
    if (!client.ok()) return client.status();
    client_ = *std::move(client);
  }
  containerd::services::events::ttrpc::v1::ForwardRequest request;
  *request.mutable_envelope() = envelope;
  google::protobuf::Empty response;
  ttrpc::CallOptions options = ttrpc::CallOptions::WithTimeout(kCallTimeout);
  options.metadata.emplace_back(std::string(ttrpc::kNamespaceMetadataKey), namespace_);
  absl::Status status = client_->Call("containerd.services.events.ttrpc.v1.Events", "Forward",
                                      request, &response, options);
  if (absl::IsUnavailable(status)) client_.reset();  // reconnect on the next attempt
  return status;
}

void EventPublisher::Run() {
  while (true) {
    containerd::types::Envelope envelope;
    absl::Time deadline;
    {
      absl::MutexLock lock(&mu_);
      mu_.Await(absl::Condition(
          +[](EventPublisher* p)
               ABSL_NO_THREAD_SAFETY_ANALYSIS { return !p->queue_.empty() || p->closing_; },
          this));
      if (queue_.empty()) break;  // closing and drained
      envelope = std::move(queue_.front());
      queue_.pop_front();
      deadline = close_deadline_;
    }
    if (address_.empty()) continue;
    absl::Status status;
    for (int attempt = 0; attempt < kAttempts; ++attempt) {
      status = Send(envelope);
      if (status.ok() || absl::Now() > deadline) break;
      absl::SleepFor(absl::Milliseconds(50) * (1 << std::min(attempt, 5)));
    }
    if (!status.ok()) {
      LogWarn("event ", envelope.topic(), " not delivered to ", address_, ": ", status.ToString());
    }
  }
  client_.reset();
}

}  // namespace kapsel::shim
