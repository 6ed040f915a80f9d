// A base device over a Ceph RBD image, through librbd's asynchronous C API
// (docs/rbd.md).
//
// Every request is one or more rbd_aio_* calls completed through a single
// callback (on_complete); a synchronous caller waits on its own Waiter.
// At most kQueueDepth librbd requests are in flight at once; callers beyond
// that wait for a slot, so a burst cannot queue unbounded memory in librbd.
//
// Ownership: a writable image is opened with its exclusive lock taken and
// kept (rbd_lock_acquire: the lock is not handed over when another client
// asks for it), so a second server on the image fails at open with EBUSY
// naming the holder, as two servers on one file do. An image without the
// exclusive-lock feature gets an advisory lock (rbd_lock_exclusive) with a
// cookie naming this process; it is not released if the process dies, and
// `rbd lock rm` breaks it. A snapshot is opened read-only, without a lock.
//
// Durability: librbd's cache (rbd_cache) may hold writes until a flush;
// flush() is rbd_aio_flush. FUA is a write followed by a flush. A failed
// flush (or a failed flush after a FUA write) is sticky: every later write
// and flush fails with EIO.
//
// Thread-safety: every BlockDevice method may run concurrently (librbd's
// image handle is thread-safe). Lifetime: the destructor waits for nothing
// (every method returns only once its requests completed), then closes the
// image (releasing the lock) and the cluster connection.
#pragma once

#include <atomic>
#include <mutex>
#include <optional>
#include <semaphore>
#include <string>

#include "core/block_device.h"
#include "core/rbd_cluster.h"

namespace bowstack {

struct RbdOptions {
  std::string pool = "rbd";
  std::string image;
  std::string conf = "/etc/ceph/ceph.conf";
  std::string id = "admin";  // the client id: client.<id>
  std::optional<std::string> snapshot;
  bool read_only = false;  // implied by a snapshot
  // Seconds rados_connect may take before it fails (a monitor that is down
  // would otherwise hold the server's start for librados' 300 s default).
  unsigned connect_timeout = 30;
  // Non-zero: an image that does not exist is created with this many bytes,
  // and one of size 0 is grown to it (a side store's first use). Never
  // with a snapshot.
  uint64_t create_size = 0;
  // A read-only open of the image itself (not a snapshot) fails with EBUSY
  // while a client holds a lock on it (exclusive or advisory): a server may
  // be writing it. For offline tools, which must not read an image that is
  // changing under them; serving read-only does not ask this.
  bool refuse_if_locked = false;
};

class RbdDevice final : public BlockDevice {
 public:
  static constexpr unsigned kQueueDepth = 64;

  // Connects, opens the image and takes its lock. Errors name the image
  // ("rbd:POOL/IMAGE") and say what failed; a lock held elsewhere is EBUSY.
  static Result<std::shared_ptr<RbdDevice>> open(const RbdOptions& opts);
  ~RbdDevice() override;

  std::string_view kind() const override { return "rbd"; }
  Geometry geometry() const override { return geometry_; }
  Capabilities capabilities() const override { return caps_; }
  Status read(uint64_t offset, std::span<std::byte> buf) override;
  Status write(uint64_t offset, std::span<const std::byte> buf, uint32_t flags) override;
  Status flush() override;
  // The writes go out together (up to the queue depth), then one flush
  // when kFua is given.
  Status write_batch(std::span<const WriteRef> writes, uint32_t flags) override;
  Status trim(uint64_t offset, uint64_t length, uint32_t flags) override;
  Status write_zeroes(uint64_t offset, uint64_t length, uint32_t flags) override;
  // Allocated objects are data; ranges in no object (never written, or
  // discarded whole) are holes that read as zeroes (rbd_diff_iterate2 with
  // whole-object granularity: quick with the object-map feature, and an
  // object only partly written counts as data throughout).
  Status block_status(uint64_t offset, uint64_t length, std::vector<Extent>* out) override;
  void describe(nlohmann::json* out) const override;
  std::string status_line() const override;

  // "rbd:POOL/IMAGE" or "rbd:POOL/IMAGE@SNAP".
  const std::string& name() const { return name_; }

  // Waits for a group of librbd requests; completed by on_complete.
  struct Waiter;

 private:
  enum class Lock { kNone, kExclusive, kAdvisory };
  RbdDevice(RbdOptions opts, std::string name);
  Status connect();
  Status take_lock();
  // EBUSY naming the holder when a client holds a lock on the image.
  Status check_unlocked();
  // Submits one request through `submit` (which returns librbd's immediate
  // result and hands `c` to librbd on success) against `w`.
  template <typename Submit>
  void start(Waiter* w, Submit&& submit);
  // Maps a librbd result of an operation; remembers a failed flush.
  Status result(int r, const char* what, uint64_t offset, uint64_t length);
  Status flush_now();
  Status failed() const;
  // The one completion path of every librbd request; `arg` is its Waiter.
  static void on_complete(rbd_completion_t c, void* arg);

  const RbdOptions opts_;
  const std::string name_;
  std::unique_ptr<RbdCluster> cluster_;
  rbd_image_t image_ = nullptr;
  Lock lock_ = Lock::kNone;
  std::string cookie_;
  Geometry geometry_;
  Capabilities caps_;
  std::counting_semaphore<kQueueDepth> slots_{kQueueDepth};
  std::atomic<uint64_t> in_flight_{0};
  std::atomic<uint64_t> flushes_{0};
  std::atomic<bool> poisoned_{false};
  mutable std::mutex failure_mu_;
  Status failure_;  // the first failed flush, guarded by failure_mu_
};

}  // namespace bowstack
