#include "tests/support/e2e_guest.h"

#include <cstdlib>
#include <cstring>

namespace kapsel::testing {

std::string E2eGuestVcpus() {
  const char* in_testhost = std::getenv("KAPSEL_IN_TESTHOST");
  return in_testhost != nullptr && std::strcmp(in_testhost, "1") == 0 ? "1" : "2";
}

}  // namespace kapsel::testing
