// make_fuzz_corpus OUT_DIR: writes the seed corpora of the fuzzers into
// OUT_DIR/<fuzzer>/ (fuzz/make_corpus.sh runs it, and adds the images made by
// tests/bow/android_bow.py). Deterministic: the same program writes the same
// files.
//
//  fuzz_bow_log        real checkpoint images made by the bow target on a
//                      memory device (block sizes 512, 1024, 4096; one and
//                      several log blocks), restores stopped part-way (WOB),
//                      and images whose validation fails (roll-forward)
//  fuzz_bow_resume     checkpoints left by a crash (image and resume
//                      journal; block sizes 512 to 4096, one and several
//                      log blocks), torn and foreign journals
//  fuzz_nbd_handshake  option sequences: GO, EXPORT_NAME, INFO, LIST, meta
//                      contexts, unsupported and oversized options, ABORT
//  fuzz_nbd_request    one config byte (fuzz_nbd_request.cc) and a stream of
//                      requests of every command, valid and not
//  fuzz_control_json   control requests, valid and not
//  fuzz_md_superblock  md v1.2 mirror legs (fuzz_md_superblock.cc's input):
//                      docs/format/mirror.md's worked example, a dirty
//                      recovering write-mostly leg of three, an odd max_dev
#include <spdlog/spdlog.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "core/endian.h"
#include "core/env.h"
#include "core/memory_device.h"
#include "nbd/handshake.h"
#include "nbd/protocol.h"
#include "targets/bow/bow_format.h"
#include "targets/bow/bow_restore.h"
#include "targets/bow/bow_target.h"
#include "targets/mirror/md_bitmap_format.h"
#include "targets/mirror/md_format.h"

