// The offline tools' logic: XML dump/restore round trips, parse errors,
// written-since, check, and the export/apply incremental backup.
#include "targets/era/era_tools.h"

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>

#include "core/file_device.h"
#include "core/memory_device.h"
#include "targets/era/era_export.h"
#include "targets/era/era_target.h"
#include "targets/era/era_test_util.h"
#include "targets/era/era_xml.h"

namespace bowstack::era {
namespace {

using test_util::Bytes;
using test_util::pattern;
constexpr uint32_t kBs = 4096;

uint64_t meta_size(uint64_t nr) { return metadata_blocks_for(nr) * kMetaBlockSize; }

std::string capture(const std::function<Status(std::FILE*)>& fn) {
  char* buf = nullptr;
  size_t len = 0;
  std::FILE* f = open_memstream(&buf, &len);
  Status s = fn(f);
  std::fclose(f);
  std::string out(buf, len);
  std::free(buf);
  EXPECT_TRUE(s.ok()) << s.message();
  return out;
}

// Metadata with history: eras 1..3 archived, writes in era 4 (current).
struct Fixture {
  std::shared_ptr<MemoryDevice> origin, md;
  Fixture(uint64_t nr = 3000) {
    origin = std::make_shared<MemoryDevice>(nr * kBs);
    md = std::make_shared<MemoryDevice>(meta_size(nr));
    auto t = EraTarget::open(origin, md, EraOptions{});
    EXPECT_TRUE(t.ok());
    for (uint32_t era = 1; era <= 4; ++era) {
      for (uint64_t b = era; b < nr; b += 97 * era)
        EXPECT_TRUE(t.value()->write(b * kBs, pattern(b, kBs), 0).ok());
      if (era < 4) {
        EXPECT_TRUE(t.value()->checkpoint().ok());
      }
    }
    EXPECT_TRUE(t.value()->flush().ok());
  }
};

std::string dump(std::shared_ptr<BlockDevice> md, DumpOptions o = {}, bool json = false) {
  auto src = open_source(std::move(md), false);
  EXPECT_TRUE(src.ok()) << src.status().message();
  return capture(
      [&](std::FILE* f) { return json ? write_json(src.value(), o, f) : write_xml(src.value(), o, f); });
}

TEST(EraToolsTest, XmlRoundTripBothStyles) {
  Fixture fx;
  for (bool compact : {false, true}) {
    const std::string xml = dump(fx.md, DumpOptions{.compact = compact});
    EXPECT_NE(xml.find("<superblock uuid=\""), std::string::npos);
    EXPECT_NE(xml.find("block_size=\"8\" nr_blocks=\"3000\" current_era=\"4\">"), std::string::npos);
    EXPECT_NE(xml.find("<writeset era=\"4\" nr_bits=\"3000\">"), std::string::npos);
    EXPECT_NE(
        xml.find(compact ? "<marked block_begin=\"4\" len=\"1\"/>" : "<bit block=\"4\" value=\"true\"/>"),
        std::string::npos);
    EXPECT_NE(xml.find("<era block=\"1\" era=\"1\"/>"), std::string::npos);
    auto model = parse_xml(xml);
    ASSERT_TRUE(model.ok()) << model.status().message();
    auto restored = std::make_shared<MemoryDevice>(meta_size(3000));
    ASSERT_TRUE(restore_metadata(model.value(), restored).ok());
    EXPECT_EQ(dump(restored, DumpOptions{.compact = compact}), xml);
    EXPECT_EQ(dump(restored, DumpOptions{.logical = true}), dump(fx.md, DumpOptions{.logical = true}));
    // A target opens restored metadata and archives its current writeset.
    auto t = EraTarget::open(fx.origin, restored, EraOptions{});
    ASSERT_TRUE(t.ok()) << t.status().message();
    EXPECT_EQ(t.value()->current_era(), 5u);
  }
}

TEST(EraToolsTest, LogicalDumpAndWrittenSince) {
  Fixture fx;
  const std::string logical = dump(fx.md, DumpOptions{.logical = true});
  EXPECT_EQ(logical.find("<writeset"), std::string::npos);
  EXPECT_NE(logical.find("<era block=\"4\" era=\"4\"/>"), std::string::npos) << "current writeset folded in";
  auto src = open_source(fx.md, false);
  ASSERT_TRUE(src.ok());
  auto since4 = written_since(src.value(), 4);
  ASSERT_TRUE(since4.ok());
  uint64_t n = 0;
  for (auto [b, e] : since4.value()) n += e - b;
  EXPECT_EQ(n, (3000 - 4 + 387) / 388);  // blocks 4, 392, 780, ... written in era 4
  auto since5 = written_since(src.value(), 5);
  ASSERT_TRUE(since5.ok());
  EXPECT_TRUE(since5->empty());
  auto since0 = written_since(src.value(), 0);
  ASSERT_TRUE(since0.ok());
  ASSERT_EQ(since0->size(), 1u);
  EXPECT_EQ(since0->front(), (std::pair<uint64_t, uint64_t>{0, 3000}));
  const std::string json = dump(fx.md, {}, true);
  EXPECT_NE(json.find("\"current_era\":4"), std::string::npos);
  EXPECT_NE(json.find("\"marked\":[[4,5],"), std::string::npos);
}

TEST(EraToolsTest, BadXmlGivesOneLineErrors) {
  const char* head = "<superblock uuid=\"\" block_size=\"8\" nr_blocks=\"10\" current_era=\"3\">\n";
  struct Case {
    std::string xml;
    std::string want;
  } cases[] = {
      {"<superblock", "XML line 1"},
      {"<nope/>", "expected one <superblock>"},
      {"<superblock uuid=\"\" block_size=\"7\" nr_blocks=\"10\" current_era=\"3\"/>", "power of two"},
      {"<superblock uuid=\"\" block_size=\"8\" nr_blocks=\"x\" current_era=\"3\"/>", "not a number"},
      {"<superblock uuid=\"\" block_size=\"8\" nr_blocks=\"10\"/>", "needs the attribute 'current_era'"},
      {std::string(head) + "<era_array>\n<era block=\"10\" era=\"1\"/></era_array></superblock>", "line 3"},
      {std::string(head) + "<era_array><era block=\"1\" era=\"4\"/></era_array></superblock>", "too large"},
      {std::string(head) + "<era_array><era block=\"1\" era=\"1\"/><era block=\"1\" era=\"2\"/></era_array>"
                           "</superblock>",
       "appears twice"},
      {std::string(head) + "<writeset era=\"3\" nr_bits=\"9\"></writeset></superblock>",
       "differs from nr_blocks"},
      {std::string(head) + "<writeset era=\"3\" nr_bits=\"10\"><bit block=\"1\" value=\"maybe\"/></writeset>"
                           "</superblock>",
       "not true or false"},
      {std::string(head) + "<writeset era=\"3\" nr_bits=\"10\"><bit blok=\"1\" value=\"true\"/></writeset>"
                           "</superblock>",
       "unknown attribute 'blok'"},
      {std::string(head) + "<frob/></superblock>", "unexpected <frob>"},
      {std::string(head) +
           "<writeset era=\"2\" nr_bits=\"10\"/><writeset era=\"2\" nr_bits=\"10\"/></superblock>",
       "second writeset"},
  };
  for (const auto& c : cases) {
    auto r = parse_xml(c.xml);
    ASSERT_FALSE(r.ok()) << c.xml;
    EXPECT_NE(r.status().context().find(c.want), std::string::npos) << r.status().context();
    EXPECT_EQ(r.status().context().find('\n'), std::string::npos);
  }
}

TEST(EraToolsTest, ParseChecksClaimsBeforeAllocating) {
  const std::string huge =
      "<superblock uuid=\"\" block_size=\"8\" nr_blocks=\"4294967295\" current_era=\"3\">"
      "<writeset era=\"2\" nr_bits=\"4294967295\"/></superblock>";
  ParseLimits small;
  small.max_blocks = max_blocks_for_metadata(1 << 20);
  small.max_blocks_why = "the metadata device";
  auto r = parse_xml(huge, small);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().context().find("nr_blocks=\"4294967295\" is more than the metadata device can hold"),
            std::string::npos)
      << r.status().context();
  ParseLimits memory;
  memory.max_bytes = 1 << 30;  // the era array alone would take 17 GB
  r = parse_xml(huge, memory);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().context().find("bytes of memory to restore"), std::string::npos)
      << r.status().context();
  // Writesets count too: 1000 blocks, 1000 bytes allowed, two writesets.
  ParseLimits tight;
  tight.max_bytes = 4000 + 125 + 128;
  r = parse_xml(
      "<superblock uuid=\"\" block_size=\"8\" nr_blocks=\"1000\" current_era=\"3\">"
      "<writeset era=\"1\" nr_bits=\"1000\"/><writeset era=\"2\" nr_bits=\"1000\"/></superblock>",
      tight);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().context().find("2 writesets of 1000 blocks"), std::string::npos)
      << r.status().context();
  // max_blocks_for_metadata inverts metadata_blocks_for.
  for (uint64_t bytes : {uint64_t{0}, uint64_t{1} << 20, uint64_t{5} << 30}) {
    const uint64_t n = max_blocks_for_metadata(bytes);
    if (n > 0) {
      EXPECT_LE(metadata_blocks_for(n) * kMetaBlockSize, bytes);
    }
    EXPECT_GT(metadata_blocks_for(n + 1) * kMetaBlockSize, bytes);
  }
}

