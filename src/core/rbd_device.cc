#include "core/rbd_device.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <condition_variable>
#include <nlohmann/json.hpp>

#if defined(__SANITIZE_THREAD__)
#define BOWSTACK_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define BOWSTACK_TSAN 1
#endif
#endif

#ifdef BOWSTACK_TSAN
#include <sanitizer/tsan_interface.h>
// Ceph's client libraries are not built with ThreadSanitizer: their
// lock-free code and their own atomics look like races to it, in the
// libraries and in the std::string code they run from our binary. Ignore
// reports whose stacks pass through librados or Ceph's common library.
// Our completion path is called from librbd alone (its stacks end there)
// and stays checked. Linked into every binary that uses RbdDevice.
extern "C" const char* __tsan_default_suppressions() {
  return "called_from_lib:libceph-common.so\ncalled_from_lib:librados.so\ncalled_from_lib:librbd.so\n"
         "race:libceph-common.so\nrace:librados.so\n";
}
// librbd hands a request from the submitting thread to the thread that
// completes it through synchronisation TSan cannot see: say so.
#define BOWSTACK_HANDOFF_RELEASE(p) __tsan_release(p)
#define BOWSTACK_HANDOFF_ACQUIRE(p) __tsan_acquire(p)
#else
#define BOWSTACK_HANDOFF_RELEASE(p) (void)(p)
#define BOWSTACK_HANDOFF_ACQUIRE(p) (void)(p)
#endif

namespace bowstack {

// Counts the requests of one caller still in librbd and keeps the first
// error. Lives on the caller's stack: on_complete touches it only under its
// mutex, and the caller leaves wait() only once the count is zero, after
// the last on_complete has let the mutex go.
struct RbdDevice::Waiter {
  explicit Waiter(RbdDevice* d) : dev(d) {}
  RbdDevice* const dev;
  std::mutex mu;
  std::condition_variable cv;
  unsigned pending = 0;  // guarded by mu
  int error = 0;         // guarded by mu: the first negative result

