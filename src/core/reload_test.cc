// Volume::reload: swaps under I/O, keeps unchanged nodes, and leaves the
// old table serving whenever anything fails.
#include <gtest/gtest.h>

#include <atomic>
#include <cstring>
#include <nlohmann/json.hpp>
#include <random>
#include <thread>
#include <vector>

#include "core/core_test_util.h"
#include "core/file_device.h"
#include "core/volume.h"

namespace bowstack {
namespace {

using testing::g_pass_alive;
using testing::Pass;
using testing::TempDir;
using testing::test_registry;

constexpr uint64_t kSize = 4 << 20;

class ReloadTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(FileDevice::create(img_, kSize).ok());
    auto t = DeviceTree::build(parse(plain()), registry_, {});
    ASSERT_TRUE(t.ok()) << t.status().context();
    volume_ = std::make_unique<Volume>(std::move(t.value()));
  }
  void TearDown() override { volume_.reset(); }

  TableNode parse(const std::string& text) {
    auto t = parse_table_text(text, registry_);
    EXPECT_TRUE(t.ok()) << t.status().context();
    return t.value();
  }
  std::string plain() const { return R"({"file":")" + img_ + R"("})"; }
  std::string pass(const std::string& tag, const std::string& below) const {
    return R"({"target":"pass","params":{"tag":")" + tag + R"("},"devices":{"data":)" + below +
           R"(,"meta":null}})";
  }
  Result<ReloadReport> reload(const std::string& text, bool noflush = false) {
    return volume_->reload(parse(text), registry_, {}, ReloadOptions{noflush});
  }

  TargetRegistry registry_ = test_registry();
  TempDir dir_;
  const std::string img_ = dir_ / "d.img";
  std::unique_ptr<Volume> volume_;
};

TEST_F(ReloadTest, KeepsUnchangedNodesAndDropsTheRest) {
  auto r = reload(pass("a", plain()));
  ASSERT_TRUE(r.ok()) << r.status().context();
  EXPECT_EQ(r->built_nodes, 1u);
  BlockDevice* a = &volume_->top();
  ASSERT_NE(a, nullptr);
  // Insert b above a: a is the same instance.
  r = reload(pass("b", pass("a", plain())));
  ASSERT_TRUE(r.ok()) << r.status().context();
  EXPECT_EQ(r->kept_nodes, 1u);
  EXPECT_EQ(r->built_nodes, 1u);
  EXPECT_EQ(r->dropped_nodes, 0u);
  EXPECT_EQ(volume_->top().lower(), a);
  EXPECT_EQ(volume_->message("tag", "$.devices.data").value(), "a");
  EXPECT_EQ(g_pass_alive.load(), 2);
  // Remove a: b changes too (its child changed), both go.
  r = reload(pass("b", plain()), /*noflush=*/true);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->dropped_nodes, 2u);
  EXPECT_EQ(r->built_nodes, 1u);
  EXPECT_EQ(g_pass_alive.load(), 1);
  EXPECT_EQ(volume_->table(), parse(pass("b", plain())).to_json());
  r = reload(plain());
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(g_pass_alive.load(), 0);
  EXPECT_EQ(volume_->top().kind(), "file");
}

TEST_F(ReloadTest, FailuresLeaveTheOldTableServing) {
  ASSERT_TRUE(reload(pass("a", plain())).ok());
  const nlohmann::json before = volume_->table();
  BlockDevice* top = &volume_->top();
  const std::string small = dir_ / "small.img";
  struct Case {
    std::string table, error;
  };
  const Case cases[] = {
      {R"({"file":")" + (dir_ / "missing.img") + R"("})", "does not exist"},
      {pass("a", R"({"file":")" + img_ + R"(","read_only":true})"), "a reload cannot change that"},
      {R"({"target":"pass","params":{"fail":true},"devices":{"data":)" + plain() + "}}",
       "pass: asked to fail"},
      {R"({"file":")" + small + R"(","create":"1M"})", "size is 1048576 bytes, the export's 4194304"},
  };
  for (const Case& c : cases) {
    auto r = reload(c.table);
    ASSERT_FALSE(r.ok()) << c.table;
    EXPECT_NE(r.status().context().find(c.error), std::string::npos) << r.status().context();
    EXPECT_EQ(volume_->table(), before);
    EXPECT_FALSE(volume_->suspended());
    // Built before anything old was dropped: the old nodes never left.
    EXPECT_EQ(&volume_->top(), top) << c.table;
    EXPECT_EQ(volume_->message("tag").value(), "a");
    EXPECT_EQ(g_pass_alive.load(), 1);
  }
}