// A hostile writeset repeating the whole device in <marked> runs costs no
// more than one run (they are merged before bits are set), and the bits are
// exactly the union of the runs, whatever their order and overlap.
TEST(EraToolsTest, MarkedRunsAreMergedNotRepeated) {
  const uint64_t nr = 1'000'000;
  std::string xml = fmt::format(
      "<superblock uuid=\"\" block_size=\"8\" nr_blocks=\"{}\" current_era=\"3\"><writeset era=\"2\" "
      "nr_bits=\"{}\">",
      nr, nr);
  for (int i = 0; i < 20000; ++i) xml += fmt::format("<marked block_begin=\"0\" len=\"{}\"/>", nr - 10);
  xml += "<marked block_begin=\"999995\" len=\"3\"/><marked block_begin=\"70\" len=\"0\"/>";
  xml += "<marked block_begin=\"5\" len=\"130\"/></writeset></superblock>";
  const auto start = std::chrono::steady_clock::now();
  auto m = parse_xml(xml);
  ASSERT_TRUE(m.ok()) << m.status().message();
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(20));
  ASSERT_EQ(m->writesets.size(), 1u);
  const auto& bits = m->writesets[0].bits;
  for (uint64_t b : {uint64_t{0}, uint64_t{63}, uint64_t{64}, nr - 11, nr - 5, nr - 4, nr - 3}) {
    EXPECT_TRUE(test_bit(bits, b)) << b;
  }
  for (uint64_t b : {nr - 10, nr - 9, nr - 6, nr - 2, nr - 1}) EXPECT_FALSE(test_bit(bits, b)) << b;
  // Restored, the writeset is folded into the era array bit for bit.
  auto md = std::make_shared<MemoryDevice>(meta_size(nr));
  ASSERT_TRUE(restore_metadata(m.value(), md).ok());
  auto src = open_source(md, false);
  ASSERT_TRUE(src.ok()) << src.status().message();
  uint64_t marked = 0;
  ASSERT_TRUE(for_each_era(src.value(), true, nullptr, [&](uint64_t first, std::span<const uint32_t> eras) {
                for (size_t e = 0; e < eras.size(); ++e) {
                  EXPECT_EQ(eras[e], test_bit(bits, first + e) ? 2u : 0u) << first + e;
                  marked += eras[e] == 2;
                }
                return Status::Ok();
              }).ok());
  EXPECT_EQ(marked, nr - 10 + 3);
}

