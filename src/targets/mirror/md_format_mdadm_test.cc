// mdadm as the oracle for md_format and md_bitmap_format: legs written into
// temp files must be what `mdadm --examine` and `mdadm --examine-bitmap`
// (-X) read as a raid1 member. Skipped where mdadm is not installed.
//
// -X reads a plain file as an external bitmap file (from byte 0), so the
// bitmap area is also copied into a file of its own; through a loop device
// (root and losetup only) it reads the leg itself, as on a disk.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include <filesystem>
#include <string>
#include <vector>

#include "targets/mirror/md_bitmap_format.h"
#include "targets/mirror/md_format.h"

namespace bowstack::mirror::md {
namespace {

using Bytes = std::vector<std::byte>;

constexpr uint64_t kLeg = 131072;  // 64 MiB
constexpr Uuid kArray = {0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef,
                         0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef};
constexpr Uuid kDevice = {0x0f, 0x1e, 0x2d, 0x3c, 0x4b, 0x5a, 0x69, 0x78,
                          0x87, 0x96, 0xa5, 0xb4, 0xc3, 0xd2, 0xe1, 0xf0};

std::string find_tool(const char* name) {
  for (const char* dir : {"/usr/sbin/", "/sbin/", "/usr/bin/", "/bin/"}) {
    const std::string p = std::string(dir) + name;
    if (::access(p.c_str(), X_OK) == 0) return p;
  }
  return {};
}

// Output (stdout and stderr) and exit status of a shell command.
struct Output {
  std::string out;
  int status = -1;
};
Output run(const std::string& cmd) {
  Output r;
  FILE* f = ::popen((cmd + " 2>&1").c_str(), "r");
  if (f == nullptr) return r;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, f)) > 0) r.out.append(buf, n);
  r.status = ::pclose(f);
  return r;
}

class MdMdadm : public ::testing::Test {
 protected:
  void SetUp() override {
    mdadm_ = find_tool("mdadm");
    if (mdadm_.empty()) GTEST_SKIP() << "mdadm is not installed (scripts/deps.sh installs it)";
    char tmpl[] = "/tmp/bowstack-md-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override {
    if (!dir_.empty()) std::filesystem::remove_all(dir_);
  }

  // A sparse leg of kLeg sectors: superblock at sector 8, bitmap area at
  // 8 + bitmap_offset with `bits` set, the bad-block log empty.
  std::string write_leg(const std::string& name, const Superblock& sb, const BitmapSuperblock& bm,
                        const std::vector<uint64_t>& bits) {
    const std::string path = dir_ + "/" + name;
    const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC, 0644);
    EXPECT_GE(fd, 0);
    EXPECT_EQ(::ftruncate(fd, static_cast<off_t>(kLeg * kSector)), 0);
    Bytes s(superblock_bytes(sb.max_dev()));
    encode_superblock(sb, s);
    EXPECT_EQ(::pwrite(fd, s.data(), s.size(), kSuperOffset * kSector), static_cast<ssize_t>(s.size()));
    Bytes area(bitmap_area_bytes(bitmap_bits(sb.size, bm.chunksize)));
    encode_bitmap_superblock(bm, area);
    for (uint64_t b : bits) set_bit(area, b, true);
    const off_t at = static_cast<off_t>((kSuperOffset + sb.bitmap_offset) * kSector);
    EXPECT_EQ(::pwrite(fd, area.data(), area.size(), at), static_cast<ssize_t>(area.size()));
    Bytes bblog(size_t{sb.bblog_size} * kSector, std::byte{kBblogEmptyByte});
    const off_t bb = static_cast<off_t>((kSuperOffset + sb.bblog_offset) * kSector);
    EXPECT_EQ(::pwrite(fd, bblog.data(), bblog.size(), bb), static_cast<ssize_t>(bblog.size()));
    ::close(fd);
    // The area alone, for -X on a plain file.
    const int afd = ::open((path + ".bitmap").c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    EXPECT_EQ(::write(afd, area.data(), area.size()), static_cast<ssize_t>(area.size()));
    ::close(afd);
    return path;
  }
  Output examine(const std::string& path) { return run(mdadm_ + " --examine " + path); }
  Output examine_bitmap(const std::string& path) { return run(mdadm_ + " --examine-bitmap " + path); }

  static Superblock leg(uint32_t role, uint32_t raid_disks) {
    auto g = plan_leg(kLeg, kLeg, 64 * 1024);
    EXPECT_TRUE(g.ok());
    return new_leg_superblock(*g, kArray, "bowstack:0", kDevice, role, raid_disks, encode_time(1700000000));
  }

