// linear: a slice [offset, offset+length) of the device below, exposed from
// byte 0 (dm-linear). Pure address translation: every request is forwarded
// with its offset shifted, so it keeps the lower device's capabilities.
#pragma once

#include "core/block_device.h"
#include "core/target_registry.h"

namespace bowstack {

class LinearTarget final : public StackedDevice {
 public:
  // REQUIRES: offset + length <= lower size, both multiples of its block size
  // (create() checks this and reports errors).
  LinearTarget(std::shared_ptr<BlockDevice> lower, uint64_t offset, uint64_t length);

  static Result<std::shared_ptr<BlockDevice>> create(TargetContext& ctx, const TargetArgs& args);
  // The same over a device (tests).
  static Result<std::shared_ptr<BlockDevice>> create(std::shared_ptr<BlockDevice> lower,
                                                     const TargetArgs& args);
  static TargetInfo info();

  std::string_view kind() const override { return "linear"; }
  Geometry geometry() const override { return geometry_; }
  Status read(uint64_t offset, std::span<std::byte> buf) override;
  Status write(uint64_t offset, std::span<const std::byte> buf, uint32_t flags) override;
  Status trim(uint64_t offset, uint64_t length, uint32_t flags) override;
  Status write_zeroes(uint64_t offset, uint64_t length, uint32_t flags) override;
  Status block_status(uint64_t offset, uint64_t length, std::vector<Extent>* out) override;
  Status cache(uint64_t offset, uint64_t length) override;
  Status reserve(uint64_t offset, uint64_t length) override;
  void will_write(uint64_t offset, uint64_t length) noexcept override;
  void describe(nlohmann::json* out) const override;
  std::string status_line() const override;

 private:
  const uint64_t offset_;
  Geometry geometry_;
};

}  // namespace bowstack