namespace {

using namespace bowstack;
using Bytes = std::vector<std::byte>;
namespace fs = std::filesystem;

fs::path g_out;

void save(const std::string& fuzzer, const std::string& name, const void* data, size_t size) {
  fs::create_directories(g_out / fuzzer);
  std::ofstream f(g_out / fuzzer / name, std::ios::binary | std::ios::trunc);
  f.write(static_cast<const char*>(data), static_cast<std::streamsize>(size));
  if (!f) {
    std::fprintf(stderr, "cannot write %s/%s\n", fuzzer.c_str(), name.c_str());
    std::exit(1);
  }
}
void save(const std::string& fuzzer, const std::string& name, const Bytes& b) {
  save(fuzzer, name, b.data(), b.size());
}
void save(const std::string& fuzzer, const std::string& name, const std::string& s) {
  save(fuzzer, name, s.data(), s.size());
}

[[noreturn]] void die(const std::string& what, const Status& s) {
  std::fprintf(stderr, "make_fuzz_corpus: %s: %s\n", what.c_str(), s.message().c_str());
  std::exit(1);
}
void must(const Status& s, const std::string& what) {
  if (!s.ok()) die(what, s);
}

// ---- bow images -----------------------------------------------------------

// Contents that compress well but differ per block (the checksums see them).
Bytes patterned(uint64_t size, uint32_t bs, uint8_t salt) {
  Bytes b(size);
  for (uint64_t i = 0; i < size; ++i) {
    b[i] = std::byte(static_cast<uint8_t>((i / bs) * 7 + salt + ((i % 64) == 0 ? i / 64 : 0)));
  }
  return b;
}

struct BowImage {
  Bytes image;
  uint32_t bs;
};

// A checkpoint taken by the bow target: the top `free_percent` of the device
// trimmed, then `writes` overwrites of in-use blocks (every `stride` blocks,
// `len` blocks each), flushed. Returns the image as the server leaves it.
BowImage make_checkpoint(uint64_t size, uint32_t bs, int free_percent, int writes, int stride, int len,
                         uint8_t salt) {
  auto mem = std::make_shared<MemoryDevice>(size);
  must(mem->write(0, patterned(size, bs, salt), 0), "fill");
  auto opened = bow::BowTarget::open(mem, bow::BowOptions{.block_size = bs});
  if (!opened.ok()) die("open bow", opened.status());
  auto bow = opened.value();
  const uint64_t blocks = size / bs;
  const uint64_t first_free = blocks * static_cast<uint64_t>(100 - free_percent) / 100;
  must(bow->trim(first_free * bs, (blocks - first_free) * bs, 0), "trim");
  must(bow->checkpoint(), "checkpoint");
  Bytes data(static_cast<size_t>(len) * bs);
  for (int w = 0; w < writes; ++w) {
    const uint64_t block = 1 + (static_cast<uint64_t>(w) * stride) % (first_free - len);
    std::memset(data.data(), 0xa0 + w % 16, data.size());
    must(bow->write(block * bs, data, 0), "write");
    // One write per committer batch: otherwise how writes are grouped into
    // log commits depends on timing, and so would the image.
    must(bow->flush(), "flush");
  }
  // A write to block 0 (the live copy lives elsewhere) and into free space.
  if (writes > 0) {
    std::memset(data.data(), 0x5a, bs);
    must(bow->write(0, std::span(data.data(), bs), 0), "write block 0");
    must(bow->write((blocks - 1) * bs, std::span(data.data(), bs), 0), "write free");
  }
  must(bow->flush(), "flush");
  bow.reset();
  return {mem->contents(), bs};
}

// The image after a restore stopped after `k` writes (possibly a WOB).
Bytes stopped_restore(const Bytes& image, int64_t k) {
  MemoryDevice mem(image.size());
  must(mem.write(0, image, 0), "copy");
  auto r = bow::restore(mem, bow::RestoreOptions{.stop_after_writes = k});
  if (r.ok()) return {};  // finished before k writes: not an interrupted image
  if (r.status().code() != ECANCELED) die("stopped restore", r.status());
  return mem.contents();
}

void bow_corpus() {
  const std::string f = "fuzz_bow_log";
  struct Spec {
    const char* name;
    uint64_t size;
    uint32_t bs;
    int free_percent, writes, stride, len;
  };
  const Spec specs[] = {
      {"bowstack-512-one-block", 32 << 10, 512, 50, 6, 3, 1},
      {"bowstack-512-chain", 64 << 10, 512, 45, 45, 1, 1},  // 20 entries per log block: a chain of 3+
      {"bowstack-512-multiblock-entries", 64 << 10, 512, 45, 12, 5, 3},
      {"bowstack-1024-chain", 128 << 10, 1024, 50, 50, 1, 1},
      {"bowstack-2048-small", 64 << 10, 2048, 50, 5, 2, 1},
      {"bowstack-4096-one-block", 256 << 10, 4096, 50, 12, 2, 1},
      {"bowstack-4096-no-writes", 64 << 10, 4096, 50, 0, 1, 1},
  };
  uint8_t salt = 1;
  for (const Spec& s : specs) {
    BowImage img = make_checkpoint(s.size, s.bs, s.free_percent, s.writes, s.stride, s.len, salt++);
    save(f, s.name, img.image);
    if (s.writes == 0) continue;
    // Interrupted restores part-way through the chain.
    for (int64_t k : {5, 23}) {
      Bytes stopped = stopped_restore(img.image, k);
      if (!stopped.empty()) save(f, std::string(s.name) + "-stopped-" + std::to_string(k), stopped);
    }
  }
  // Images whose validation fails: a bad checksum and a bad sequence (a
  // restore then rolls forward); a committed image holds no log at all.
  BowImage img = make_checkpoint(32 << 10, 512, 50, 6, 3, 1, 42);
  Bytes bad_crc = img.image;
  bow::LogHeader h = bow::unpack_header(std::span<const std::byte>(bad_crc.data(), bow::kHeaderSize));
  bad_crc[h.header_size + bow::kEntrySize * (h.count - 1) + 20] ^= std::byte{1};
  save(f, "invalid-checksum", bad_crc);
  Bytes bad_seq = img.image;
  h.sequence += 1;
  bow::pack_header(h, std::span(bad_seq.data(), bow::kHeaderSize));
  save(f, "invalid-sequence", bad_seq);
  save(f, "no-checkpoint", patterned(4096, 512, 9));
}

// ---- bow resume ------------------------------------------------------------

// An input of fuzz_bow_resume: flags, image length, image, journal.
Bytes resume_input(uint8_t flags, const Bytes& image, const Bytes& journal) {
  Bytes in(5);
  in[0] = std::byte{flags};
  store_le(in.data(), 1, image.size(), 4);
  in.insert(in.end(), image.begin(), image.end());
  in.insert(in.end(), journal.begin(), journal.end());
  return in;
}

// A checkpoint served as after a crash: its image and resume journal, with
// overwrites (log entries), writes into free space (claim records) and
// discards (release records), flushed, and the server gone without a commit.
struct Resumable {
  Bytes image;
  Bytes journal;
};
Resumable make_resumable(uint64_t size, uint32_t bs, int writes, uint8_t salt) {
  auto mem = std::make_shared<MemoryDevice>(size);
  must(mem->write(0, patterned(size, bs, salt), 0), "fill");
  MemEnv env;
  const std::string meta = "image.bowmeta";  // the name fuzz_bow_resume gives the journal
  auto opened = bow::BowTarget::open(mem, bow::BowOptions{.block_size = bs, .meta_path = meta, .env = &env});
  if (!opened.ok()) die("open bow", opened.status());
  auto bow = opened.value();
  const uint64_t blocks = size / bs;
  const uint64_t first_free = blocks / 2;
  must(bow->trim(first_free * bs, (blocks - first_free) * bs, 0), "trim");
  must(bow->checkpoint(), "checkpoint");
  Bytes data(bs);
  for (int w = 0; w < writes; ++w) {
    std::memset(data.data(), 0xb0 + w % 16, data.size());
    must(bow->write((1 + static_cast<uint64_t>(w) % (first_free - 1)) * bs, data, 0), "write");
    if (w % 5 == 0) must(bow->write((blocks - 1 - w % 8) * bs, data, 0), "write free");
    if (w % 7 == 0) must(bow->trim((blocks - 9 - w % 4) * bs, bs, 0), "trim free");
    must(bow->flush(), "flush");  // one write per batch: the image does not depend on timing
  }
  Resumable r{mem->contents(), {}};
  auto j = env.contents(meta);
  if (!j) die("resume journal", Status::Error(ENOENT, "no journal after the checkpoint"));
  r.journal = *j;
  return r;  // `bow` is dropped after the copies: a crash, not a commit
}

void resume_corpus() {
  const std::string f = "fuzz_bow_resume";
  struct Spec {
    const char* name;
    uint64_t size;
    uint32_t bs;
    int writes;
  };
  const Spec specs[] = {
      {"resume-512-chain", 64 << 10, 512, 40},  // several log blocks
      {"resume-1024", 64 << 10, 1024, 12},
      {"resume-4096", 128 << 10, 4096, 10},
      {"resume-4096-no-writes", 64 << 10, 4096, 0},
  };
  uint8_t salt = 11;
  for (const Spec& s : specs) {
    Resumable r = make_resumable(s.size, s.bs, s.writes, salt++);
    save(f, std::string(s.name) + "-restore", resume_input(0, r.image, r.journal));
    save(f, std::string(s.name) + "-commit", resume_input(2, r.image, r.journal));
    // A torn last record, and a journal cut to its header.
    Bytes torn(r.journal.begin(), r.journal.end() - 20);
    save(f, std::string(s.name) + "-torn", resume_input(1, r.image, torn));
    Bytes header_only(r.journal.begin(), r.journal.begin() + 64);
    save(f, std::string(s.name) + "-header-only", resume_input(1, r.image, header_only));
  }
  // A journal of another checkpoint, and none at all.
  Resumable a = make_resumable(64 << 10, 512, 6, 30);
  Resumable b = make_resumable(64 << 10, 512, 6, 31);
  save(f, "resume-foreign-journal", resume_input(0, a.image, b.journal));
  save(f, "resume-no-journal", resume_input(0, a.image, {}));
}

// ---- NBD handshake --------------------------------------------------------

class Msg {
 public:
  Msg& u16(uint16_t v) {
    w_.u16(v);
    return *this;
  }
  Msg& u32(uint32_t v) {
    w_.u32(v);
    return *this;
  }
  Msg& u64(uint64_t v) {
    w_.u64(v);
    return *this;
  }
  Msg& str(std::string_view s) {
    w_.bytes(s);
    return *this;
  }
  Msg& raw(const Msg& m) {
    w_.bytes(m.view());
    return *this;
  }
  Msg& option(uint32_t opt, const Msg& payload) {
    return u64(nbd::kIHaveOpt).u32(opt).u32(static_cast<uint32_t>(payload.size())).raw(payload);
  }
  Msg& option(uint32_t opt) { return option(opt, Msg()); }
  size_t size() const { return w_.size(); }
  std::string_view view() const { return {reinterpret_cast<const char*>(w_.data().data()), w_.size()}; }
  std::string bytes() const { return std::string(view()); }

