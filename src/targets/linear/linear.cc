#include "targets/linear/linear.h"

#include <fmt/format.h>

#include <nlohmann/json.hpp>

namespace bowstack {

LinearTarget::LinearTarget(std::shared_ptr<BlockDevice> lower, uint64_t offset, uint64_t length)
    : StackedDevice(std::move(lower)), offset_(offset), geometry_(lower_device()->geometry()) {
  geometry_.size = length;
}

Result<std::shared_ptr<BlockDevice>> LinearTarget::create(TargetContext& ctx, const TargetArgs& args) {
  return create(ctx.data(), args);
}

Result<std::shared_ptr<BlockDevice>> LinearTarget::create(std::shared_ptr<BlockDevice> lower,
                                                          const TargetArgs& args) {
  const Geometry lg = lower->geometry();
  auto offset = args.get_size("offset", 0);
  if (!offset.ok()) return offset.status();
  if (*offset >= lg.size) {
    return Status::Error(
        EINVAL,
        fmt::format("linear: offset {} is beyond the end of the device below ({} bytes)", *offset, lg.size));
  }
  auto length = args.get_size("length", lg.size - *offset);
  if (!length.ok()) return length.status();
  if (*length == 0) return Status::Error(EINVAL, "linear: length must be greater than 0");
  if (*offset % lg.logical_block_size != 0 || *length % lg.logical_block_size != 0) {
    return Status::Error(EINVAL, fmt::format("linear: offset and length must be multiples of {} bytes",
                                             lg.logical_block_size));
  }
  if (!range_in_bounds(*offset, *length, lg.size)) {
    return Status::Error(EINVAL,
                         fmt::format("linear: the device below is too small: the slice needs {} bytes, "
                                     "it has {}",
                                     *offset + *length, lg.size));
  }
  return std::shared_ptr<BlockDevice>(std::make_shared<LinearTarget>(std::move(lower), *offset, *length));
}

TargetInfo LinearTarget::info() {
  return TargetInfo{
      "linear",
      "a slice of the device below (like dm-linear)",
      {{"offset", "start of the slice in the device below, bytes (K/M/G suffixes; default 0)"},
       {"length", "length of the slice, bytes (default: to the end of the device below)"}},
      {{"data", SlotKind::kDevice, true, "", "", "the device to take the slice of"}},
      [](TargetContext& ctx, const TargetArgs& args) { return create(ctx, args); },
  };
}

Status LinearTarget::read(uint64_t offset, std::span<std::byte> buf) {
  return lower_device()->read(offset_ + offset, buf);
}

Status LinearTarget::write(uint64_t offset, std::span<const std::byte> buf, uint32_t flags) {
  return lower_device()->write(offset_ + offset, buf, flags);
}

Status LinearTarget::trim(uint64_t offset, uint64_t length, uint32_t flags) {
  return lower_device()->trim(offset_ + offset, length, flags);
}

Status LinearTarget::write_zeroes(uint64_t offset, uint64_t length, uint32_t flags) {
  return lower_device()->write_zeroes(offset_ + offset, length, flags);
}

Status LinearTarget::block_status(uint64_t offset, uint64_t length, std::vector<Extent>* out) {
  return lower_device()->block_status(offset_ + offset, length, out);
}

Status LinearTarget::reserve(uint64_t offset, uint64_t length) {
  return lower_device()->reserve(offset_ + offset, length);
}

Status LinearTarget::cache(uint64_t offset, uint64_t length) {
  return lower_device()->cache(offset_ + offset, length);
}

void LinearTarget::will_write(uint64_t offset, uint64_t length) noexcept {
  lower_device()->will_write(offset_ + offset, length);
}

void LinearTarget::describe(nlohmann::json* out) const {
  (*out)["offset"] = offset_;
  (*out)["length"] = geometry_.size;
}

std::string LinearTarget::status_line() const {
  return fmt::format("offset {} length {}", offset_, geometry_.size);
}

}  // namespace bowstack
