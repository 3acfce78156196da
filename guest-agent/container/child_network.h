// The container's network namespace, set up from inside (in the container's init, before exec).
#ifndef KAPSEL_GUEST_AGENT_CONTAINER_CHILD_NETWORK_H_
#define KAPSEL_GUEST_AGENT_CONTAINER_CHILD_NETWORK_H_

namespace kapsel::agent::child {

// Brings `lo` up in the calling process's (new) network namespace: in a microVM no CNI plugin
// runs inside the container's namespace, so this is the agent's job (Kubernetes' pods expect their
// containers to reach each other on localhost). Fails the child on error.
void BringLoopbackUp();

}  // namespace kapsel::agent::child

#endif  // KAPSEL_GUEST_AGENT_CONTAINER_CHILD_NETWORK_H_