 private:
  nbd::WireWriter w_;
};

Msg info_payload(std::string_view name, std::initializer_list<uint16_t> infos) {
  Msg m;
  m.u32(static_cast<uint32_t>(name.size())).str(name).u16(static_cast<uint16_t>(infos.size()));
  for (uint16_t i : infos) m.u16(i);
  return m;
}

Msg meta_payload(std::string_view name, std::initializer_list<std::string_view> queries) {
  Msg m;
  m.u32(static_cast<uint32_t>(name.size())).str(name).u32(static_cast<uint32_t>(queries.size()));
  for (auto q : queries) m.u32(static_cast<uint32_t>(q.size())).str(q);
  return m;
}

void handshake_corpus() {
  const std::string f = "fuzz_nbd_handshake";
  const uint32_t fixed = nbd::kClientFlagFixedNewstyle, both = fixed | nbd::kClientFlagNoZeroes;
  save(f, "go", Msg().u32(both).option(nbd::kOptGo, info_payload("", {})).bytes());
  save(f, "export-name", Msg().u32(fixed).option(nbd::kOptExportName, Msg().str("bowstack")).bytes());
  save(f, "export-name-no-zeroes", Msg().u32(both).option(nbd::kOptExportName).bytes());
  save(f, "export-name-unknown", Msg().u32(both).option(nbd::kOptExportName, Msg().str("nosuch")).bytes());
  save(f, "full",
       Msg()
           .u32(both)
           .option(nbd::kOptList)
           .option(nbd::kOptInfo, info_payload("bowstack", {nbd::kInfoName, nbd::kInfoDescription,
                                                            nbd::kInfoBlockSize, nbd::kInfoName}))
           .option(nbd::kOptStructuredReply)
           .option(nbd::kOptListMetaContext, meta_payload("", {"base:", "base:allocation", "qemu:dirty"}))
           .option(nbd::kOptListMetaContext, meta_payload("bowstack", {}))
           .option(nbd::kOptSetMetaContext, meta_payload("", {"base:allocation"}))
           .option(nbd::kOptGo, info_payload("bowstack", {nbd::kInfoBlockSize}))
           .bytes());
  save(f, "set-meta-without-structured",
       Msg().u32(both).option(nbd::kOptSetMetaContext, meta_payload("", {"base:allocation"})).bytes());
  save(f, "unsupported-then-abort",
       Msg()
           .u32(both)
           .option(nbd::kOptStartTls)
           .option(nbd::kOptExtendedHeaders)
           .option(99, Msg().str("junk"))
           .option(nbd::kOptList, Msg().str("x"))
           .option(nbd::kOptStructuredReply, Msg().str("x"))
           .option(nbd::kOptAbort)
           .bytes());
  save(f, "malformed-info",
       Msg()
           .u32(both)
           .option(nbd::kOptInfo, Msg().u32(1000).str("short"))
           .option(nbd::kOptGo, Msg().u32(0).u16(3).u16(1))
           .option(nbd::kOptListMetaContext, Msg().u32(0).u32(0xffffffff))
           .option(nbd::kOptInfo, info_payload("other", {}))
           .bytes());
  std::string big(nbd::kMaxOptionLength + 100, 'A');
  save(f, "oversized-option",
       Msg()
           .u32(both)
           .option(nbd::kOptInfo, Msg().str(big))
           .option(nbd::kOptGo, info_payload("", {}))
           .bytes());
  save(f, "bad-option-magic", Msg().u32(both).u64(0x1234).u32(nbd::kOptGo).u32(0).bytes());
  save(f, "bad-client-flags", Msg().u32(0x80).bytes());
}

// ---- NBD requests ---------------------------------------------------------

Msg request(uint16_t type, uint16_t flags, uint64_t cookie, uint64_t offset, uint32_t length) {
  return Msg().u32(nbd::kRequestMagic).u16(flags).u16(type).u64(cookie).u64(offset).u32(length);
}

std::string request_stream(uint8_t config, bool disc) {
  Msg m;
  m.raw(Msg().str(std::string(1, static_cast<char>(config))));
  uint64_t cookie = 1;
  m.raw(request(nbd::kCmdWrite, 0, cookie++, 0, 4096)).str(std::string(4096, 'w'));
  m.raw(request(nbd::kCmdRead, 0, cookie++, 0, 4096));
  m.raw(request(nbd::kCmdWrite, nbd::kCmdFlagFua, cookie++, 8192, 1024)).str(std::string(1024, 'f'));
  m.raw(request(nbd::kCmdFlush, 0, cookie++, 0, 0));
  m.raw(request(nbd::kCmdTrim, 0, cookie++, 16384, 8192));
  m.raw(request(nbd::kCmdWriteZeroes, nbd::kCmdFlagNoHole, cookie++, 24576, 4096));
  m.raw(request(nbd::kCmdWriteZeroes, nbd::kCmdFlagFastZero, cookie++, 28672, 4096));
  m.raw(request(nbd::kCmdBlockStatus, 0, cookie++, 0, 65536));
  m.raw(request(nbd::kCmdBlockStatus, nbd::kCmdFlagReqOne, cookie++, 4096, 8192));
  m.raw(request(nbd::kCmdCache, 0, cookie++, 0, 65536));
  m.raw(request(nbd::kCmdRead, nbd::kCmdFlagDf, cookie++, 512, 1536));
  m.raw(request(nbd::kCmdWrite, 0, cookie++, 100, 200)).str(std::string(200, 'u'));  // unaligned
  m.raw(request(nbd::kCmdRead, 0, cookie++, 1 << 20, 512));                          // beyond the end
  m.raw(request(nbd::kCmdWrite, 0, cookie++, 1 << 20, 512)).str(std::string(512, 'e'));
  m.raw(request(nbd::kCmdRead, 0x40, cookie++, 0, 512));  // unknown flag
  m.raw(request(99, 0, cookie++, 0, 512));                // unknown command
  m.raw(request(nbd::kCmdRead, 0, cookie++, 0, 0));       // zero length
  if (disc) m.raw(request(nbd::kCmdDisc, 0, cookie++, 0, 0));
  return m.bytes();
}

void request_corpus() {
  const std::string f = "fuzz_nbd_request";
  // Config bits: 1 structured, 2 base:allocation, 4 read-only, 8 EXPORT_NAME,
  // 16 NO_ZEROES, 32 bow, 64 bow checkpointed.
  const std::pair<const char*, uint8_t> configs[] = {
      {"simple", 0},      {"structured", 1},      {"base-allocation", 3}, {"read-only", 4 | 3},
      {"export-name", 8}, {"export-name-nz", 24}, {"bow", 32 | 3},        {"bow-checkpoint", 32 | 64 | 3},
  };
  for (auto [name, config] : configs) save(f, name, request_stream(config, true));
  save(f, "no-disc", request_stream(3, false));
  // A write whose payload never arrives, and a bad magic mid-stream.
  Msg cut;
  cut.str(std::string(1, '\x01')).raw(request(nbd::kCmdRead, 0, 1, 0, 512));
  cut.raw(request(nbd::kCmdWrite, 0, 2, 0, 4096)).str("only a little");
  save(f, "truncated-write", cut.bytes());
  Msg bad;
  bad.str(std::string(1, '\x00')).raw(request(nbd::kCmdFlush, 0, 1, 0, 0));
  bad.u32(0xdeadbeef).str(std::string(24, '\0')).raw(request(nbd::kCmdFlush, 0, 2, 0, 0));
  save(f, "bad-magic", bad.bytes());
  Msg huge;
  huge.str(std::string(1, '\x03')).raw(request(nbd::kCmdWrite, 0, 1, 0, 0xffffffff)).str("xyz");
  save(f, "huge-invalid-write", huge.bytes());
}

// ---- Control socket -------------------------------------------------------

void control_corpus() {
  const std::string f = "fuzz_control_json";
  const std::pair<const char*, const char*> seeds[] = {
      {"status", R"({"cmd":"status"})"},
      {"checkpoint-commit",
       "{\"cmd\":\"message\",\"text\":\"checkpoint\"}\n{\"cmd\":\"status\"}\n"
       "{\"cmd\":\"message\",\"text\":\" commit "
       "\",\"target\":\"bow\"}\n{\"cmd\":\"message\",\"text\":\"commit\"}\n"},
      {"message-memory", R"({"cmd":"message","text":"hello","target":"memory"})"},
      {"message-no-layer", R"({"cmd":"message","text":"checkpoint","target":"linear"})"},
      {"suspend-resume", "{\"cmd\":\"suspend\"}\n\n{\"cmd\":\"suspend\"}\r\n{\"cmd\":\"resume\"}\n"},
      {"malformed", "{\"cmd\":\n[1,2,3]\n\"status\"\n{\"cmd\":5}\n{}\nnull\n   \n"},
      {"message-errors",
       "{\"cmd\":\"message\"}\n{\"cmd\":\"message\",\"text\":\"\"}\n{\"cmd\":\"message\",\"text\":7}\n"
       "{\"cmd\":\"message\",\"text\":\"checkpoint\",\"target\":[]}\n"},
      {"unicode", R"({"cmd":"st\u0061tus","x":"\u00e9\ud83d\ude00","y":[1.5e300,-0,true,null]})"},
      {"unknown", R"({"cmd":"bogus","cmd2":{"nested":{"deep":[[[[]]]]}}})"},
  };
  for (auto [name, text] : seeds) save(f, name, std::string(text));
}

// Flags byte, leg size, the 4096 bytes at sector 8, the bitmap superblock.
Bytes md_input(uint8_t flags, uint64_t leg_sectors, const mirror::md::Superblock& sb,
               const mirror::md::BitmapSuperblock& bm) {
  Bytes in(9 + 4096 + mirror::md::kBitmapSbBytes);
  in[0] = std::byte{flags};
  store_le(in.data(), 1, leg_sectors, 8);
  mirror::md::encode_superblock(sb, std::span(in).subspan(9, 4096));
  mirror::md::encode_bitmap_superblock(bm, std::span(in).subspan(9 + 4096));
  return in;
}

void md_corpus() {
  namespace md = mirror::md;
  const char* f = "fuzz_md_superblock";
  const uint64_t leg = 131072;
  const Uuid array = {0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef,
                      0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef};
  const Uuid device = {0x0f, 0x1e, 0x2d, 0x3c, 0x4b, 0x5a, 0x69, 0x78,
                       0x87, 0x96, 0xa5, 0xb4, 0xc3, 0xd2, 0xe1, 0xf0};
  auto g = md::plan_leg(leg, leg, 64 * 1024);
  md::Superblock sb =
      md::new_leg_superblock(*g, array, "bowstack:0", device, 0, 2, md::encode_time(1700000000));
  save(f, "worked-example", md_input(0, leg, sb, md::new_bitmap_superblock(sb, g->bitmap_chunk)));

  md::Superblock rec =
      md::new_leg_superblock(*g, array, "bowstack:0", device, 1, 3, md::encode_time(1700000000));
  rec.feature_map |= md::kFeatureRecoveryOffset | md::kFeatureRecoveryBitmap;
  rec.recovery_offset = 4096;
  rec.resync_offset = 0;
  rec.devflags = md::kDevflagWriteMostly;
  rec.events = 7;
  rec.dev_roles[2] = md::kRoleFaulty;
  md::BitmapSuperblock bm = md::new_bitmap_superblock(rec, g->bitmap_chunk);
  bm.events_cleared = 5;
  bm.state = md::kBitmapStale;
  save(f, "recovering-write-mostly", md_input(1, leg, rec, bm));

  md::Superblock odd = sb;
  odd.dev_roles.resize(3);
  save(f, "odd-max-dev", md_input(1, leg, odd, md::new_bitmap_superblock(odd, g->bitmap_chunk)));
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s OUT_DIR\n", argv[0]);
    return 2;
  }
  spdlog::set_level(spdlog::level::warn);
  g_out = argv[1];
  bow_corpus();
  resume_corpus();
  handshake_corpus();
  request_corpus();
  control_corpus();
  md_corpus();
  return 0;
}
