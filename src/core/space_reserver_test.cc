#include "core/space_reserver.h"

#include <gtest/gtest.h>

#include <set>

#include "core/memory_device.h"

namespace bowstack {
namespace {

// Reports 4 KiB blocks in `holes` as holes and counts reserve() calls,
// which fill the holes they cover.
class HoleyDevice final : public StackedDevice {
 public:
  explicit HoleyDevice(uint64_t size) : StackedDevice(std::make_shared<MemoryDevice>(size)) {}
  std::string_view kind() const override { return "holey"; }
  Status block_status(uint64_t offset, uint64_t length, std::vector<Extent>* out) override {
    ++queries;
    for (uint64_t b = offset / 4096; b < (offset + length + 4095) / 4096; ++b) {
      out->push_back({4096, holes.count(b) ? uint32_t{kExtentHole} : 0u});
    }
    return Status::Ok();
  }
  Status reserve(uint64_t offset, uint64_t length) override {
    ++reserves;
    if (full) return Status::Error(ENOSPC, "full");
    for (uint64_t b = offset / 4096; b < (offset + length + 4095) / 4096; ++b) holes.erase(b);
    return Status::Ok();
  }
  std::set<uint64_t> holes;
  int queries = 0, reserves = 0;
  bool full = false;
};

TEST(SpaceReserver, AsksOncePerChunkAndReservesOnlyWhereThereAreHoles) {
  HoleyDevice dev(8 << 20);  // 8 chunks of 1 MiB
  dev.holes = {300, 301};    // in chunk 1
  SpaceReserver r(&dev, 8 << 20);
  // Chunk 0 is wholly allocated: asked once, never reserved.
  for (int i = 0; i < 10; ++i) ASSERT_TRUE(r.reserve(4096 * i, 4096).ok());
  EXPECT_EQ(dev.queries, 1);
  EXPECT_EQ(dev.reserves, 0);
  // Chunk 1 has holes: a reservation there goes to the device; it fills
  // them, so the chunk is asked again next time, found full, and costs
  // nothing more.
  ASSERT_TRUE(r.reserve(300 * 4096, 8192).ok());
  EXPECT_EQ(dev.reserves, 1);
  int q = dev.queries;
  ASSERT_TRUE(r.reserve(260 * 4096, 4096).ok());
  ASSERT_TRUE(r.reserve(320 * 4096, 4096).ok());
  EXPECT_EQ(dev.reserves, 1);
  EXPECT_EQ(dev.queries, q + 1);
  // A chunk that keeps a hole elsewhere pays a reservation per write.
  dev.holes = {400, 500};
  r.forget(1 << 20, 1 << 20);
  ASSERT_TRUE(r.reserve(400 * 4096, 4096).ok());
  ASSERT_TRUE(r.reserve(410 * 4096, 4096).ok());
  EXPECT_EQ(dev.reserves, 3);
  EXPECT_EQ(r.device_reserves(), 3u);
  // A range across chunks 1..3 with a hole in chunk 2 reserves only the
  // piece in chunk 2 (asking about chunks 2 and 3 once each).
  dev.holes = {600};
  r.forget(1 << 20, 1 << 20);
  q = dev.queries;
  ASSERT_TRUE(r.reserve((2 << 20) - 4096, (1 << 20) + 8192).ok());
  EXPECT_EQ(dev.reserves, 4);
  EXPECT_EQ(dev.queries, q + 3);
  // A full device fails the reservation with ENOSPC.
  dev.full = true;
  dev.holes.insert(300);
  r.forget(300 * 4096, 4096);
  EXPECT_EQ(r.reserve(300 * 4096, 4096).code(), ENOSPC);
  EXPECT_TRUE(r.reserve(0, 4096).ok());  // chunk 0 needs nothing
  // After forget() (a trim below may have punched holes) it asks again.
  dev.holes.insert(5);
  r.forget(5 * 4096, 4096);
  EXPECT_EQ(r.reserve(5 * 4096, 4096).code(), ENOSPC);
  // The end of a device that is not a whole number of chunks.
  SpaceReserver tail(&dev, (8 << 20) - 4096);
  EXPECT_TRUE(tail.reserve((8 << 20) - 8192, 8192).ok());
}

}  // namespace
}  // namespace bowstack
