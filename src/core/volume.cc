#include "core/volume.h"

#include <nlohmann/json.hpp>
#include <thread>

#include "core/sub_block.h"

namespace bowstack {

// RAII admission of one request through the suspend gate.
class Volume::Admission {
 public:
  explicit Admission(Volume* v) : v_(v) { v_->enter(); }
  ~Admission() { v_->leave(); }
  Admission(const Admission&) = delete;
  Admission& operator=(const Admission&) = delete;

 private:
  Volume* v_;
};

namespace {
Status counted(Status s, std::atomic<uint64_t>& errors) {
  if (!s.ok()) errors.fetch_add(1, std::memory_order_relaxed);
  return s;
}
}  // namespace

Volume::Volume(std::shared_ptr<BlockDevice> top)
    : geometry_(SubBlockDevice::served_geometry(top->geometry())), caps_(top->capabilities()) {
  set_top(std::move(top));
}

Volume::Volume(std::unique_ptr<DeviceTree> tree)
    : tree_(std::move(tree)),
      geometry_(SubBlockDevice::served_geometry(tree_->top()->geometry())),
      caps_(tree_->top()->capabilities()) {
  set_top(tree_->top());
}

void Volume::set_top(std::shared_ptr<BlockDevice> top) {
  if (!top) {
    io_.reset();
    top_.reset();
    return;
  }
  io_ = SubBlockDevice::over(top);
  const Geometry g = io_->geometry();
  align_ = g.accepts_unaligned ? 0 : g.logical_block_size;
  top_ = std::move(top);
}

void Volume::will_write(uint64_t offset, uint64_t length) noexcept {
  // Never blocks: while a reload swaps the stack, hints are dropped.
  if (hints_closed_.load()) return;
  hints_running_.fetch_add(1);
  if (!hints_closed_.load()) io_->will_write(offset, length);
  hints_running_.fetch_sub(1);
}

void Volume::close_hints() {
  hints_closed_.store(true);
  while (hints_running_.load() != 0) std::this_thread::yield();
}

void Volume::open_hints() { hints_closed_.store(false); }

Volume::~Volume() = default;

void Volume::enter() {
  std::unique_lock lock(mu_);
  cv_.wait(lock, [this] { return !suspended_; });
  ++in_flight_;
}

void Volume::leave() {
  std::lock_guard lock(mu_);
  if (--in_flight_ == 0 && suspended_) cv_.notify_all();
}

Status Volume::suspend() {
  {
    std::unique_lock lock(mu_);
    suspended_ = true;
    cv_.wait(lock, [this] { return in_flight_ == 0; });
  }
  {
    // Task jobs (scrub, resync) hold off too: nothing moves while suspended.
    std::shared_lock control(control_mu_);
    if (tree_) tree_->pause_tasks();
  }
  if (!caps_.flush || caps_.read_only) return Status::Ok();
  stats_.flushes.fetch_add(1, std::memory_order_relaxed);
  return counted(io_->flush(), stats_.errors);
}

void Volume::resume() {
  {
    std::shared_lock control(control_mu_);
    if (tree_) tree_->resume_tasks();
  }
  open_gate();
}

void Volume::open_gate() {
  std::lock_guard lock(mu_);
  suspended_ = false;
  cv_.notify_all();
}

bool Volume::suspended() const {
  std::lock_guard lock(mu_);
  return suspended_;
}

uint64_t Volume::in_flight() const {
  std::lock_guard lock(mu_);
  return in_flight_;
}

Status Volume::read(uint64_t offset, std::span<std::byte> buf) {
  Admission a(this);
  stats_.reads.fetch_add(1, std::memory_order_relaxed);
  stats_.bytes_read.fetch_add(buf.size(), std::memory_order_relaxed);
  if (misaligned(offset, buf.size())) return counted(Status::Error(EINVAL), stats_.errors);
  return counted(io_->read(offset, buf), stats_.errors);
}

Status Volume::write(uint64_t offset, std::span<const std::byte> buf, uint32_t flags) {
  Admission a(this);
  stats_.writes.fetch_add(1, std::memory_order_relaxed);
  stats_.bytes_written.fetch_add(buf.size(), std::memory_order_relaxed);
  if (misaligned(offset, buf.size())) return counted(Status::Error(EINVAL), stats_.errors);
  return counted(io_->write(offset, buf, flags), stats_.errors);
}

Status Volume::flush() {
  Admission a(this);
  stats_.flushes.fetch_add(1, std::memory_order_relaxed);
  return counted(io_->flush(), stats_.errors);
}

Status Volume::trim(uint64_t offset, uint64_t length, uint32_t flags) {
  Admission a(this);
  stats_.trims.fetch_add(1, std::memory_order_relaxed);
  stats_.bytes_trimmed.fetch_add(length, std::memory_order_relaxed);
  if (misaligned(offset, length)) return counted(Status::Error(EINVAL), stats_.errors);
  return counted(io_->trim(offset, length, flags), stats_.errors);
}

Status Volume::write_zeroes(uint64_t offset, uint64_t length, uint32_t flags) {
  Admission a(this);
  stats_.zeroes.fetch_add(1, std::memory_order_relaxed);
  stats_.bytes_zeroed.fetch_add(length, std::memory_order_relaxed);
  if (misaligned(offset, length)) return counted(Status::Error(EINVAL), stats_.errors);
  return counted(io_->write_zeroes(offset, length, flags), stats_.errors);
}

Status Volume::block_status(uint64_t offset, uint64_t length, std::vector<Extent>* out) {
  Admission a(this);
  stats_.block_status.fetch_add(1, std::memory_order_relaxed);
  return counted(io_->block_status(offset, length, out), stats_.errors);
}

Status Volume::cache(uint64_t offset, uint64_t length) {
  Admission a(this);
  stats_.caches.fetch_add(1, std::memory_order_relaxed);
  return counted(io_->cache(offset, length), stats_.errors);
}

Result<std::string> Volume::message(std::string_view text, std::string_view layer) {
  std::shared_lock control(control_mu_);
  if (tree_) return tree_->message(text, layer);
  Status last = Status::Error(ENOTSUP, "no layer understands '" + std::string(text) + "'");
  bool found_layer = layer.empty();
  for (BlockDevice* d = top_.get(); d != nullptr; d = d->lower()) {
    if (!layer.empty()) {
      if (d->kind() != layer) continue;
      found_layer = true;
      return d->message(text);
    }
    Result<std::string> r = d->message(text);
    if (r.ok() || r.status().code() != ENOTSUP) return r;
  }
  if (!found_layer)
    return Status::Error(ENOENT, "no layer of kind '" + std::string(layer) + "' in the stack");
  return last;
}

nlohmann::json Volume::table() const {
  std::shared_lock control(control_mu_);
  return tree_ ? tree_->table().to_json() : nlohmann::json(nullptr);
}

nlohmann::json Volume::status() const {
  std::shared_lock control(control_mu_);
  nlohmann::json j;
  j["size"] = geometry_.size;
  j["block_size"] = geometry_.logical_block_size;
  j["preferred_block_size"] = geometry_.preferred_block_size;
  j["read_only"] = caps_.read_only;
  {
    std::lock_guard lock(mu_);
    j["suspended"] = suspended_;
    j["in_flight"] = in_flight_;
  }
  auto& s = j["stats"];
  s["reads"] = stats_.reads.load();
  s["writes"] = stats_.writes.load();
  s["flushes"] = stats_.flushes.load();
  s["trims"] = stats_.trims.load();
  s["write_zeroes"] = stats_.zeroes.load();
  s["block_status"] = stats_.block_status.load();
  s["cache"] = stats_.caches.load();
  s["bytes_read"] = stats_.bytes_read.load();
  s["bytes_written"] = stats_.bytes_written.load();
  s["bytes_trimmed"] = stats_.bytes_trimmed.load();
  s["bytes_zeroed"] = stats_.bytes_zeroed.load();
  s["errors"] = stats_.errors.load();
  auto& layers = j["layers"];
  layers = nlohmann::json::array();
  for (const BlockDevice* d = top_.get(); d != nullptr; d = d->lower()) {
    nlohmann::json l;
    l["kind"] = std::string(d->kind());
    l["size"] = d->geometry().size;
    d->describe(&l);
    std::string line = d->status_line();
    if (!line.empty()) l["status"] = line;
    layers.push_back(std::move(l));
  }
  if (io_ != top_) {
    nlohmann::json sb;
    io_->describe(&sb);
    j["sub_block"] = std::move(sb);
  }
  if (tree_) {
    j["table"] = tree_->table().to_json();
    j["tree"] = tree_->status();
  }
  return j;
}

}  // namespace bowstack
