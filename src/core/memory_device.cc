#include "core/memory_device.h"

#include <algorithm>
#include <cstring>
#include <nlohmann/json.hpp>

namespace bowstack {

MemoryDevice::MemoryDevice(uint64_t size, uint32_t logical_block_size) : data_(size) {
  geometry_.size = size;
  geometry_.logical_block_size = logical_block_size;
  geometry_.preferred_block_size = std::max<uint32_t>(4096, logical_block_size);
}

Capabilities MemoryDevice::capabilities() const {
  Capabilities c;
  c.flush = c.fua = c.trim = c.write_zeroes = c.fast_zero = c.multi_conn = true;
  return c;
}

Status MemoryDevice::check_write_locked() {
  if (flush_failed_) return Status::Error(EIO, "memory device: earlier flush failed");
  if (writes_left_ == 0) return Status::Error(EIO, "memory device: injected write error");
  if (writes_left_ > 0) --writes_left_;
  return Status::Ok();
}

Status MemoryDevice::read(uint64_t offset, std::span<std::byte> buf) {
  std::lock_guard lock(mu_);
  std::memcpy(buf.data(), data_.data() + offset, buf.size());
  return Status::Ok();
}

Status MemoryDevice::write(uint64_t offset, std::span<const std::byte> buf, uint32_t /*flags*/) {
  std::lock_guard lock(mu_);
  if (Status s = check_write_locked(); !s.ok()) return s;
  std::memcpy(data_.data() + offset, buf.data(), buf.size());
  return Status::Ok();
}

Status MemoryDevice::flush() {
  std::lock_guard lock(mu_);
  if (fail_flush_) {
    fail_flush_ = false;
    flush_failed_ = true;
  }
  if (flush_failed_) return Status::Error(EIO, "memory device: flush failed");
  ++flushes_;
  return Status::Ok();
}

Status MemoryDevice::trim(uint64_t offset, uint64_t length, uint32_t flags) {
  return write_zeroes(offset, length, flags);
}

Status MemoryDevice::write_zeroes(uint64_t offset, uint64_t length, uint32_t /*flags*/) {
  std::lock_guard lock(mu_);
  if (Status s = check_write_locked(); !s.ok()) return s;
  std::fill_n(data_.begin() + static_cast<std::ptrdiff_t>(offset), length, std::byte{0});
  return Status::Ok();
}

void MemoryDevice::describe(nlohmann::json* out) const {
  std::lock_guard lock(mu_);
  (*out)["flushes"] = flushes_;
}

void MemoryDevice::fail_writes_after(int64_t n) {
  std::lock_guard lock(mu_);
  writes_left_ = n;
}

void MemoryDevice::fail_next_flush() {
  std::lock_guard lock(mu_);
  fail_flush_ = true;
}

std::vector<std::byte> MemoryDevice::contents() const {
  std::lock_guard lock(mu_);
  return data_;
}

uint64_t MemoryDevice::flush_count() const {
  std::lock_guard lock(mu_);
  return flushes_;
}

}  // namespace bowstack
