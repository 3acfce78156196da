// The shim's configuration: a TOML file (/etc/kapsel/config.toml, or the file named by the runtime
// options' config_path). Every key is optional; the defaults find what scripts/build produced next
// to the shim binary (build/bin/kapsel-vmm, build/guest/vmlinux, build/guest/agent-root.img).
//
//   [vm]
//   kernel = "/path/vmlinux"           # the guest kernel
//   image = "/path/agent-root.img"      # the agent's root image, as persistent memory (DAX):
//                                      # every VM runs the agent from the same host pages
//   initrd = "/path/agent-initramfs.cpio"  # booted instead when image = "" (kernels without DAX)
//   vmm = "/path/kapsel-vmm"
//   vcpus = 1
//   memory_mib = 256
//   max_vcpus = 32                     # the most a pod's annotations may ask for (vm_resources.h)
//   max_memory_mib = 65536
//   boot_timeout_seconds = 60          # until the agent answers
//   kernel_cmdline = ""                # empty: kapsel-vmm's default
//   free_page_reporting = true         # memory the guest frees goes back to the host
//   share_kernel_text = true           # VMs share the kernel's text pages (copy-on-write)
//   jail = true                        # kapsel-vmm --jail: once the VM is built it keeps no
//                                      # capabilities and sees only its vsock directory
//   [virtiofsd]
//   path = "/usr/lib/qemu/virtiofsd"
//   cache = "auto"                     # none, auto or always
//   [shim]
//   log_level = "info"                 # debug, info, warn, error
//   state_dir = "/run/kapsel"
#ifndef KAPSEL_SHIM_CONFIG_H_
#define KAPSEL_SHIM_CONFIG_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace kapsel::shim {

inline constexpr char kDefaultConfigPath[] = "/etc/kapsel/config.toml";

struct Config {
  std::string kernel;
  std::string image;  // kapsel-vmm --pmem IMAGE,root; empty: --initrd
  std::string initrd;
  std::string vmm;
  uint32_t vcpus = 1;
  uint32_t memory_mib = 256;
  uint32_t max_vcpus = 32;          // at least vcpus
  uint32_t max_memory_mib = 65536;  // at least memory_mib
  absl::Duration boot_timeout = absl::Seconds(60);
  std::string kernel_cmdline;
  bool free_page_reporting = true;  // kapsel-vmm --free-page-reporting
  bool share_kernel_text = true;    // false: kapsel-vmm --private-kernel
  bool jail = true;                 // kapsel-vmm --jail
  std::string virtiofsd = "/usr/lib/qemu/virtiofsd";
  std::string virtiofsd_cache = "auto";
  std::string log_level = "info";
  std::string state_dir = "/run/kapsel";
};

// The defaults, with paths relative to the directory of the running shim binary.
Config DefaultConfig();

// Parses TOML text over the defaults. Unknown tables or keys, wrong types and out-of-range values
// are errors naming the key (and `origin`, e.g. the file).
absl::StatusOr<Config> ParseConfig(const std::string& toml_text, const std::string& origin);

// Reads `path`; an empty path means kDefaultConfigPath, which may be absent (defaults then).
absl::StatusOr<Config> LoadConfig(const std::string& path);

}  // namespace kapsel::shim

#endif  // KAPSEL_SHIM_CONFIG_H_
