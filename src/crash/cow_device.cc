#include "crash/cow_device.h"

#include <algorithm>
#include <cstring>

namespace bowstack::crash {

CowDevice::CowDevice(std::shared_ptr<const std::vector<std::byte>> base)
    : base_(std::move(base)), pages_((base_->size() + kPage - 1) / kPage) {}

std::shared_ptr<CowDevice> CowDevice::clone() const {
  auto c = std::make_shared<CowDevice>(base_);
  std::lock_guard lock(mu_);
  for (size_t i = 0; i < pages_.size(); ++i) {
    if (!pages_[i]) continue;
    c->pages_[i].reset(new std::byte[kPage]);
    std::memcpy(c->pages_[i].get(), pages_[i].get(), kPage);
  }
  return c;
}

Geometry CowDevice::geometry() const {
  Geometry g;
  g.size = base_->size();
  g.logical_block_size = 512;
  g.preferred_block_size = 4096;
  return g;
}

Capabilities CowDevice::capabilities() const {
  Capabilities c;
  c.flush = c.fua = c.trim = c.write_zeroes = c.multi_conn = true;
  return c;
}

std::byte* CowDevice::page_for_write_locked(uint64_t page) {
  if (!pages_[page]) {
    pages_[page].reset(new std::byte[kPage]);
    const uint64_t at = page * kPage;
    const uint64_t n = std::min<uint64_t>(kPage, base_->size() - at);
    std::memcpy(pages_[page].get(), base_->data() + at, n);
  }
  return pages_[page].get();
}

Status CowDevice::read(uint64_t offset, std::span<std::byte> buf) {
  if (!range_in_bounds(offset, buf.size(), base_->size()))
    return Status::Error(EINVAL, "cow: read out of range");
  std::lock_guard lock(mu_);
  uint64_t done = 0;
  while (done < buf.size()) {
    const uint64_t at = offset + done, page = at / kPage, in = at % kPage;
    const uint64_t n = std::min<uint64_t>(buf.size() - done, kPage - in);
    const std::byte* src = pages_[page] ? pages_[page].get() + in : base_->data() + at;
    std::memcpy(buf.data() + done, src, n);
    done += n;
  }
  return Status::Ok();
}

Status CowDevice::write(uint64_t offset, std::span<const std::byte> buf, uint32_t /*flags*/) {
  if (!range_in_bounds(offset, buf.size(), base_->size()))
    return Status::Error(ENOSPC, "cow: write out of range");
  std::lock_guard lock(mu_);
  uint64_t done = 0;
  while (done < buf.size()) {
    const uint64_t at = offset + done, page = at / kPage, in = at % kPage;
    const uint64_t n = std::min<uint64_t>(buf.size() - done, kPage - in);
    std::memcpy(page_for_write_locked(page) + in, buf.data() + done, n);
    done += n;
  }
  return Status::Ok();
}

Status CowDevice::write_zeroes(uint64_t offset, uint64_t length, uint32_t /*flags*/) {
  if (!range_in_bounds(offset, length, base_->size()))
    return Status::Error(ENOSPC, "cow: write out of range");
  std::lock_guard lock(mu_);
  uint64_t done = 0;
  while (done < length) {
    const uint64_t at = offset + done, page = at / kPage, in = at % kPage;
    const uint64_t n = std::min<uint64_t>(length - done, kPage - in);
    std::memset(page_for_write_locked(page) + in, 0, n);
    done += n;
  }
  return Status::Ok();
}

Status CowDevice::trim(uint64_t offset, uint64_t length, uint32_t flags) {
  return write_zeroes(offset, length, flags);
}

std::vector<std::byte> CowDevice::contents() const {
  std::vector<std::byte> out(base_->size());
  (void)const_cast<CowDevice*>(this)->read(0, out);
  return out;
}

size_t CowDevice::private_pages() const {
  std::lock_guard lock(mu_);
  return static_cast<size_t>(
      std::count_if(pages_.begin(), pages_.end(), [](const auto& p) { return p != nullptr; }));
}

}  // namespace bowstack::crash
