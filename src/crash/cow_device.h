// A device that reads through to a shared, read-only base image and keeps
// its own writes in private 4 KiB pages (copy-on-write), so that each of
// thousands of crash states costs only the pages it changes.
//
// Thread-safety: all methods may be called concurrently (one mutex; the
// targets run on it use their own threads). Lifetime: `base` is shared and
// must not change while any CowDevice uses it.
#pragma once

#include <memory>
#include <mutex>
#include <vector>

#include "core/block_device.h"

namespace bowstack::crash {

class CowDevice final : public BlockDevice {
 public:
  static constexpr uint64_t kPage = 4096;

  // REQUIRES: base->size() is a multiple of 512.
  explicit CowDevice(std::shared_ptr<const std::vector<std::byte>> base);
  // A new device with this one's current contents (shares the base; copies
  // the private pages).
  std::shared_ptr<CowDevice> clone() const;

  std::string_view kind() const override { return "cow"; }
  Geometry geometry() const override;
  Capabilities capabilities() const override;
  Status read(uint64_t offset, std::span<std::byte> buf) override;
  Status write(uint64_t offset, std::span<const std::byte> buf, uint32_t flags) override;
  Status flush() override { return Status::Ok(); }
  Status trim(uint64_t offset, uint64_t length, uint32_t flags) override;
  Status write_zeroes(uint64_t offset, uint64_t length, uint32_t flags) override;

  // The whole contents (tests, checkers).
  std::vector<std::byte> contents() const;
  size_t private_pages() const;

 private:
  std::byte* page_for_write_locked(uint64_t page);

  std::shared_ptr<const std::vector<std::byte>> base_;
  mutable std::mutex mu_;
  std::vector<std::unique_ptr<std::byte[]>> pages_;  // guarded by mu_; null = base
};

}  // namespace bowstack::crash