  std::string mdadm_;
  std::string dir_;
};

// The value of mdadm's "Key : value" line for `key` (keys are right-aligned
// with spaces), or "(no KEY line)".
std::string field(const std::string& out, const std::string& key) {
  size_t at = 0;
  while (at < out.size()) {
    size_t end = out.find('\n', at);
    if (end == std::string::npos) end = out.size();
    const std::string line = out.substr(at, end - at);
    const size_t k = line.find_first_not_of(' ');
    if (k != std::string::npos && line.compare(k, key.size() + 3, key + " : ") == 0)
      return line.substr(k + key.size() + 3);
    at = end + 1;
  }
  return "(no " + key + " line)";
}
// The value up to its first space (mdadm appends human sizes and legends).
std::string word(const std::string& out, const std::string& key) {
  const std::string v = field(out, key);
  return v.substr(0, v.find(' '));
}
// What follows the checksum: " - correct" or " - expected X" (mdadm prints
// checksums with %x, not always 8 digits).
std::string verdict(const std::string& out) {
  const std::string v = field(out, "Checksum");
  return v.substr(std::min(v.size(), v.find(' ')));
}

TEST_F(MdMdadm, ExaminesACleanLegAsCreated) {
  const Superblock sb = leg(0, 2);
  const std::string path = write_leg("leg0", sb, new_bitmap_superblock(sb, 65536), {});
  const Output r = examine(path);
  ASSERT_EQ(r.status, 0) << r.out;
  EXPECT_EQ(field(r.out, "Magic"), "a92b4efc");
  EXPECT_EQ(field(r.out, "Version"), "1.2");
  EXPECT_EQ(field(r.out, "Feature Map"), "0x1");
  EXPECT_EQ(field(r.out, "Array UUID"), "01234567:89abcdef:01234567:89abcdef");
  EXPECT_EQ(field(r.out, "Name"), "bowstack:0");
  EXPECT_EQ(field(r.out, "Creation Time"), "Tue Nov 14 22:13:20 2023");
  EXPECT_EQ(field(r.out, "Raid Level"), "raid1");
  EXPECT_EQ(field(r.out, "Raid Devices"), "2");
  EXPECT_EQ(field(r.out, "Avail Dev Size"), "129024 sectors (63.00 MiB 66.06 MB)");
  EXPECT_EQ(field(r.out, "Array Size"), "64512 KiB (63.00 MiB 66.06 MB)");
  EXPECT_EQ(field(r.out, "Data Offset"), "2048 sectors");
  EXPECT_EQ(field(r.out, "Super Offset"), "8 sectors");
  EXPECT_EQ(field(r.out, "State"), "clean");
  EXPECT_EQ(field(r.out, "Device UUID"), "0f1e2d3c:4b5a6978:8796a5b4:c3d2e1f0");
  EXPECT_EQ(field(r.out, "Internal Bitmap"), "8 sectors from superblock");
  EXPECT_EQ(field(r.out, "Bad Block Log"), "512 entries available at offset 16 sectors");
  EXPECT_EQ(field(r.out, "Checksum"), "5afea970 - correct");
  EXPECT_EQ(field(r.out, "Events"), "0");
  EXPECT_EQ(field(r.out, "Device Role"), "Active device 0");
  EXPECT_EQ(word(r.out, "Array State"), "AA");
  EXPECT_EQ(r.out.find("Recovery Offset"), std::string::npos);
  EXPECT_EQ(r.out.find("Flags"), std::string::npos);
}

