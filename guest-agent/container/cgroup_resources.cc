#include "guest-agent/container/cgroup_resources.h"

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace kapsel::agent {
namespace {

std::string LimitValue(int64_t value) { return value < 0 ? "max" : absl::StrCat(value); }

absl::Status Unsupported(absl::string_view field) {
  return absl::InvalidArgumentError(
      absl::StrCat("linux.resources.", field, " is not supported (cgroup v2 has no equivalent)"));
}

absl::Status MemoryWrites(const oci::v1::Memory& memory, std::vector<CgroupWrite>& writes) {
  if (memory.has_kernel()) return Unsupported("memory.kernel");
  if (memory.has_kernel_tcp()) return Unsupported("memory.kernelTCP");
  if (memory.has_swappiness()) return Unsupported("memory.swappiness");
  if (memory.has_disable_oom_killer() && memory.disable_oom_killer()) {
    return Unsupported("memory.disableOOMKiller");
  }
  if (memory.has_use_hierarchy() && !memory.use_hierarchy()) {
    return Unsupported("memory.useHierarchy=false");
  }
  if (memory.has_check_before_update() && memory.check_before_update()) {
    return Unsupported("memory.checkBeforeUpdate");
  }
  if (memory.has_limit()) {
    if (memory.limit() == 0) {
      return absl::InvalidArgumentError("linux.resources.memory.limit must not be 0");
    }
    writes.push_back({"memory.max", LimitValue(memory.limit()), "memory", "memory.limit"});
  }
  if (memory.has_reservation()) {
    writes.push_back(
        {"memory.low", LimitValue(memory.reservation()), "memory", "memory.reservation"});
  }
  if (memory.has_swap()) {
    // The spec's swap is memory + swap; cgroup v2 limits swap alone.
    std::string value;
    if (memory.swap() < 0) {
      value = "max";
    } else if (!memory.has_limit() || memory.limit() < 0) {
      return absl::InvalidArgumentError(
          "linux.resources.memory.swap needs memory.limit (swap is memory + swap)");
    } else if (memory.swap() < memory.limit()) {
      return absl::InvalidArgumentError(absl::StrCat("linux.resources.memory.swap (", memory.swap(),
                                                     ") is below memory.limit (", memory.limit(),
                                                     "); it counts memory + swap"));
    } else {
      value = absl::StrCat(memory.swap() - memory.limit());
    }
    writes.push_back({"memory.swap.max", value, "memory", "memory.swap"});
  }
  return absl::OkStatus();
}

absl::Status CpuWrites(const oci::v1::Cpu& cpu, std::vector<CgroupWrite>& writes) {
  if (cpu.has_realtime_runtime()) return Unsupported("cpu.realtimeRuntime");
  if (cpu.has_realtime_period()) return Unsupported("cpu.realtimePeriod");
  if (cpu.has_shares() && cpu.shares() != 0) {
    writes.push_back(
        {"cpu.weight", absl::StrCat(CpuSharesToWeight(cpu.shares())), "cpu", "cpu.shares"});
  }
  if (cpu.has_quota() || cpu.has_period()) {
    uint64_t period = cpu.has_period() && cpu.period() != 0 ? cpu.period() : 100000;
    std::string quota = cpu.has_quota() && cpu.quota() > 0 ? absl::StrCat(cpu.quota()) : "max";
    writes.push_back({"cpu.max", absl::StrCat(quota, " ", period), "cpu", "cpu.quota/period"});
  }
  if (cpu.has_burst()) {
    writes.push_back({"cpu.max.burst", absl::StrCat(cpu.burst()), "cpu", "cpu.burst"});
  }
  if (cpu.has_idle()) {
    writes.push_back({"cpu.idle", absl::StrCat(cpu.idle()), "cpu", "cpu.idle"});
  }
  if (!cpu.cpus().empty()) writes.push_back({"cpuset.cpus", cpu.cpus(), "cpuset", "cpu.cpus"});
  if (!cpu.mems().empty()) writes.push_back({"cpuset.mems", cpu.mems(), "cpuset", "cpu.mems"});
  return absl::OkStatus();
}

absl::Status IoWrites(const oci::v1::BlockIo& io, std::vector<CgroupWrite>& writes) {
  if (io.has_leaf_weight()) return Unsupported("blockIO.leafWeight");
  if (io.has_weight() && io.weight() != 0) {
    if (io.weight() < 10 || io.weight() > 1000) {
      return absl::InvalidArgumentError(absl::StrCat("linux.resources.blockIO.weight ", io.weight(),
                                                     " is out of range (10-1000)"));
    }
    writes.push_back({"io.weight", absl::StrCat("default ", BlkioWeightToIoWeight(io.weight())),
                      "io", "blockIO.weight"});
  }
  for (const oci::v1::WeightDevice& device : io.weight_device()) {
    if (device.has_leaf_weight()) return Unsupported("blockIO.weightDevice.leafWeight");
    if (!device.has_weight()) continue;
    if (device.weight() < 10 || device.weight() > 1000) {
      return absl::InvalidArgumentError(absl::StrCat("linux.resources.blockIO.weightDevice weight ",
                                                     device.weight(),
                                                     " is out of range (10-1000)"));
    }
    writes.push_back({"io.weight",
                      absl::StrCat(device.major(), ":", device.minor(), " ",
                                   BlkioWeightToIoWeight(device.weight())),
                      "io", "blockIO.weightDevice"});
  }
  struct Throttle {
    const google::protobuf::RepeatedPtrField<oci::v1::ThrottleDevice>& devices;
    const char* key;
    const char* field;
  };
  const Throttle throttles[] = {
      {io.throttle_read_bps_device(), "rbps", "blockIO.throttleReadBpsDevice"},
      {io.throttle_write_bps_device(), "wbps", "blockIO.throttleWriteBpsDevice"},
      {io.throttle_read_iops_device(), "riops", "blockIO.throttleReadIOPSDevice"},
      {io.throttle_write_iops_device(), "wiops", "blockIO.throttleWriteIOPSDevice"},
  };
  for (const Throttle& throttle : throttles) {
    for (const oci::v1::ThrottleDevice& device : throttle.devices) {
      std::string rate = device.rate() == 0 ? "max" : absl::StrCat(device.rate());
      writes.push_back(
          {"io.max",
           absl::StrCat(device.major(), ":", device.minor(), " ", throttle.key, "=", rate), "io",
           throttle.field});
    }
  }
  return absl::OkStatus();
}

}  // namespace

uint64_t CpuSharesToWeight(uint64_t shares) {
  if (shares < 2) shares = 2;
  if (shares > 262144) shares = 262144;
  return 1 + ((shares - 2) * 9999) / 262142;
}

uint64_t BlkioWeightToIoWeight(uint64_t weight) { return 1 + (weight - 10) * 9999 / 990; }

absl::StatusOr<std::vector<CgroupWrite>> CgroupWrites(const oci::v1::Resources& resources) {
  std::vector<CgroupWrite> writes;
  if (resources.has_memory()) {
    if (absl::Status s = MemoryWrites(resources.memory(), writes); !s.ok()) return s;
  }
  if (resources.has_cpu()) {
    if (absl::Status s = CpuWrites(resources.cpu(), writes); !s.ok()) return s;
  }
  if (resources.has_pids() && resources.pids().limit() != 0) {
    writes.push_back({"pids.max", LimitValue(resources.pids().limit()), "pids", "pids.limit"});
  }
  if (resources.has_block_io()) {
    if (absl::Status s = IoWrites(resources.block_io(), writes); !s.ok()) return s;
  }
  if (!resources.hugepage_limits().empty()) return Unsupported("hugepageLimits");
  if (resources.has_network() &&
      (resources.network().has_class_id() || !resources.network().priorities().empty())) {
    return Unsupported("network");
  }
  if (!resources.rdma().empty()) return Unsupported("rdma");
  for (const auto& [key, value] : resources.unified()) {
    if (key.empty() || absl::StrContains(key, "/") || key.front() == '.' ||
        !absl::StrContains(key, ".")) {
      return absl::InvalidArgumentError(
          absl::StrCat("linux.resources.unified: invalid key \"", key, "\""));
    }
    if (absl::StartsWith(key, "cgroup.") && key != "cgroup.max.depth" &&
        key != "cgroup.max.descendants") {
      return absl::InvalidArgumentError(absl::StrCat("linux.resources.unified: \"", key,
                                                     "\" is managed by kapsel and cannot be set"));
    }
    std::string controller = key.substr(0, key.find('.'));
    if (controller == "cgroup") controller.clear();
    writes.push_back({key, value, controller, absl::StrCat("unified.", key)});
  }
  return writes;
}

}  // namespace kapsel::agent
