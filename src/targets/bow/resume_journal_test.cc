// ResumeJournal::load on what a crash or a damaged disk can leave: an empty
// or cut header is no journal; after a valid header, reading stops at the
// first record that is cut or fails its CRC (a torn tail), and what came
// before it is kept.
#include "targets/bow/resume_journal.h"

#include <gtest/gtest.h>

#include <vector>

namespace bowstack::bow {
namespace {

constexpr const char* kPath = "j";

void put(MemEnv& env, const std::vector<unsigned char>& bytes) {
  auto f = env.open(kPath, OpenMode::kCreateTruncate);
  ASSERT_TRUE(f.ok());
  ASSERT_TRUE((*f)->write(0, std::as_bytes(std::span(bytes))).ok());
}

std::vector<unsigned char> journal(size_t extents) {
  std::vector<unsigned char> b(64 * (1 + extents));
  JournalHeader h{.block_size = 4096, .blocks = 1000, .s0c_initial = 7, .log0_dest = 56, .log0_crc = 0x1234};
  encode_record(JournalRecord::kHeader, &h, nullptr, b.data());
  for (size_t i = 0; i < extents; ++i) {
    JournalExtent x{i % 2 ? JournalRecord::kClaim : JournalRecord::kFree, 10 + 10 * i, 5};
    encode_record(x.type, nullptr, &x, b.data() + 64 * (1 + i));
  }
  return b;
}

TEST(ResumeJournal, EmptyOrCutHeaderIsNoJournal) {
  MemEnv env;
  EXPECT_EQ(ResumeJournal::load(&env, kPath).status().code(), ENOENT);
  put(env, {});
  auto empty = ResumeJournal::load(&env, kPath);
  ASSERT_FALSE(empty.ok());
  EXPECT_EQ(empty.status().code(), EINVAL);
  EXPECT_NE(empty.status().message().find("no valid header"), std::string::npos) << empty.status().message();
  auto cut = journal(0);
  cut.resize(40);
  put(env, cut);
  EXPECT_EQ(ResumeJournal::load(&env, kPath).status().code(), EINVAL);
  auto bad = journal(0);
  bad[20] ^= 1;  // the CRC no longer matches
  put(env, bad);
  EXPECT_EQ(ResumeJournal::load(&env, kPath).status().code(), EINVAL);
}

TEST(ResumeJournal, ReadingStopsAtATornOrCorruptRecord) {
  MemEnv env;
  put(env, journal(3));
  auto whole = ResumeJournal::load(&env, kPath);
  ASSERT_TRUE(whole.ok()) << whole.status().message();
  EXPECT_FALSE(whole->torn_tail);
  EXPECT_EQ(whole->valid_records, 4u);
  ASSERT_EQ(whole->extents.size(), 3u);
  EXPECT_EQ(whole->extents[1].type, JournalRecord::kClaim);
  EXPECT_EQ(whole->extents[2].start, 30u);
  EXPECT_EQ(whole->header.s0c_initial, 7u);
  EXPECT_EQ(whole->header.log0_crc, 0x1234u);

  // Reading stops before the damaged record; what precedes it is kept.
  auto expect_torn_after = [&](const std::vector<unsigned char>& bytes, uint64_t records) {
    put(env, bytes);
    auto got = ResumeJournal::load(&env, kPath);
    ASSERT_TRUE(got.ok()) << got.status().message();
    EXPECT_TRUE(got->torn_tail);
    EXPECT_EQ(got->valid_records, records);
    EXPECT_EQ(got->extents.size(), records - 1);
  };
  auto cut = journal(3);
  cut.resize(cut.size() - 10);  // the last record half written
  expect_torn_after(cut, 3);
  auto bad = journal(3);
  bad[64 * 2 + 17] ^= 1;  // the second extent's start: its CRC fails
  expect_torn_after(bad, 2);
}

}  // namespace
}  // namespace bowstack::bow

namespace bowstack::bow {
namespace {

// The header counts the records a sync made durable, in a second step once
// they are: a journal cut later at a record boundary, or an older copy, is
// told from a torn tail (which a crash may leave and which loses nothing
// that was promised).
TEST(ResumeJournal, TheHeaderCountsDurableRecordsSoALostTailShows) {
  MemEnv env;
  JournalHeader h{.block_size = 4096, .blocks = 1000, .s0c_initial = 7, .log0_dest = 56, .log0_crc = 0x1234};
  auto j = ResumeJournal::create(&env, kPath, h, {{JournalRecord::kFree, 10, 100}});
  ASSERT_TRUE(j.ok()) << j.status().message();
  auto loaded = ResumeJournal::load(&env, kPath);
  ASSERT_TRUE(loaded.ok());
  EXPECT_EQ(loaded->header.version, 2u);
  EXPECT_EQ(loaded->header.durable_records, 2u);
  (*j)->append(JournalRecord::kClaim, 20, 1);
  (*j)->append(JournalRecord::kClaim, 30, 2);
  ASSERT_TRUE((*j)->sync().ok());
  loaded = ResumeJournal::load(&env, kPath);
  ASSERT_TRUE(loaded.ok());
  EXPECT_EQ(loaded->header.durable_records, 4u);
  EXPECT_EQ(loaded->valid_records, 4u);
  EXPECT_FALSE(loaded->tail_lost());
  // Appended but not synced: the header says nothing about it yet.
  (*j)->append(JournalRecord::kRelease, 20, 1);
  j.value().reset();
  // Cut exactly at a record boundary: the last claim is gone.
  auto bytes = env.contents(kPath);
  ASSERT_NE(bytes, nullptr);
  std::vector<std::byte> cut(bytes->begin(), bytes->begin() + 3 * 64);
  env.restore({{kPath, cut}});
  loaded = ResumeJournal::load(&env, kPath);
  ASSERT_TRUE(loaded.ok());
  EXPECT_FALSE(loaded->torn_tail);
  EXPECT_EQ(loaded->valid_records, 3u);
  EXPECT_TRUE(loaded->tail_lost());
  // A torn record beyond the durable ones is not a lost tail.
  std::vector<std::byte> torn(bytes->begin(), bytes->end());
  torn.resize(4 * 64 + 30);
  env.restore({{kPath, torn}});
  loaded = ResumeJournal::load(&env, kPath);
  ASSERT_TRUE(loaded.ok());
  EXPECT_TRUE(loaded->torn_tail);
  EXPECT_FALSE(loaded->tail_lost());
  // A version 1 journal (no count) is read as before and never judged.
  auto v1 = journal(1);
  JournalHeader old = h;
  old.version = 1;
  encode_record(JournalRecord::kHeader, &old, nullptr, v1.data());
  put(env, v1);
  loaded = ResumeJournal::load(&env, kPath);
  ASSERT_TRUE(loaded.ok());
  EXPECT_EQ(loaded->header.version, 1u);
  EXPECT_EQ(loaded->header.durable_records, 0u);
  EXPECT_FALSE(loaded->tail_lost());
}

}  // namespace
}  // namespace bowstack::bow
