#include "vmm/devices/bus.h"

#include <cstring>

#include "absl/strings/str_format.h"

namespace kapsel::vmm {

absl::Status Bus::Insert(std::shared_ptr<BusDevice> device, uint64_t base, uint64_t length) {
  if (length == 0 || base + length < base) {
    return absl::InvalidArgumentError(absl::StrFormat("%s bus: invalid range %#x+%#x for %s", name_,
                                                      base, length, device->name()));
  }
  auto next = entries_.lower_bound(base);
  if (next != entries_.end() && next->first < base + length) {
    return absl::AlreadyExistsError(absl::StrFormat("%s bus: %s at %#x overlaps %s at %#x", name_,
                                                    device->name(), base,
                                                    next->second.device->name(), next->first));
  }
  if (next != entries_.begin()) {
    auto prev = std::prev(next);
    if (prev->first + prev->second.length > base) {
      return absl::AlreadyExistsError(absl::StrFormat("%s bus: %s at %#x overlaps %s at %#x", name_,
                                                      device->name(), base,
                                                      prev->second.device->name(), prev->first));
    }
  }
  entries_.emplace(base, Entry{length, std::move(device)});
  return absl::OkStatus();
}

const Bus::Entry* Bus::Find(uint64_t addr, uint64_t size, uint64_t* offset) const {
  auto it = entries_.upper_bound(addr);
  if (it == entries_.begin()) return nullptr;
  --it;
  const uint64_t off = addr - it->first;
  if (off >= it->second.length || size > it->second.length - off) return nullptr;
  *offset = off;
  return &it->second;
}

bool Bus::Read(uint64_t addr, absl::Span<uint8_t> data) const {
  uint64_t offset;
  const Entry* entry = Find(addr, data.size(), &offset);
  if (entry == nullptr) {
    std::memset(data.data(), 0xff, data.size());
    return false;
  }
  entry->device->Read(offset, data);
  return true;
}

bool Bus::Write(uint64_t addr, absl::Span<const uint8_t> data) const {
  uint64_t offset;
  const Entry* entry = Find(addr, data.size(), &offset);
  if (entry == nullptr) return false;
  entry->device->Write(offset, data);
  return true;
}

}  // namespace kapsel::vmm