TEST_F(ReloadTest, ATakeOverFailureRebuildsTheOldNode) {
  // The new node takes over the old one's side store, so the old one goes
  // before the new one is built; when the new one fails, the old one is
  // built again from its table.
  const std::string meta = dir_ / "m";
  auto with_meta = [&](const std::string& params) {
    return R"({"target":"pass","params":{)" + params + R"(},"devices":{"data":)" + plain() +
           R"(,"meta":{"file":")" + meta + R"("}}})";
  };
  ASSERT_TRUE(reload(with_meta(R"("tag":"a")")).ok());
  const int built = testing::g_pass_built.load();
  auto r = reload(with_meta(R"("tag":"b","fail":true)"));
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().context().find("the old table serves on: $: pass: asked to fail"), std::string::npos)
      << r.status().context();
  EXPECT_EQ(testing::g_pass_built.load(), built + 1);  // "a", built again
  EXPECT_EQ(volume_->message("tag").value(), "a");
  EXPECT_EQ(g_pass_alive.load(), 1);
  // And a take-over that works.
  r = reload(with_meta(R"("tag":"c")"));
  ASSERT_TRUE(r.ok()) << r.status().context();
  EXPECT_EQ(volume_->message("tag").value(), "c");
  EXPECT_EQ(g_pass_alive.load(), 1);
}

TEST_F(ReloadTest, SuspendPausesTaskJobs) {
  ASSERT_TRUE(reload(R"({"target":"scan","devices":{"data":)" + plain() + "}}").ok());
  auto state = [&] { return volume_->status()["tree"]["jobs"][0]["state"].get<std::string>(); };
  auto wait_for = [&](const std::string& want) {
    for (int i = 0; i < 2000 && state() != want; ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    return state();
  };
  EXPECT_EQ(wait_for("running"), "running");
  ASSERT_TRUE(volume_->suspend().ok());
  EXPECT_EQ(wait_for("paused"), "paused");
  volume_->resume();
  EXPECT_EQ(wait_for("running"), "running");
  // The job is the node's: a reload that keeps the node keeps it running.
  ASSERT_TRUE(reload(pass("p", R"({"target":"scan","devices":{"data":)" + plain() + "}}")).ok());
  auto kept_state = [&] {
    return volume_->status()["tree"]["devices"]["data"]["jobs"][0]["state"].get<std::string>();
  };
  for (int i = 0; i < 2000 && kept_state() != "running"; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  EXPECT_EQ(kept_state(), "running");
  EXPECT_EQ(volume_->message("job scan pause").value(), "paused");
  EXPECT_EQ(volume_->message("job scan stop").value(), "stopped");
}

TEST_F(ReloadTest, AUserSuspendOutlivesAReload) {
  ASSERT_TRUE(volume_->suspend().ok());
  ASSERT_TRUE(reload(pass("a", plain())).ok());
  EXPECT_TRUE(volume_->suspended());
  volume_->resume();
}

// Writers and readers keep going while the table cycles; every read sees
// what was last written to its block, and no request fails.
TEST_F(ReloadTest, NoRequestFailsOrIsLostAcrossReloads) {
  constexpr uint64_t kBlock = 4096, kBlocks = kSize / kBlock;
  constexpr int kThreads = 4;
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> errors{0}, ops{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      // Each thread owns the blocks b with b % kThreads == t.
      std::vector<uint32_t> version(kBlocks, 0);
      std::mt19937_64 rng(static_cast<uint64_t>(t) + 1);
      std::vector<std::byte> buf(kBlock), got(kBlock);
      while (!stop.load()) {
        const uint64_t b = (rng() % (kBlocks / kThreads)) * kThreads + static_cast<uint64_t>(t);
        if (rng() % 2 == 0) {
          ++version[b];
          std::memset(buf.data(), static_cast<int>(version[b] & 0xff), kBlock);
          std::memcpy(buf.data(), &b, sizeof b);
          if (!volume_->write(b * kBlock, buf, 0).ok()) ++errors;
        } else {
          if (!volume_->read(b * kBlock, got).ok()) {
            ++errors;
          } else if (version[b] > 0 && static_cast<uint8_t>(got[kBlock - 1]) != (version[b] & 0xff)) {
            ++errors;
          }
        }
        if (rng() % 64 == 0 && !volume_->flush().ok()) ++errors;
        ++ops;
      }
    });
  }
  const std::string tables[] = {plain(), pass("a", plain()), pass("b", pass("a", plain())),
                                pass("a", plain())};
  for (int i = 0; i < 20; ++i) {
    auto r = reload(tables[i % 4], /*noflush=*/i % 2 == 1);
    ASSERT_TRUE(r.ok()) << r.status().context();
    // A failing one in between changes nothing.
    EXPECT_FALSE(
        reload(R"({"target":"pass","params":{"fail":true},"devices":{"data":)" + plain() + "}}").ok());
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  stop = true;
  for (auto& t : threads) t.join();
  EXPECT_EQ(errors.load(), 0u);
  EXPECT_GT(ops.load(), 0u);
}

}  // namespace
}  // namespace bowstack