// Metadata that is not era's (never written, or another format) is told
// from damaged era metadata: EMEDIUMTYPE, saying what the superblocks hold.
TEST(EraToolsTest, NotEraMetadataIsNotCalledDamage) {
  auto zero = std::make_shared<MemoryDevice>(1 << 20);
  auto r = open_source(zero, false);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), EMEDIUMTYPE);
  EXPECT_NE(r.status().context().find("all zeroes and no era block follows: it was never formatted"),
            std::string::npos)
      << r.status().context();
  auto other = std::make_shared<MemoryDevice>(1 << 20);
  ASSERT_TRUE(other->write(0, pattern(1, 2 * kMetaBlockSize), 0).ok());
  r = open_source(other, false);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), EMEDIUMTYPE);
  EXPECT_NE(
      r.status().context().find("neither superblock slot (metadata blocks 0 and 1) holds era's superblock "
                                "magic"),
      std::string::npos)
      << r.status().context();
  // check says so too, rather than listing it as damage.
  auto c = check_metadata(other);
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), EMEDIUMTYPE);
  // Era metadata whose two superblocks are damaged (era's magic still in
  // them, or in the blocks after them) is damage, as before.
  Fixture fx;
  for (uint64_t slot = 0; slot < 2; ++slot) {
    Bytes sb(kMetaBlockSize);
    ASSERT_TRUE(fx.md->read(slot * kMetaBlockSize, sb).ok());
    sb[200] ^= std::byte{0x5a};
    ASSERT_TRUE(fx.md->write(slot * kMetaBlockSize, sb, 0).ok());
  }
  r = open_source(fx.md, false);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), EUCLEAN) << r.status().message();
}

