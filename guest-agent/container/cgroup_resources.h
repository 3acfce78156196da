// linux.resources to cgroup v2 interface files.
#ifndef KAPSEL_GUEST_AGENT_CONTAINER_CGROUP_RESOURCES_H_
#define KAPSEL_GUEST_AGENT_CONTAINER_CGROUP_RESOURCES_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/oci/spec.pb.h"

namespace kapsel::agent {

// One value written to one interface file of the container's cgroup.
struct CgroupWrite {
  std::string file;        // e.g. memory.max
  std::string value;       // e.g. 1048576
  std::string controller;  // the controller the file belongs to (empty: core cgroup file)
  std::string field;       // the spec field it comes from, for errors
};

// cpu.shares (2..262144) to cpu.weight (1..10000).
uint64_t CpuSharesToWeight(uint64_t shares);
// blkio weight (10..1000) to io.weight (1..10000).
uint64_t BlkioWeightToIoWeight(uint64_t weight);

// The writes for memory, cpu (cpu.max, cpu.weight, cpu.max.burst, cpu.idle, cpuset), pids, io
// and unified. Fields cgroup v2 has no place for (kernel memory, swappiness, realtime, leaf
// weights, hugepages, rdma, network) are errors naming the field. linux.resources.devices is not
// handled here (see device_filter.h).
absl::StatusOr<std::vector<CgroupWrite>> CgroupWrites(const oci::v1::Resources& resources);

}  // namespace kapsel::agent

#endif  // KAPSEL_GUEST_AGENT_CONTAINER_CGROUP_RESOURCES_H_
