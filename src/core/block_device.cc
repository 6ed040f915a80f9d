#include "core/block_device.h"

#include <algorithm>
#include <nlohmann/json.hpp>

namespace bowstack {

Status BlockDevice::block_status(uint64_t /*offset*/, uint64_t length, std::vector<Extent>* out) {
  out->push_back(Extent{length, 0});
  return Status::Ok();
}

Result<bool> only_holes(BlockDevice& dev, uint64_t offset, uint64_t length) {
  const uint64_t end = offset + length;
  uint64_t pos = offset;
  while (pos < end) {
    std::vector<Extent> ext;
    if (Status s = dev.block_status(pos, std::min<uint64_t>(end - pos, uint64_t{1} << 30), &ext); !s.ok())
      return s;
    if (ext.empty()) return false;
    for (const Extent& e : ext) {
      if (!(e.flags & kExtentHole) || e.length == 0) return false;
      pos += e.length;
    }
  }
  return true;
}

Status BlockDevice::write_batch(std::span<const WriteRef> writes, uint32_t flags) {
  for (const WriteRef& w : writes) {
    if (Status s = write(w.offset, w.data, 0); !s.ok()) return s;
  }
  return (flags & kFua) ? flush() : Status::Ok();
}

Status BlockDevice::reserve(uint64_t offset, uint64_t length) {
  (void)offset;
  (void)length;
  return Status::Ok();
}

Status BlockDevice::cache(uint64_t /*offset*/, uint64_t /*length*/) { return Status::Ok(); }

Result<std::string> BlockDevice::message(std::string_view text) {
  return Status::Error(ENOTSUP,
                       "layer '" + std::string(kind()) + "' has no message '" + std::string(text) + "'");
}

void BlockDevice::describe(nlohmann::json* /*out*/) const {}

std::string BlockDevice::status_line() const { return {}; }

}  // namespace bowstack