TEST(EraToolsTest, CheckReportsDamageAndErasBeyondTheCurrentOne) {
  Fixture fx;
  auto clean = check_metadata(fx.md);
  ASSERT_TRUE(clean.ok());
  EXPECT_TRUE(clean->damage.empty()) << clean->damage.front().what;
  // An era array entry beyond the current era, written with a valid checksum.
  EraModel m;
  m.block_size_sectors = 8;
  m.nr_blocks = 100;
  m.current_era = 3;
  m.eras.assign(100, 1);
  auto md = std::make_shared<MemoryDevice>(meta_size(100));
  ASSERT_TRUE(restore_metadata(m, md).ok());
  {
    auto opened = EraMetadata::open(md);
    ASSERT_TRUE(opened.ok());
    auto e = opened.value()->edit_era_block(0);
    ASSERT_TRUE(e.ok());
    put_entry(e->first.data(), 7, 9);
    e->first.mark_dirty();
    e->first.release();
    ASSERT_TRUE(opened.value()->cache().write_dirty_buffers().ok());
  }
  auto r = check_metadata(md);
  ASSERT_TRUE(r.ok());
  ASSERT_EQ(r->damage.size(), 1u);
  EXPECT_NE(r->damage[0].what.find("block 7 was written in era 9"), std::string::npos) << r->damage[0].what;
  // Both superblocks gone.
  ASSERT_TRUE(md->write(0, Bytes(2 * kMetaBlockSize, std::byte{0x5a}), 0).ok());
  auto gone = check_metadata(md);
  ASSERT_TRUE(gone.ok());
  EXPECT_FALSE(gone->superblock_ok);
  ASSERT_FALSE(gone->damage.empty());
  EXPECT_NE(gone->damage[0].what.find("no valid superblock"), std::string::npos);
}

