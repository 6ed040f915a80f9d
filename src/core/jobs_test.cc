#include "core/jobs.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>

namespace bowstack {
namespace {

using namespace std::chrono_literals;

// Waits (bounded) until the job reaches `state`.
bool reaches(const Job* job, JobState state) {
  for (int i = 0; i < 2000; ++i) {
    if (job->state() == state) return true;
    std::this_thread::sleep_for(1ms);
  }
  return false;
}

TEST(Jobs, ATaskReportsProgressAndEndsDone) {
  JobRunner r("t");
  Job* j = r.start("scan", Job::Kind::kTask, [](JobControl& c) {
    c.set_total(4096);
    for (int i = 0; i < 4; ++i) c.done(1024);
    return Status::Ok();
  });
  ASSERT_TRUE(reaches(j, JobState::kDone));
  nlohmann::json d = r.describe();
  ASSERT_EQ(d.size(), 1u);
  EXPECT_EQ(d[0]["name"], "scan");
  EXPECT_EQ(d[0]["kind"], "task");
  EXPECT_EQ(d[0]["state"], "done");
  EXPECT_EQ(d[0]["done_bytes"], 4096);
  EXPECT_EQ(d[0]["total_bytes"], 4096);
  EXPECT_TRUE(d[0]["error"].is_null());
}

TEST(Jobs, AFailedJobIsVisible) {
  JobRunner r("t");
  Job* j =
      r.start("bad", Job::Kind::kTask, [](JobControl&) { return Status::Error(EIO, "leg 2 unreadable"); });
  ASSERT_TRUE(reaches(j, JobState::kFailed));
  nlohmann::json d;
  j->describe(&d);
  EXPECT_NE(d["error"].get<std::string>().find("leg 2 unreadable"), std::string::npos);
}

TEST(Jobs, PauseResumeAndStopATask) {
  JobRunner r("t");
  std::atomic<uint64_t> steps{0};
  Job* j = r.start("loop", Job::Kind::kTask, [&](JobControl& c) {
    while (c.wait_while_paused()) {
      ++steps;
      std::this_thread::sleep_for(100us);
    }
    return Status::Ok();
  });
  j->pause();
  ASSERT_TRUE(reaches(j, JobState::kPaused));
  const uint64_t at = steps.load();
  std::this_thread::sleep_for(20ms);
  EXPECT_EQ(steps.load(), at);
  j->resume();
  ASSERT_TRUE(reaches(j, JobState::kRunning));
  j->stop();
  EXPECT_EQ(j->state(), JobState::kStopped);
  EXPECT_GT(steps.load(), at);
}

TEST(Jobs, StopWakesAServiceThroughItsWakeFunction) {
  JobRunner r("svc");
  std::mutex mu;
  std::condition_variable cv;
  bool stop = false;
  int wakes = 0;
  Job* j = r.start(
      "commit", Job::Kind::kService,
      [&](JobControl&) {
        std::unique_lock lock(mu);
        cv.wait(lock, [&] { return stop; });
        return Status::Ok();
      },
      [&] {
        std::lock_guard lock(mu);
        stop = true;
        ++wakes;
        cv.notify_all();
      });
  j->pause();  // services are not paused
  EXPECT_EQ(j->state(), JobState::kRunning);
  r.stop_all();
  EXPECT_EQ(j->state(), JobState::kStopped);
  j->stop();  // idempotent: the wake function is not called again
  EXPECT_EQ(wakes, 1);
}

TEST(Jobs, RateLimitSlowsATask) {
  JobRunner r("t");
  Job* j = r.start("slow", Job::Kind::kTask, [](JobControl& c) {
    for (int i = 0; i < 10 && !c.stopping(); ++i) c.done(1000);
    return Status::Ok();
  });
  j->set_rate(0);
  ASSERT_TRUE(reaches(j, JobState::kDone));
  // The body waits until the rate is set, then does 5000 bytes at 50 kB/s:
  // at least 80 ms (the first 1000 bytes are due at 20 ms, the last at 100).
  std::atomic<bool> go{false};
  Job* limited = r.start("limited", Job::Kind::kTask, [&](JobControl& c) {
    while (!go.load()) std::this_thread::sleep_for(100us);
    for (int i = 0; i < 5 && !c.stopping(); ++i) c.done(1000);
    return Status::Ok();
  });
  limited->set_rate(50000);
  const auto start = std::chrono::steady_clock::now();
  go = true;
  ASSERT_TRUE(reaches(limited, JobState::kDone));
  EXPECT_GE(std::chrono::steady_clock::now() - start, 80ms);
  // A stop cuts a rate-limited sleep short.
  Job* crawl = r.start("crawl", Job::Kind::kTask, [](JobControl& c) {
    while (!c.stopping()) c.done(1 << 20);
    return Status::Ok();
  });
  crawl->set_rate(1);
  std::this_thread::sleep_for(10ms);
  crawl->stop();
  EXPECT_EQ(crawl->state(), JobState::kStopped);
}

TEST(Jobs, APauseOrARateChangeEndsARateSleep) {
  JobRunner r("t");
  // 1 MiB at 1 byte/s: without a wake-up the first done() sleeps for days.
  // The body starts once the rate is set.
  std::atomic<bool> go{false};
  Job* j = r.start("crawl", Job::Kind::kTask, [&](JobControl& c) {
    while (!go.load()) std::this_thread::sleep_for(100us);
    for (int i = 0; i < 3; ++i) {
      if (!c.wait_while_paused()) break;
      c.done(1 << 20);
    }
    return Status::Ok();
  });
  j->set_rate(1);
  go = true;
  std::this_thread::sleep_for(10ms);
  j->pause();  // the body reaches its pause point
  ASSERT_TRUE(reaches(j, JobState::kPaused));
  j->resume();
  j->set_rate(0);  // and a faster rate lets it finish
  ASSERT_TRUE(reaches(j, JobState::kDone));
}

TEST(Jobs, Messages) {
  JobRunner r("t");
  Job* j = r.start("scrub", Job::Kind::kTask, [](JobControl& c) {
    while (c.wait_while_paused()) std::this_thread::sleep_for(100us);
    return Status::Ok();
  });
  r.start("commit", Job::Kind::kService, [](JobControl& c) {
    while (!c.stopping()) std::this_thread::sleep_for(100us);
    return Status::Ok();
  });
  EXPECT_EQ(r.message("job scrub pause").value(), "paused");
  ASSERT_TRUE(reaches(j, JobState::kPaused));
  EXPECT_EQ(r.message("job scrub rate=1M").value(), "rate 1048576 bytes/s");
  EXPECT_EQ(r.message("job scrub resume").value(), "resumed");
  EXPECT_EQ(r.message("job commit pause").status().code(), EINVAL);
  EXPECT_EQ(r.message("job scrub dance").status().code(), EINVAL);
  EXPECT_EQ(r.message("job scrub rate=fast").status().code(), EINVAL);
  EXPECT_EQ(r.message("job other pause").status().code(), ENOTSUP);
  EXPECT_EQ(r.message("job").status().code(), ENOTSUP);
  EXPECT_EQ(r.message("job scrub").status().code(), EINVAL);
  EXPECT_EQ(r.message("checkpoint").status().code(), ENOTSUP);
  EXPECT_EQ(r.message("job scrub stop").value(), "stopped");
  EXPECT_EQ(j->state(), JobState::kStopped);
}

}  // namespace
}  // namespace bowstack