TEST_F(MdMdadm, ExaminesADirtyRecoveringWriteMostlyLeg) {
  Superblock sb = leg(1, 3);
  sb.feature_map |= kFeatureRecoveryOffset;
  sb.recovery_offset = 4096;
  sb.resync_offset = 0;
  sb.devflags = kDevflagWriteMostly;
  sb.events = 7;
  sb.dev_roles[2] = kRoleFaulty;  // slot 2's leg failed: nobody holds role 2
  BitmapSuperblock bm = new_bitmap_superblock(sb, 65536);
  bm.events_cleared = 5;
  const std::string path = write_leg("leg1", sb, bm, {0, 5, 6, 7});
  const Output r = examine(path);
  ASSERT_EQ(r.status, 0) << r.out;
  EXPECT_EQ(field(r.out, "Feature Map"), "0x3");
  EXPECT_EQ(field(r.out, "Raid Devices"), "3");
  EXPECT_EQ(field(r.out, "Recovery Offset"), "4096 sectors");
  EXPECT_EQ(field(r.out, "State"), "active");
  EXPECT_EQ(field(r.out, "Flags"), "write-mostly");
  EXPECT_EQ(verdict(r.out), " - correct");
  EXPECT_EQ(field(r.out, "Events"), "7");
  EXPECT_EQ(field(r.out, "Device Role"), "Active device 1");
  EXPECT_EQ(word(r.out, "Array State"), "AA.");

  const Output x = examine_bitmap(path + ".bitmap");
  ASSERT_EQ(x.status, 0) << x.out;
  EXPECT_EQ(field(x.out, "Magic"), "6d746962");
  EXPECT_EQ(field(x.out, "Version"), "4");
  EXPECT_EQ(field(x.out, "UUID"), "01234567:89abcdef:01234567:89abcdef");
  EXPECT_EQ(field(x.out, "Events"), "7");
  EXPECT_EQ(field(x.out, "Events Cleared"), "5");
  EXPECT_EQ(field(x.out, "State"), "OK");
  EXPECT_EQ(field(x.out, "Chunksize"), "64 KB");
  EXPECT_EQ(field(x.out, "Daemon"), "5s flush period");
  EXPECT_EQ(field(x.out, "Sync Size"), "64512 (63.00 MiB 66.06 MB)");
  EXPECT_EQ(field(x.out, "Bitmap"), "1008 bits (chunks), 4 dirty (0.4%)");
}

TEST_F(MdMdadm, ReportsTheChecksumMdComputes) {
  // A byte of events flipped after encoding: mdadm names the checksum the
  // superblock should carry, which must be ours.
  Superblock sb = leg(0, 2);
  sb.dev_roles.resize(3);  // odd max_dev: the sum ends on one u16
  Bytes s(superblock_bytes(sb.max_dev()));
  encode_superblock(sb, s);
  std::string path = write_leg("odd", sb, new_bitmap_superblock(sb, 65536), {});
  Output r = examine(path);
  ASSERT_EQ(r.status, 0) << r.out;
  EXPECT_EQ(verdict(r.out), " - correct");
  s[200] ^= std::byte{1};
  const int fd = ::open(path.c_str(), O_WRONLY);
  ASSERT_EQ(::pwrite(fd, s.data(), s.size(), kSuperOffset * kSector), static_cast<ssize_t>(s.size()));
  ::close(fd);
  char expected[64];
  std::snprintf(expected, sizeof expected, "%x", superblock_csum(s, sb.max_dev()));
  r = examine(path);
  EXPECT_EQ(verdict(r.out), std::string(" - expected ") + expected) << r.out;
}

TEST_F(MdMdadm, DropsABitmapOfAnotherArray) {
  // mdadm checks the bitmap's magic and uuid at bitmap_offset; a mismatch
  // makes it drop the bitmap (Feature Map 0x0), as check_bitmap refuses it.
  Superblock sb = leg(0, 2);
  BitmapSuperblock bm = new_bitmap_superblock(sb, 65536);
  bm.uuid[0] ^= 0xff;
  EXPECT_FALSE(check_bitmap(sb, bm).ok());
  const Output r = examine(write_leg("foreign", sb, bm, {}));
  EXPECT_EQ(field(r.out, "Feature Map"), "0x0");
}

TEST_F(MdMdadm, ExaminesTheBitmapThroughALoopDevice) {
  const std::string losetup = find_tool("losetup");
  if (::geteuid() != 0 || losetup.empty() || ::access("/dev/loop-control", F_OK) != 0)
    GTEST_SKIP() << "needs root, losetup and loop devices";
  Superblock sb = leg(0, 2);
  sb.events = 3;
  BitmapSuperblock bm = new_bitmap_superblock(sb, 65536);
  bm.state = kBitmapStale;
  const std::string path = write_leg("loop", sb, bm, {1, 2, 1000});
  const Output attach = run(losetup + " --find --show --read-only " + path);
  ASSERT_EQ(attach.status, 0) << attach.out;
  const std::string dev = attach.out.substr(0, attach.out.find('\n'));
  const Output x = examine_bitmap(dev);
  const Output detach = run(losetup + " --detach " + dev);
  EXPECT_EQ(detach.status, 0) << detach.out;
  ASSERT_EQ(x.status, 0) << x.out;
  EXPECT_EQ(field(x.out, "Events"), "3");
  EXPECT_EQ(field(x.out, "State"), "Out of date");
  EXPECT_EQ(field(x.out, "Bitmap"), "1008 bits (chunks), 3 dirty (0.3%)");
}

}  // namespace
}  // namespace bowstack::mirror::md
