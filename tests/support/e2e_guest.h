// Sizing of the microVMs that end-to-end tests boot.
#ifndef KAPSEL_TESTS_SUPPORT_E2E_GUEST_H_
#define KAPSEL_TESTS_SUPPORT_E2E_GUEST_H_

#include <string>

namespace kapsel::testing {

// The --vcpus value for a device or agent test's microVM: "2" on hardware KVM; "1" inside the
// test host (tests/testhost/run sets KAPSEL_IN_TESTHOST=1). There, guests under heavy virtio-fs
// or vsock traffic sometimes triple-fault or hang, a cause not found yet; with 2 vCPUs about half
// of such VMs failed, with 1 vCPU about one in seven (docs/testhost.md, "Guest crashes under
// load"). Tests about SMP itself (vmm_boot_e2e) ask for 2 explicitly.
std::string E2eGuestVcpus();

}  // namespace kapsel::testing

#endif  // KAPSEL_TESTS_SUPPORT_E2E_GUEST_H_