  void done(int r) {
    std::lock_guard lock(mu);
    if (r < 0 && error == 0) error = r;
    if (--pending == 0) cv.notify_all();
  }
  // The first negative result of the requests started, or 0.
  int wait() {
    std::unique_lock lock(mu);
    cv.wait(lock, [this] { return pending == 0; });
    return error;
  }
};

void RbdDevice::on_complete(rbd_completion_t c, void* arg) {
  auto* w = static_cast<Waiter*>(arg);
  BOWSTACK_HANDOFF_ACQUIRE(w);
  // A success may count bytes beyond INT_MAX (a large discard): only the
  // sign matters.
  const ssize_t rv = rbd_aio_get_return_value(c);
  const int r = rv < 0 ? static_cast<int>(rv) : 0;
  rbd_aio_release(c);
  RbdDevice* dev = w->dev;
  dev->in_flight_.fetch_sub(1, std::memory_order_relaxed);
  dev->slots_.release();
  w->done(r);  // last: the caller may return (and free w) from here on
}

template <typename Submit>
void RbdDevice::start(Waiter* w, Submit&& submit) {
  slots_.acquire();
  in_flight_.fetch_add(1, std::memory_order_relaxed);
  {
    std::lock_guard lock(w->mu);
    ++w->pending;
  }
  BOWSTACK_HANDOFF_RELEASE(w);
  rbd_completion_t c = nullptr;
  int r = rbd_aio_create_completion(w, &RbdDevice::on_complete, &c);
  if (r == 0) {
    r = submit(c);
    if (r < 0) rbd_aio_release(c);
  }
  if (r < 0) {  // never reached librbd: complete it here
    in_flight_.fetch_sub(1, std::memory_order_relaxed);
    slots_.release();
    w->done(r);
  }
}

RbdDevice::RbdDevice(RbdOptions opts, std::string name) : opts_(std::move(opts)), name_(std::move(name)) {}

Result<std::shared_ptr<RbdDevice>> RbdDevice::open(const RbdOptions& opts) {
  std::string name = "rbd:" + opts.pool + "/" + opts.image + (opts.snapshot ? "@" + *opts.snapshot : "");
  std::shared_ptr<RbdDevice> dev(new RbdDevice(opts, std::move(name)));
  if (Status s = dev->connect(); !s.ok()) return s;
  return dev;
}

Status RbdDevice::connect() {
  const bool read_only = opts_.read_only || opts_.snapshot.has_value();
  auto cluster = RbdCluster::connect(
      RbdClusterOptions{
          .pool = opts_.pool, .conf = opts_.conf, .id = opts_.id, .connect_timeout = opts_.connect_timeout},
      name_);
  if (!cluster.ok()) return cluster.status();
  cluster_ = std::move(cluster.value());
  const char* snap = opts_.snapshot ? opts_.snapshot->c_str() : nullptr;
  const std::optional<uint64_t> create =
      opts_.create_size > 0 ? std::optional<uint64_t>(opts_.create_size) : std::nullopt;
  if (Status s = cluster_->open_image(opts_.image, snap, read_only, create, name_, &image_); !s.ok())
    return s;
  if (!read_only) {
    if (Status s = take_lock(); !s.ok()) return s;
  } else if (opts_.refuse_if_locked && !opts_.snapshot) {
    if (Status s = check_unlocked(); !s.ok()) return s;
  }
  uint64_t size = 0;
  int r = rbd_get_size(image_, &size);
  if (r < 0) return rbd_error(r, fmt::format("{}: cannot read the image's size", name_));
  if (size == 0 && opts_.create_size > 0 && !read_only) {
    // An empty side store is a new one: size it, holding the lock.
    r = rbd_resize(image_, opts_.create_size);
    if (r < 0)
      return rbd_error(r, fmt::format("{}: cannot size the image to {} bytes", name_, opts_.create_size));
    size = opts_.create_size;
  }
  geometry_.size = size - size % 512;
  if (geometry_.size == 0) return Status::Error(EINVAL, name_ + ": the image is smaller than 512 bytes");
  geometry_.logical_block_size = 512;
  geometry_.preferred_block_size = 4096;
  // RADOS writes any byte range of an object atomically; librbd splits at
  // object boundaries itself.
  geometry_.accepts_unaligned = true;
  caps_.read_only = read_only;
  caps_.flush = true;
  caps_.fua = !read_only;
  caps_.trim = !read_only;
  caps_.write_zeroes = !read_only;
  caps_.block_status = true;
  caps_.multi_conn = true;  // one image handle: a flush covers every caller's writes
  return Status::Ok();
}

Status RbdDevice::take_lock() {
  uint64_t features = 0;
  int r = rbd_get_features(image_, &features);
  if (r < 0) return rbd_error(r, fmt::format("{}: cannot read the image's features", name_));
  if (features & RBD_FEATURE_EXCLUSIVE_LOCK) {
    r = rbd_lock_acquire(image_, RBD_LOCK_MODE_EXCLUSIVE);
    int owner = 0;
    if (r == 0 && rbd_is_exclusive_lock_owner(image_, &owner) == 0 && owner) {
      lock_ = Lock::kExclusive;
      return Status::Ok();
    }
    std::string holders;
    char* owners[8] = {};
    size_t count = 8;
    rbd_lock_mode_t mode{};
    if (rbd_lock_get_owners(image_, &mode, owners, &count) == 0) {
      for (size_t i = 0; i < count; ++i) holders += (holders.empty() ? "" : ", ") + std::string(owners[i]);
      rbd_lock_get_owners_cleanup(owners, count);
    }
    // librbd says EROFS when the owner refuses to hand the lock over.
    const std::string detail = r < 0 && r != -EROFS ? fmt::format(" ({})", strerror(-r)) : "";
    return Status::Error(EBUSY,
                         fmt::format("{}: the image is in use: another client holds its exclusive lock{}{}; "
                                     "stop it first (a crashed holder's lock is broken once the cluster "
                                     "notices it is gone, about 30 s)",
                                     name_, holders.empty() ? "" : " (" + holders + ")", detail));
  }
  // No exclusive-lock feature: an advisory lock, which outlives a crash.
  char host[256] = {};
  ::gethostname(host, sizeof(host) - 1);
  cookie_ = fmt::format("bowstack pid {} on {}", ::getpid(), host);
  r = rbd_lock_exclusive(image_, cookie_.c_str());
  if (r == -EBUSY || r == -EEXIST) {
    return Status::Error(EBUSY,
                         fmt::format("{}: the image is in use: another client holds its advisory lock "
                                     "(`rbd lock ls {}/{}` shows it; `rbd lock rm` breaks a stale one)",
                                     name_, opts_.pool, opts_.image));
  }
  if (r < 0) return rbd_error(r, fmt::format("{}: cannot take an advisory lock on the image", name_));
  lock_ = Lock::kAdvisory;
  return Status::Ok();
}

Status RbdDevice::check_unlocked() {
  // The exclusive lock and advisory locks are both lockers of the image's
  // header object. librbd says ERANGE, with the lengths it needs, when a
  // buffer is too short (its tag's always is at first).
  int exclusive = 0;
  std::string tag, clients, cookies, addrs;
  ssize_t n = -ERANGE;
  for (int attempt = 0; attempt < 3 && n == -ERANGE; ++attempt) {
    size_t tag_len = tag.size(), clients_len = clients.size(), cookies_len = cookies.size(),
           addrs_len = addrs.size();
    n = rbd_list_lockers(image_, &exclusive, tag.data(), &tag_len, clients.data(), &clients_len,
                         cookies.data(), &cookies_len, addrs.data(), &addrs_len);
    tag.resize(tag_len);
    clients.resize(clients_len);
    cookies.resize(cookies_len);
    addrs.resize(addrs_len);
  }
  if (n == 0) return Status::Ok();
  if (n < 0) return rbd_error(static_cast<int>(n), fmt::format("{}: cannot list the image's locks", name_));
  // Each buffer holds one NUL-terminated string per locker.
  std::string holder = clients.c_str();
  if (!addrs.empty() && addrs[0] != '\0') holder += fmt::format(" at {}", addrs.c_str());
  return Status::Error(EBUSY,
                       fmt::format("{}: the image is in use: {} holds a lock on it, so a server may be "
                                   "writing it; stop that first (a crashed holder's lock is broken "
                                   "once the cluster notices it is gone, about 30 s, or by `rbd lock "
                                   "rm`)",
                                   name_, holder));
}

RbdDevice::~RbdDevice() {
  if (image_) {
    if (lock_ == Lock::kAdvisory) rbd_unlock(image_, cookie_.c_str());
    if (int r = rbd_close(image_); r < 0)
      spdlog::error("{}: closing the image failed: {}", name_, strerror(-r));
  }
  // cluster_ goes after the image is closed (member order).
}

Status RbdDevice::failed() const {
  std::lock_guard lock(failure_mu_);
  return Status::Error(EIO, fmt::format("{}: an earlier flush failed ({}); the device can no longer promise "
                                        "that writes are stable",
                                        name_, failure_.message()));
}

Status RbdDevice::result(int r, const char* what, uint64_t offset, uint64_t length) {
  if (r >= 0) return Status::Ok();
  return rbd_error(r, fmt::format("{}: {} of {} bytes at {}", name_, what, length, offset));
}

Status RbdDevice::read(uint64_t offset, std::span<std::byte> buf) {
  Waiter w(this);
  start(&w, [&](rbd_completion_t c) {
    return rbd_aio_read(image_, offset, buf.size(), reinterpret_cast<char*>(buf.data()), c);
  });
  return result(w.wait(), "read", offset, buf.size());
}

Status RbdDevice::write(uint64_t offset, std::span<const std::byte> buf, uint32_t flags) {
  if (poisoned_.load(std::memory_order_acquire)) return failed();
  Waiter w(this);
  start(&w, [&](rbd_completion_t c) {
    return rbd_aio_write(image_, offset, buf.size(), reinterpret_cast<const char*>(buf.data()), c);
  });
  if (Status s = result(w.wait(), "write", offset, buf.size()); !s.ok()) return s;
  return (flags & kFua) ? flush_now() : Status::Ok();
}

Status RbdDevice::write_batch(std::span<const WriteRef> writes, uint32_t flags) {
  if (poisoned_.load(std::memory_order_acquire)) return failed();
  Waiter w(this);
  for (const WriteRef& wr : writes) {
    start(&w, [&](rbd_completion_t c) {
      return rbd_aio_write(image_, wr.offset, wr.data.size(), reinterpret_cast<const char*>(wr.data.data()),
                           c);
    });
  }
  if (int r = w.wait(); r < 0)
    return rbd_error(r, fmt::format("{}: a write of a batch of {}", name_, writes.size()));
  return (flags & kFua) ? flush_now() : Status::Ok();
}

Status RbdDevice::flush_now() {
  Waiter w(this);
  start(&w, [&](rbd_completion_t c) { return rbd_aio_flush(image_, c); });
  flushes_.fetch_add(1, std::memory_order_relaxed);
  const int r = w.wait();
  if (r >= 0) return Status::Ok();
  Status s = rbd_error(r, name_ + ": flush");
  {
    std::lock_guard lock(failure_mu_);
    if (failure_.ok()) {
      failure_ = s;
      spdlog::error("{}; every later flush and write to {} fails", why(s), name_);
    }
  }
  poisoned_.store(true, std::memory_order_release);
  return Status::Error(EIO, s.context());
}

Status RbdDevice::flush() {
  if (caps_.read_only) return Status::Ok();
  if (poisoned_.load(std::memory_order_acquire)) return failed();
  return flush_now();
}

Status RbdDevice::trim(uint64_t offset, uint64_t length, uint32_t flags) {
  if (poisoned_.load(std::memory_order_acquire)) return failed();
  Waiter w(this);
  start(&w, [&](rbd_completion_t c) { return rbd_aio_discard(image_, offset, length, c); });
  if (Status s = result(w.wait(), "discard", offset, length); !s.ok()) return s;
  return (flags & kFua) ? flush_now() : Status::Ok();
}

Status RbdDevice::write_zeroes(uint64_t offset, uint64_t length, uint32_t flags) {
  if (poisoned_.load(std::memory_order_acquire)) return failed();
  // NO_HOLE: librbd's thick-provision flag writes the zeroes out rather than
  // deallocating objects.
  const int zero_flags = (flags & kNoHole) ? RBD_WRITE_ZEROES_FLAG_THICK_PROVISION : 0;
  Waiter w(this);
  start(&w,
        [&](rbd_completion_t c) { return rbd_aio_write_zeroes(image_, offset, length, c, zero_flags, 0); });
  if (Status s = result(w.wait(), "write-zeroes", offset, length); !s.ok()) return s;
  return (flags & kFua) ? flush_now() : Status::Ok();
}

Status RbdDevice::block_status(uint64_t offset, uint64_t length, std::vector<Extent>* out) {
  struct Walk {
    uint64_t pos;
    uint64_t end;
    std::vector<Extent>* out;
  } walk{offset, offset + length, out};
  // Called in offset order for each allocated extent, clipped to the range.
  auto cb = [](uint64_t off, size_t len, int exists, void* arg) -> int {
    auto* w = static_cast<Walk*>(arg);
    if (!exists) return 0;
    const uint64_t from = std::max(off, w->pos), to = std::min<uint64_t>(off + len, w->end);
    if (to <= from) return 0;
    if (from > w->pos) w->out->push_back({from - w->pos, kExtentHole | kExtentZero});
    if (!w->out->empty() && w->out->back().flags == 0 && from == w->pos) {
      w->out->back().length += to - from;
    } else {
      w->out->push_back({to - from, 0});
    }
    w->pos = to;
    return 0;
  };
  const size_t before = out->size();
  const int r = rbd_diff_iterate2(image_, nullptr, offset, length, 1 /* include parent */,
                                  1 /* whole object */, cb, &walk);
  if (r < 0) {
    // The range may be reported as data whatever went wrong: that is
    // always true, only less useful.
    out->resize(before);
    spdlog::debug("{}: rbd_diff_iterate2 failed ({}); reporting data", name_, strerror(-r));
    return BlockDevice::block_status(offset, length, out);
  }
  if (walk.pos < walk.end) out->push_back({walk.end - walk.pos, kExtentHole | kExtentZero});
  return Status::Ok();
}

void RbdDevice::describe(nlohmann::json* out) const {
  (*out)["pool"] = opts_.pool;
  (*out)["image"] = opts_.image;
  (*out)["snapshot"] = opts_.snapshot ? nlohmann::json(*opts_.snapshot) : nlohmann::json(nullptr);
  (*out)["conf"] = opts_.conf;
  (*out)["id"] = opts_.id;
  (*out)["read_only"] = caps_.read_only;
  (*out)["lock"] = lock_ == Lock::kExclusive  ? "exclusive-lock"
                   : lock_ == Lock::kAdvisory ? "advisory"
                                              : "none";
  (*out)["in_flight"] = in_flight_.load(std::memory_order_relaxed);
  (*out)["flushes"] = flushes_.load(std::memory_order_relaxed);
  (*out)["flush_failed"] = poisoned_.load(std::memory_order_relaxed);
}

std::string RbdDevice::status_line() const {
  std::string s = name_ + (caps_.read_only ? " (rbd, read-only)" : " (rbd)");
  if (lock_ == Lock::kExclusive) s += " exclusive lock held";
  if (lock_ == Lock::kAdvisory) s += " advisory lock held";
  if (poisoned_.load(std::memory_order_relaxed)) s += " FLUSH FAILED";
  return s;
}

}  // namespace bowstack