class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/bowstack-era-test.XXXXXX";
    path_ = ::mkdtemp(tmpl);
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  std::string file(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

TEST(EraToolsTest, ExportApplyMakesTheCopyEqual) {
  TempDir dir;
  const uint64_t nr = 2000;
  // The device as a file (export reads files), with an odd tail: 1.5 blocks extra.
  const uint64_t size = nr * kBs - 2048;
  const std::string img = dir.file("img"), copy = dir.file("copy"), exp = dir.file("changes");
  ASSERT_TRUE(FileDevice::create(img, size).ok());
  auto origin = FileDevice::open(img);
  ASSERT_TRUE(origin.ok());
  auto md = std::make_shared<MemoryDevice>(meta_size(nr));
  auto t = EraTarget::open(origin.value(), md, EraOptions{});
  ASSERT_TRUE(t.ok()) << t.status().message();
  ASSERT_EQ(t.value()->nr_blocks(), nr);
  std::mt19937_64 rng(3);
  for (int i = 0; i < 300; ++i) {
    const uint64_t off = (rng() % (size / 512)) * 512;
    ASSERT_TRUE(t.value()
                    ->write(off, pattern(rng(), std::min<uint64_t>(size - off, 512 * (1 + rng() % 20))), 0)
                    .ok());
  }
  auto cp = t.value()->checkpoint();
  ASSERT_TRUE(cp.ok());
  const uint32_t since = cp.value();
  ASSERT_TRUE(t.value()->flush().ok());
  std::filesystem::copy_file(img, copy);  // the full copy, taken at the checkpoint
  for (int i = 0; i < 200; ++i) {         // churn, including the partial last block
    const uint64_t off = i == 0 ? size - 512 : (rng() % (size / 512)) * 512;
    const uint64_t len = std::min<uint64_t>(size - off, 512 * (1 + rng() % 20));
    if (i % 10 == 1) {
      ASSERT_TRUE(t.value()->write_zeroes(off, len, 0).ok());
    } else {
      ASSERT_TRUE(t.value()->write(off, pattern(rng(), len), 0).ok());
    }
  }
  ASSERT_TRUE(t.value()->flush().ok());
  t = Status::Error(EIO, "closed");

  auto src = open_source(md, false);
  ASSERT_TRUE(src.ok());
  auto ro = FileDevice::open(img, FileDeviceOptions{.read_only = true});
  ASSERT_TRUE(ro.ok());
  auto st = export_changes(src.value(), *ro.value(), since, exp);
  ASSERT_TRUE(st.ok()) << st.status().message();
  EXPECT_GT(st->blocks, 0u);
  EXPECT_LT(st->blocks, nr);
  auto target = FileDevice::open(copy);
  ASSERT_TRUE(target.ok());
  auto dry = apply_changes(exp, *target.value(), true);
  ASSERT_TRUE(dry.ok()) << dry.status().message();
  auto applied = apply_changes(exp, *target.value(), false);
  ASSERT_TRUE(applied.ok()) << applied.status().message();
  EXPECT_EQ(applied->blocks, st->blocks);
  Bytes a(size), b(size);
  ASSERT_TRUE(ro.value()->read(0, a).ok());
  ASSERT_TRUE(target.value()->read(0, b).ok());
  EXPECT_TRUE(a == b) << "the copy must equal the device after apply";

  // Wrong-sized target: refused before anything is written.
  const std::string small = dir.file("small");
  ASSERT_TRUE(FileDevice::create(small, size - 4096).ok());
  auto sd = FileDevice::open(small);
  ASSERT_TRUE(sd.ok());
  auto mismatch = apply_changes(exp, *sd.value(), false);
  ASSERT_FALSE(mismatch.ok());
  EXPECT_NE(mismatch.status().context().find("size mismatch"), std::string::npos);

  // Every single-byte corruption and every truncation is refused, with nothing written.
  std::ifstream in(exp, std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const std::string bad = dir.file("bad");
  const std::string pristine_copy = dir.file("copy2");
  std::filesystem::copy_file(copy, pristine_copy);
  auto victim = FileDevice::open(pristine_copy);
  ASSERT_TRUE(victim.ok());
  Bytes before(size);
  ASSERT_TRUE(victim.value()->read(0, before).ok());
  std::vector<size_t> spots = {
      0, 9, 20, 63, 64, 70, 95, 96, 100, bytes.size() / 2, bytes.size() - 40, bytes.size() - 5};
  for (size_t spot : spots) {
    std::string mutated = bytes;
    mutated[spot] = static_cast<char>(mutated[spot] ^ 0x40);
    std::ofstream(bad, std::ios::binary | std::ios::trunc) << mutated;
    auto r = apply_changes(bad, *victim.value(), false);
    ASSERT_FALSE(r.ok()) << "corruption at byte " << spot << " was accepted";
    EXPECT_EQ(r.status().context().find('\n'), std::string::npos);
  }
  for (size_t cut : {size_t{0}, size_t{10}, size_t{64}, size_t{100}, bytes.size() - 1}) {
    std::ofstream(bad, std::ios::binary | std::ios::trunc) << bytes.substr(0, cut);
    EXPECT_FALSE(apply_changes(bad, *victim.value(), false).ok()) << "truncated at " << cut;
  }
  std::ofstream(bad, std::ios::binary | std::ios::trunc) << bytes << "x";
  EXPECT_FALSE(apply_changes(bad, *victim.value(), false).ok());
  Bytes after(size);
  ASSERT_TRUE(victim.value()->read(0, after).ok());
  EXPECT_TRUE(before == after) << "a refused export must write nothing";
}

TEST(EraToolsTest, ExportRefusesTheWrongImage) {
  TempDir dir;
  Fixture fx(100);
  auto src = open_source(fx.md, false);
  ASSERT_TRUE(src.ok());
  MemoryDevice other(200 * kBs);
  auto r = export_changes(src.value(), other, 1, dir.file("x"));
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().context().find("wrong image"), std::string::npos);
  EXPECT_FALSE(std::filesystem::exists(dir.file("x")));
  EXPECT_FALSE(std::filesystem::exists(dir.file("x.tmp")));
}

}  // namespace
}  // namespace bowstack::era
