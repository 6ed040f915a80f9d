#include <gtest/gtest.h>

#include <chrono>
#include <nlohmann/json.hpp>
#include <thread>

#include "targets/csum/csum_test_util.h"

namespace bowstack::csum {
namespace {

class CsumScrubTest : public CsumTest {
 protected:
  static std::string scrub_state(CsumTarget& t) {
    nlohmann::json j;
    t.describe(&j);
    return j["scrub"]["state"].get<std::string>();
  }
  // Polls the node's status until the scrub reaches `state` (10 s at most).
  static bool wait_state(CsumTarget& t, const std::string& state) {
    for (int i = 0; i < 1000; ++i) {
      if (scrub_state(t) == state) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return false;
  }
  void write_some(CsumTarget& t, uint64_t blocks) {
    std::mt19937_64 rng(7);
    const Bytes a = fill(rng, blocks * kBs);
    ASSERT_TRUE(t.write(0, a, 0).ok());
    ASSERT_TRUE(t.flush().ok());
  }
};

TEST_F(CsumScrubTest, FindsAFlippedByteListsItAndRewriteAcceptsIt) {
  {
    auto t = open();
    ASSERT_TRUE(t.ok()) << t.status().message();
    write_some(**t, 100);
  }
  poke(img_, 42 * kBs + 5, 0x10);
  CsumOptions o;
  o.scrub_rate = 0;
  auto t = open(o);
  ASSERT_TRUE(t.ok()) << t.status().message();
  CsumTarget& c = **t;
  EXPECT_EQ(scrub_state(c), "never");
  auto r = c.message("scrub");
  ASSERT_TRUE(r.ok()) << r.status().message();
  ASSERT_TRUE(wait_state(c, "done"));
  nlohmann::json j;
  c.describe(&j);
  EXPECT_EQ(j["scrub"]["found"], 1u);
  EXPECT_EQ(j["mismatches"], 0u);  // reads found nothing: scrub fails no one
  auto list = c.message("mismatches");
  ASSERT_TRUE(list.ok());
  auto l = nlohmann::json::parse(*list);
  ASSERT_EQ(l["blocks"].size(), 1u);
  EXPECT_EQ(l["blocks"][0]["block"], 42u);
  EXPECT_EQ(l["blocks"][0]["offset"], 42u * kBs);
  EXPECT_EQ(l["blocks"][0]["found_by"], "scrub");

  Bytes got(kBs);
  EXPECT_EQ(c.read(42 * kBs, got).code(), EIO);
  // Explicit acceptance: the block reads (as the flipped data) and leaves the list.
  auto rw = c.message("rewrite 42");
  ASSERT_TRUE(rw.ok()) << rw.status().message();
  ASSERT_TRUE(c.read(42 * kBs, got).ok());
  EXPECT_TRUE(nlohmann::json::parse(*c.message("mismatches"))["blocks"].empty());
  EXPECT_EQ(c.message("rewrite 2048").status().code(), EINVAL);
  EXPECT_EQ(c.message("rewrite x").status().code(), EINVAL);
  // A second pass finds nothing.
  ASSERT_TRUE(c.message("scrub start").ok());
  ASSERT_TRUE(wait_state(c, "done"));
  c.describe(&j);
  EXPECT_EQ(j["scrub"]["found"], 0u);
}

TEST_F(CsumScrubTest, PauseResumeStopAndRate) {
  {
    auto t = open();
    ASSERT_TRUE(t.ok());
    write_some(**t, 1000);
  }
  CsumOptions o;
  o.scrub_rate = 64 << 10;  // one chunk, then a long wait
  auto t = open(o);
  ASSERT_TRUE(t.ok());
  CsumTarget& c = **t;
  EXPECT_EQ(c.message("scrub stop").status().code(), EINVAL);  // none running
  ASSERT_TRUE(c.message("scrub").ok());
  EXPECT_EQ(c.message("scrub").status().code(), EBUSY);
  ASSERT_TRUE(c.message("scrub pause").ok());
  EXPECT_TRUE(wait_state(c, "paused"));
  ASSERT_TRUE(c.message("scrub resume").ok());
  EXPECT_TRUE(wait_state(c, "running"));
  ASSERT_TRUE(c.message("scrub_rate=0").ok());
  EXPECT_TRUE(wait_state(c, "done"));
  EXPECT_EQ(c.message("scrub_rate=fast").status().code(), EINVAL);
  ASSERT_TRUE(c.message("scrub_rate=1K").ok());
  ASSERT_TRUE(c.message("scrub").ok());
  ASSERT_TRUE(c.message("scrub stop").ok());
  EXPECT_EQ(scrub_state(c), "stopped");
}

TEST_F(CsumScrubTest, APassContinuesAfterARestart) {
  {
    CsumOptions o;
    o.scrub_rate = 4 << 10;
    auto t = open(o);
    ASSERT_TRUE(t.ok());
    write_some(**t, 2000);
    ASSERT_TRUE((*t)->message("scrub").ok());
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }  // a clean close in the middle of the pass
  {
    auto m = FileDevice::open(meta_);
    ASSERT_TRUE(m.ok());
    auto md = CsumMetadata::open(m.value());
    ASSERT_TRUE(md.ok());
    EXPECT_EQ((*md)->superblock().scrub_state, 1u);  // running
    EXPECT_GT((*md)->superblock().scrub_cursor, 0u);
  }
  CsumOptions o;
  o.scrub_rate = 0;
  auto t = open(o);
  ASSERT_TRUE(t.ok());
  EXPECT_TRUE(wait_state(**t, "done"));
}

TEST_F(CsumScrubTest, ConcurrentWritesNeverLookBad) {
  CsumOptions o;
  o.scrub_rate = 0;
  auto t = open(o);
  ASSERT_TRUE(t.ok());
  CsumTarget& c = **t;
  std::atomic<bool> stop{false};
  std::thread writer([&] {
    std::mt19937_64 rng(3);
    while (!stop) {
      const uint64_t b = rng() % 2048;
      const Bytes a = fill(rng, kBs);
      ASSERT_TRUE(c.write(b * kBs, a, 0).ok());
      if (rng() % 16 == 0) {
        ASSERT_TRUE(c.flush().ok());
      }
    }
  });
  for (int pass = 0; pass < 3; ++pass) {
    ASSERT_TRUE(c.message("scrub").ok());
    ASSERT_TRUE(wait_state(c, "done"));
  }
  stop = true;
  writer.join();
  nlohmann::json j;
  c.describe(&j);
  EXPECT_EQ(j["scrub"]["found"], 0u);
}

}  // namespace
}  // namespace bowstack::csum
