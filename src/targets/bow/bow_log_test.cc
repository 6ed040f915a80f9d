// Log validation on hand-made images: the fields a corrupt or hostile image
// can set must be refused with EINVAL, never trusted for sizing.
#include "targets/bow/bow_log.h"

#include <gtest/gtest.h>

#include <memory>
#include <vector>

#include "core/memory_device.h"

namespace bowstack::bow {
namespace {

constexpr uint32_t kBs = 512;

// A one-block chain on a 16-block device: block 0 is the log (entry 0 saves
// block 0 to block 1), the live block 0 is at block 2.
std::vector<std::byte> minimal_image(uint32_t sequence) {
  std::vector<std::byte> img(16 * kBs);
  LogHeader h;
  h.block_size = kBs;
  h.count = 1;
  h.sequence = sequence;
  h.sector0 = 2;
  pack_header(h, img);
  pack_entry(LogEntry{.source = 0, .dest = 1, .size = kBs, .checksum = 0},
             std::span(img).subspan(kHeaderSize, kEntrySize));
  return img;
}

Result<LogChain> validate(const std::vector<std::byte>& img) {
  MemoryDevice dev(img.size());
  EXPECT_TRUE(dev.write(0, img, 0).ok());
  return read_and_validate(dev);
}

TEST(BowLogTest, MinimalChainValidates) {
  auto chain = validate(minimal_image(0));
  ASSERT_TRUE(chain.ok()) << chain.status().message();
  EXPECT_EQ(chain->blocks.size(), 1u);
  EXPECT_EQ(chain->block_size, kBs);
}

// Found by fuzz_bow_log: the newest block's sequence sized the chain before
// anything was read, so a sequence of 0xffffffff allocated ~200 GB.
TEST(BowLogTest, HugeSequenceIsRefusedWithoutAllocating) {
  auto chain = validate(minimal_image(0xffffffffu));
  ASSERT_FALSE(chain.ok());
  EXPECT_EQ(chain.status().code(), EINVAL);
  EXPECT_NE(chain.status().message().find("more log blocks than the device has blocks"), std::string::npos)
      << chain.status().message();
}

TEST(BowLogTest, SequenceWithoutItsPredecessorsIsRefused) {
  // Plausible for the device size, but log block 4 is not where entry 0 says.
  auto chain = validate(minimal_image(5));
  ASSERT_FALSE(chain.ok());
  EXPECT_EQ(chain.status().code(), EINVAL);
}

// Found by fuzz_bow_log: an entry whose saved copy (dest) shares sectors
// with the range it saves (source) validated. No writer makes one (the write
// the copy was saved for would have overwritten it), and restoring it cannot
// be resumed: its own write destroys what a re-run must read again, so a
// restore stopped after it refused to continue (checksum mismatch). Refused.
TEST(BowLogTest, EntryWhoseCopyOverlapsItsSourceIsRefused) {
  // Entry 1 saves the two blocks at 4 to `dest`.
  auto image = [](uint64_t dest) {
    std::vector<std::byte> img = minimal_image(0);
    LogHeader h = unpack_header(img);
    h.count = 2;
    pack_header(h, img);
    pack_entry(LogEntry{.source = 4, .dest = dest, .size = 2 * kBs, .checksum = 0},
               std::span(img).subspan(kHeaderSize + kEntrySize, kEntrySize));
    return img;
  };
  for (uint64_t dest : {3u, 4u, 5u}) {
    SCOPED_TRACE(dest);
    auto chain = validate(image(dest));
    ASSERT_FALSE(chain.ok());
    EXPECT_EQ(chain.status().code(), EINVAL);
    EXPECT_NE(chain.status().message().find("log block 0 entry 1: the saved copy at dest"), std::string::npos)
        << chain.status().message();
  }
  // Adjacent on either side is fine.
  for (uint64_t dest : {2u, 6u}) {
    auto chain = validate(image(dest));
    EXPECT_TRUE(chain.ok()) << dest << ": " << chain.status().message();
  }
}

}  // namespace
}  // namespace bowstack::bow
