// kapsel-agent's protobuf messages are lite classes.
//
// kapsel-agent links only protobuf's lite runtime; its copies of the protos it shares with the host
// are generated for it (kapsel_oci_lite, kapsel_agent_proto_lite) under the same header paths as
// the host's full ones (cmake/KapselProto.cmake). Guest headers static_assert kIsLiteMessage on
// what they include, so picking up a full header (an include-order mistake in a CMakeLists) fails
// to compile instead of linking descriptors and reflection back into the agent.
#ifndef KAPSEL_GUEST_AGENT_LITE_PROTOS_H_
#define KAPSEL_GUEST_AGENT_LITE_PROTOS_H_

#include <type_traits>

namespace google::protobuf {
class Message;
}  // namespace google::protobuf

namespace kapsel::agent {

template <typename T>
inline constexpr bool kIsLiteMessage = !std::is_base_of_v<google::protobuf::Message, T>;

}  // namespace kapsel::agent

#endif  // KAPSEL_GUEST_AGENT_LITE_PROTOS_H_
