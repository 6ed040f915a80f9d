#include "core/write_behind.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <future>
#include <thread>
#include <vector>

namespace bowstack {
namespace {

using namespace std::chrono_literals;

struct TestOp : QueuedOp {
  int id = 0;
  std::vector<uint64_t> new_blocks;  // filled by block_queued
};

// Records what the hooks saw, in order. Thread-safe (hooks run on jobs).
struct Recorder {
  std::mutex mu;
  std::vector<std::string> events;  // "commit N", "apply ID", ...
  std::vector<size_t> batch_sizes;
  std::vector<uint64_t> released;
  Status commit_result;
  void add(std::string e) {
    std::lock_guard lock(mu);
    events.push_back(std::move(e));
  }
};

WriteBehind::Hooks hooks_for(Recorder* r) {
  WriteBehind::Hooks h;
  h.block_queued = [](QueuedOp& op, uint64_t b) { static_cast<TestOp&>(op).new_blocks.push_back(b); };
  h.commit = [r](WriteBehind::Batch& batch) {
    std::lock_guard lock(r->mu);
    r->batch_sizes.push_back(batch.size());
    r->events.push_back("commit " + std::to_string(batch.size()));
    return r->commit_result;
  };
  h.apply = [r](WriteBehind::Batch& batch, const Status& committed) {
    for (auto& op : batch) {
      r->add("apply " + std::to_string(static_cast<TestOp&>(*op).id));
      op->status = committed.ok() ? Status::Ok() : Status::Error(EIO, "commit failed");
    }
  };
  h.block_released = [r](uint64_t b, bool) {
    // Under the pipeline's lock; the recorder's own lock is a leaf.
    std::lock_guard lock(r->mu);
    r->released.push_back(b);
  };
  return h;
}

// Makes the apply hook wait until `released` is set.
void hold_apply(WriteBehind::Hooks* h, std::shared_future<void> released) {
  h->apply = [inner = h->apply, released](WriteBehind::Batch& b, const Status& c) {
    released.wait();
    inner(b, c);
  };
}

std::shared_ptr<TestOp> op(int id, uint64_t first, uint64_t end, uint64_t bytes = 4096, bool wait = false) {
  auto o = std::make_shared<TestOp>();
  o->id = id;
  o->first = first;
  o->end = end;
  o->bytes = bytes;
  o->wait = wait;
  return o;
}

// Every batch is committed before any of its operations is applied, and
// operations are applied in the order they were queued.
TEST(WriteBehind, CommitsBeforeApplyingInQueueOrder) {
  for (bool apply_job : {false, true}) {
    Recorder r;
    auto jobs = std::make_shared<JobRunner>("t");
    WriteBehind wb(jobs, {.apply_job = apply_job, .blocks = 100}, hooks_for(&r));
    for (int i = 0; i < 50; ++i) ASSERT_TRUE(wb.submit(op(i, i, i + 1)).ok());
    ASSERT_TRUE(wb.drain().ok());
    int next = 0;
    size_t committed = 0;  // operations covered by commits so far
    for (const auto& e : r.events) {
      if (e.rfind("commit ", 0) == 0) {
        committed += std::stoul(e.substr(7));
      } else {
        EXPECT_EQ(e, "apply " + std::to_string(next)) << apply_job;
        ++next;
        EXPECT_LE(static_cast<size_t>(next), committed) << "applied before its commit";
      }
    }
    EXPECT_EQ(next, 50);
    EXPECT_EQ(wb.stats().pending_ops, 0u);
    EXPECT_EQ(wb.stats().pending_bytes, 0u);
  }
}

// While the commit job is busy, everything queued meanwhile goes in one
// batch: N writers, far fewer barriers.
TEST(WriteBehind, GroupsOperationsQueuedDuringACommit) {
  Recorder r;
  std::promise<void> release;
  std::shared_future<void> released = release.get_future().share();
  std::atomic<bool> first{true};
  auto h = hooks_for(&r);
  auto inner = h.commit;
  h.commit = [&, inner](WriteBehind::Batch& b) {
    if (first.exchange(false)) released.wait();  // hold the first commit
    return inner(b);
  };
  WriteBehind wb(std::make_shared<JobRunner>("t"), {.blocks = 1000}, h);
  ASSERT_TRUE(wb.submit(op(0, 0, 1)).ok());
  while (wb.stats().batches == 0) std::this_thread::sleep_for(1ms);
  for (int i = 1; i <= 200; ++i) ASSERT_TRUE(wb.submit(op(i, i, i + 1)).ok());
  release.set_value();
  ASSERT_TRUE(wb.drain().ok());
  ASSERT_EQ(r.batch_sizes.size(), 2u);
  EXPECT_EQ(r.batch_sizes[1], 200u);
}

// The pending set: a block is reported when the first queued operation
// takes it and when the last one lets it go; reads wait for it.
TEST(WriteBehind, PendingBlocksAndReadYourWrites) {
  Recorder r;
  std::promise<void> release;
  std::shared_future<void> released = release.get_future().share();
  auto h = hooks_for(&r);
  hold_apply(&h, released);
  WriteBehind wb(std::make_shared<JobRunner>("t"), {.blocks = 100}, h);
  auto a = op(1, 10, 13);
  auto b = op(2, 12, 15);
  ASSERT_TRUE(wb.submit(a).ok());
  ASSERT_TRUE(wb.submit(b).ok());
  EXPECT_EQ(a->new_blocks, (std::vector<uint64_t>{10, 11, 12}));
  EXPECT_EQ(b->new_blocks, (std::vector<uint64_t>{13, 14}));  // 12 was held already
  wb.wait_not_pending(0, 10);                                 // untouched blocks: at once
  wb.wait_not_pending(15, 100);
  auto reader = std::async(std::launch::async, [&] { wb.wait_not_pending(14, 15); });
  EXPECT_EQ(reader.wait_for(50ms), std::future_status::timeout);
  release.set_value();
  reader.get();
  ASSERT_TRUE(wb.drain().ok());
  std::sort(r.released.begin(), r.released.end());
  EXPECT_EQ(r.released, (std::vector<uint64_t>{10, 11, 12, 13, 14}));
}

// A submitter over the memory bound waits until applied operations free it.
TEST(WriteBehind, BoundsPendingMemory) {
  Recorder r;
  std::promise<void> release;
  std::shared_future<void> released = release.get_future().share();
  auto h = hooks_for(&r);
  hold_apply(&h, released);
  WriteBehind wb(std::make_shared<JobRunner>("t"), {.max_pending_bytes = 8192}, h);
  ASSERT_TRUE(wb.submit(op(1, 0, 0, 4096)).ok());
  ASSERT_TRUE(wb.submit(op(2, 0, 0, 4096)).ok());
  auto third = std::async(std::launch::async, [&] { return wb.submit(op(3, 0, 0, 4096)); });
  EXPECT_EQ(third.wait_for(50ms), std::future_status::timeout);
  release.set_value();
  EXPECT_TRUE(third.get().ok());
  ASSERT_TRUE(wb.drain().ok());
  // Alone, an operation larger than the bound still goes.
  EXPECT_TRUE(wb.submit(op(4, 0, 0, 1 << 20)).ok());
  EXPECT_TRUE(wb.drain().ok());
}

// A waited operation returns its own status; a failed commit fails its
// batch, and a sticky failure refuses later operations without holding
// their blocks.
TEST(WriteBehind, FailuresReachWaitersAndStick) {
  Recorder r;
  r.commit_result = Status::Error(EIO, "metadata write failed");
  auto h = hooks_for(&r);
  WriteBehind* self = nullptr;
  auto inner = h.commit;
  h.commit = [&, inner](WriteBehind::Batch& b) {
    Status s = inner(b);
    if (!s.ok()) (void)self->fail(s);
    return s;
  };
  WriteBehind wb(std::make_shared<JobRunner>("t"), {.blocks = 10}, h);
  self = &wb;
  auto w = op(1, 0, 2, 0, /*wait=*/true);
  Status s = wb.submit(w);
  EXPECT_EQ(s.code(), EIO);
  EXPECT_TRUE(w->done);
  EXPECT_TRUE(wb.failed());
  EXPECT_EQ(wb.drain().code(), EIO);
  auto later = op(2, 3, 4);
  EXPECT_EQ(wb.submit(later).code(), EIO);
  EXPECT_FALSE(later->queued);
  wb.wait_not_pending(0, 10);  // nothing held
}

// drain() ends a gathering wait at once; a lone write is committed after
// the gather window without one.
TEST(WriteBehind, DrainEndsGathering) {
  Recorder r;
  WriteBehind wb(std::make_shared<JobRunner>("t"), {.gather_us = 5'000'000}, hooks_for(&r));
  ASSERT_TRUE(wb.submit(op(1, 0, 0)).ok());
  const auto t0 = std::chrono::steady_clock::now();
  ASSERT_TRUE(wb.drain().ok());
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 4s);  // not the 5 s window
}

// stop() applies everything queued; later submissions are refused.
TEST(WriteBehind, StopAppliesWhatIsQueued) {
  Recorder r;
  auto jobs = std::make_shared<JobRunner>("t");
  std::vector<std::shared_ptr<TestOp>> ops;
  {
    WriteBehind wb(jobs, {.gather_us = 100000, .apply_job = true, .blocks = 64}, hooks_for(&r));
    for (int i = 0; i < 20; ++i) {
      ops.push_back(op(i, i, i + 1));
      ASSERT_TRUE(wb.submit(ops.back()).ok());
    }
    wb.stop();
    for (const auto& o : ops) EXPECT_TRUE(o->done);
    EXPECT_EQ(wb.submit(op(99, 0, 1)).code(), EIO);
  }
  // The runner stops jobs last started first (apply before commit): that
  // order must not hang either.
  Recorder r2;
  WriteBehind wb2(jobs, {.apply_job = true}, hooks_for(&r2));
  ASSERT_TRUE(wb2.submit(op(1, 0, 0)).ok());
  jobs->stop_all();
  EXPECT_EQ(wb2.stats().pending_ops, 0u);
}

// The committed hook may give memory back before apply.
TEST(WriteBehind, CommittedHookFreesMemoryEarly) {
  Recorder r;
  std::promise<void> release;
  std::shared_future<void> released = release.get_future().share();
  auto h = hooks_for(&r);
  h.committed = [](WriteBehind::Batch& b) {
    for (auto& o : b) o->bytes /= 2;
  };
  hold_apply(&h, released);
  WriteBehind wb(std::make_shared<JobRunner>("t"), {.apply_job = true}, h);
  ASSERT_TRUE(wb.submit(op(1, 0, 0, 1000)).ok());
  for (int i = 0; i < 200 && wb.stats().pending_bytes != 500; ++i) std::this_thread::sleep_for(5ms);
  EXPECT_EQ(wb.stats().pending_bytes, 500u);
  release.set_value();
  ASSERT_TRUE(wb.drain().ok());
  EXPECT_EQ(wb.stats().pending_bytes, 0u);
}

}  // namespace
}  // namespace bowstack
