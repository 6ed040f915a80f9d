// fuzz_nbd_request: the transmission phase. Byte 0 picks the session and the
// stack (see Config); the rest is the client's request stream. Two parts:
//
//  1. Every 28-byte window of the input is decoded with parse_request and
//     judged by validate_request against several exports and sessions; a
//     request let through must really be executable (known command, allowed
//     flags, in range, aligned, within size limits, not a write to a
//     read-only export).
//  2. A real Connection (one worker, so replies keep request order) serves
//     the stream over a socketpair against a small Volume, after a scripted
//     handshake. The client side then checks the server stayed in sync:
//     exactly one well-formed reply per complete request, in order, with the
//     request's cookie, the error validate_request predicts (none for valid
//     requests on a memory device), and the right amount of read data.
#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "core/memory_device.h"
#include "core/volume.h"
#include "fuzz_util.h"
#include "nbd/connection.h"
#include "nbd/export_info.h"
#include "nbd/protocol.h"
#include "nbd/request.h"
#include "targets/bow/bow_target.h"

namespace bowstack::fuzz {
namespace {

constexpr size_t kMaxInput = 1 << 20;
constexpr uint64_t kDeviceSize = 128 << 10;

struct Config {
  explicit Config(uint8_t b)
      : structured(b & 1),
        base_allocation((b & 1) && (b & 2)),
        read_only(b & 4),
        export_name(b & 8),
        no_zeroes(b & 16),
        bow(b & 32),
        bow_checkpoint((b & 32) && (b & 64)) {}
  bool structured, base_allocation, read_only, export_name, no_zeroes, bow, bow_checkpoint;
};

// ---- Part 1: the validator alone --------------------------------------

bool known_command(uint16_t t) {
  return t == nbd::kCmdRead || t == nbd::kCmdWrite || t == nbd::kCmdFlush || t == nbd::kCmdTrim ||
         t == nbd::kCmdCache || t == nbd::kCmdWriteZeroes || t == nbd::kCmdBlockStatus;
}

void check_verdict(const nbd::Request& r, const nbd::ExportInfo& exp, const nbd::Session& s) {
  if (r.type == nbd::kCmdDisc) return;  // never validated
  const nbd::Verdict v = nbd::validate_request(r, exp, s);
  FUZZ_CHECK(v.reason != nullptr);
  if (v.error != 0) {
    FUZZ_CHECK(v.error == nbd::kEinval || v.error == nbd::kEperm || v.error == nbd::kEnospc ||
               v.error == nbd::kEoverflow);
    return;
  }
  FUZZ_CHECK(known_command(r.type));
  const bool writes = r.type == nbd::kCmdWrite || r.type == nbd::kCmdTrim || r.type == nbd::kCmdWriteZeroes;
  FUZZ_CHECK(!(writes && exp.read_only));
  uint16_t allowed = nbd::kCmdFlagFua;
  if (r.type == nbd::kCmdRead && s.structured_replies) allowed |= nbd::kCmdFlagDf;
  if (r.type == nbd::kCmdWriteZeroes) allowed |= nbd::kCmdFlagNoHole | nbd::kCmdFlagFastZero;
  if (r.type == nbd::kCmdBlockStatus) allowed |= nbd::kCmdFlagReqOne;
  FUZZ_CHECK((r.flags & ~allowed) == 0);
  if (r.type == nbd::kCmdFlush) return;
  FUZZ_CHECK(r.length > 0);
  FUZZ_CHECK(range_in_bounds(r.offset, r.length, exp.size));
  if (exp.align_required) FUZZ_CHECK(r.offset % exp.min_block == 0 && r.length % exp.min_block == 0);
  if (r.type == nbd::kCmdRead || r.type == nbd::kCmdWrite) FUZZ_CHECK(r.length <= exp.max_block);
  if (r.type == nbd::kCmdBlockStatus) FUZZ_CHECK(s.base_allocation);
}

void fuzz_validator(const uint8_t* data, size_t size) {
  static const std::vector<nbd::ExportInfo> exports = [] {
    std::vector<nbd::ExportInfo> v;
    MemoryDevice mem(kDeviceSize);
    v.push_back(nbd::make_export_info(mem.geometry(), mem.capabilities(), "a", "", false));
    v.push_back(nbd::make_export_info(mem.geometry(), mem.capabilities(), "b", "", true));
    Geometry g = mem.geometry();
    g.accepts_unaligned = true;
    g.logical_block_size = 4096;
    g.max_io_size = 8192;
    v.push_back(nbd::make_export_info(g, Capabilities{}, "c", "", false));
    return v;
  }();
  const nbd::Session sessions[] = {{false, false, 0}, {true, false, 0}, {true, true, 0}};
  const size_t limit = std::min<size_t>(size, 4096);
  for (size_t at = 0; at + nbd::kRequestSize <= limit; ++at) {
    std::array<std::byte, nbd::kRequestSize> hdr;
    std::memcpy(hdr.data(), data + at, nbd::kRequestSize);
    // Force the magic on half of the windows so the fields get judged.
    if (at % 2 == 0) nbd::put_be32(hdr.data(), nbd::kRequestMagic);
    nbd::Request r;
    if (!nbd::parse_request(hdr.data(), &r)) continue;
    for (const auto& exp : exports) {
      for (const auto& s : sessions) check_verdict(r, exp, s);
    }
  }
}

// ---- Part 2: a whole connection ---------------------------------------

std::vector<uint8_t> handshake_script(const Config& c) {
  nbd::WireWriter w;
  w.u32(nbd::kClientFlagFixedNewstyle | (c.no_zeroes ? nbd::kClientFlagNoZeroes : 0));
  auto option = [&](uint32_t opt, const std::vector<std::byte>& payload) {
    w.u64(nbd::kIHaveOpt);
    w.u32(opt);
    w.u32(static_cast<uint32_t>(payload.size()));
    w.bytes(std::string_view(reinterpret_cast<const char*>(payload.data()), payload.size()));
  };
  if (c.structured) option(nbd::kOptStructuredReply, {});
  if (c.base_allocation) {
    nbd::WireWriter q;
    q.u32(0);  // default export
    q.u32(1);
    q.u32(static_cast<uint32_t>(nbd::kBaseAllocation.size()));
    q.bytes(nbd::kBaseAllocation);
    option(nbd::kOptSetMetaContext, q.data());
  }
  if (c.export_name) {
    option(nbd::kOptExportName, {});
  } else {
    nbd::WireWriter g;
    g.u32(0);
    g.u16(0);
    option(nbd::kOptGo, g.data());
  }
  std::vector<uint8_t> out(w.size());
  std::memcpy(out.data(), w.data().data(), w.size());
  return out;
}

// The requests the server must answer: complete ones before EOF, a bad
// magic or NBD_CMD_DISC (a WRITE is complete with its whole payload).
std::vector<nbd::Request> expected_requests(const uint8_t* p, size_t n) {
  std::vector<nbd::Request> out;
  size_t at = 0;
  while (n - at >= nbd::kRequestSize) {
    nbd::Request r;
    if (!nbd::parse_request(reinterpret_cast<const std::byte*>(p + at), &r)) break;
    if (r.type == nbd::kCmdDisc) break;
    at += nbd::kRequestSize;
    if (r.type == nbd::kCmdWrite) {
      if (n - at < r.length) break;
      at += r.length;
    }
    out.push_back(r);
  }
  return out;
}

// Skips the handshake's answers; returns where transmission replies start.
size_t skip_handshake(const std::vector<uint8_t>& out, const Config& c) {
  FUZZ_CHECK(out.size() >= 18 && load_be64(out.data()) == nbd::kNbdMagic);
  size_t at = 18;
  bool go_acked = false;
  while (!go_acked && out.size() - at >= nbd::kOptionReplyHeaderSize &&
         load_be64(out.data() + at) == nbd::kOptionReplyMagic) {
    const uint32_t option = load_be32(out.data() + at + 8);
    const uint32_t type = load_be32(out.data() + at + 12);
    FUZZ_CHECK(type < 0x80000000u);  // the scripted handshake is valid
    go_acked = option == nbd::kOptGo && type == nbd::kRepAck;
    at += nbd::kOptionReplyHeaderSize + load_be32(out.data() + at + 16);
    FUZZ_CHECK(at <= out.size());
  }
  if (c.export_name) {
    at += c.no_zeroes ? 10 : 10 + nbd::kExportNameZeroes;
    FUZZ_CHECK(at <= out.size());
  } else {
    FUZZ_CHECK(go_acked);
  }
  return at;
}

void check_replies(const std::vector<uint8_t>& out, size_t at, const std::vector<nbd::Request>& reqs,
                   const nbd::ExportInfo& exp, const nbd::Session& session, bool exact_errors) {
  for (size_t i = 0; i < reqs.size(); ++i) {
    const nbd::Request& r = reqs[i];
    const nbd::Verdict v = nbd::validate_request(r, exp, session);
    const std::string where = "reply " + std::to_string(i) + " (" + nbd::command_name(r.type) + ")";
    uint32_t error = 0;
    if (!session.structured_replies) {
      FUZZ_CHECK_MSG(out.size() - at >= nbd::kSimpleReplySize, where + ": missing");
      FUZZ_CHECK_MSG(load_be32(out.data() + at) == nbd::kSimpleReplyMagic, where + ": bad magic");
      error = load_be32(out.data() + at + 4);
      FUZZ_CHECK_MSG(load_be64(out.data() + at + 8) == r.cookie, where + ": wrong cookie");
      at += nbd::kSimpleReplySize;
      if (r.type == nbd::kCmdRead && error == 0) {
        FUZZ_CHECK_MSG(out.size() - at >= r.length, where + ": short read data");
        at += r.length;
      }
    } else {
      FUZZ_CHECK_MSG(out.size() - at >= nbd::kStructuredReplySize, where + ": missing");
      FUZZ_CHECK_MSG(load_be32(out.data() + at) == nbd::kStructuredReplyMagic, where + ": bad magic");
      const uint16_t flags = load_be16(out.data() + at + 4);
      const uint16_t type = load_be16(out.data() + at + 6);
      FUZZ_CHECK_MSG(load_be64(out.data() + at + 8) == r.cookie, where + ": wrong cookie");
      const uint32_t len = load_be32(out.data() + at + 16);
      FUZZ_CHECK(flags == nbd::kReplyFlagDone);
      at += nbd::kStructuredReplySize;
      FUZZ_CHECK_MSG(out.size() - at >= len, where + ": short payload");
      const uint8_t* p = out.data() + at;
      switch (type) {
        case nbd::kReplyTypeNone:
          FUZZ_CHECK(len == 0);
          FUZZ_CHECK(r.type != nbd::kCmdRead && r.type != nbd::kCmdBlockStatus);
          break;
        case nbd::kReplyTypeOffsetData:
          FUZZ_CHECK(r.type == nbd::kCmdRead);
          FUZZ_CHECK(len == 8 + r.length && load_be64(p) == r.offset);
          break;
        case nbd::kReplyTypeBlockStatus: {
          FUZZ_CHECK(r.type == nbd::kCmdBlockStatus);
          FUZZ_CHECK(len >= 12 && (len - 4) % 8 == 0);
          FUZZ_CHECK(load_be32(p) == nbd::kBaseAllocationId);
          const size_t n = (len - 4) / 8;
          if (r.flags & nbd::kCmdFlagReqOne) FUZZ_CHECK(n == 1);
          uint64_t covered = 0;
          for (size_t k = 0; k < n; ++k) {
            const uint32_t dlen = load_be32(p + 4 + 8 * k);
            FUZZ_CHECK(dlen > 0);
            FUZZ_CHECK((load_be32(p + 8 + 8 * k) & ~(nbd::kStateHole | nbd::kStateZero)) == 0);
            covered += dlen;
          }
          FUZZ_CHECK(covered <= r.length);
          break;
        }
        case nbd::kReplyTypeError:
          FUZZ_CHECK(len >= 6);
          error = load_be32(p);
          FUZZ_CHECK(error != 0);
          FUZZ_CHECK(6u + load_be16(p + 4) == len);
          break;
        default:
          FUZZ_CHECK_MSG(false, where + ": unknown chunk type " + std::to_string(type));
      }
      at += len;
    }
    if (v.error != 0) {
      FUZZ_CHECK_MSG(error == v.error, where + ": error " + std::to_string(error) + ", validator said " +
                                           std::to_string(v.error));
    } else if (exact_errors) {
      FUZZ_CHECK_MSG(error == 0, where + ": a valid request failed with " + std::to_string(error));
    }
    FUZZ_CHECK(error == 0 || error == nbd::kEperm || error == nbd::kEio || error == nbd::kEnomem ||
               error == nbd::kEinval || error == nbd::kEnospc || error == nbd::kEoverflow ||
               error == nbd::kEnotsup || error == nbd::kEshutdown);
  }
  FUZZ_CHECK_MSG(at == out.size(), std::to_string(out.size() - at) + " bytes after the last expected reply");
}

std::shared_ptr<BlockDevice> make_stack(const Config& c) {
  // One device for all runs, zeroed for each: a fresh one per run costs more
  // in page faults than the rest of the run.
  static const auto mem = std::make_shared<MemoryDevice>(kDeviceSize);
  FUZZ_CHECK(mem->write_zeroes(0, kDeviceSize, 0).ok());
  if (!c.bow) return mem;
  auto bow = bow::BowTarget::open(mem, bow::BowOptions{.block_size = 4096});
  FUZZ_CHECK(bow.ok());
  if (c.bow_checkpoint) {
    FUZZ_CHECK((*bow)->trim(kDeviceSize / 2, kDeviceSize / 2, 0).ok());
    FUZZ_CHECK((*bow)->checkpoint().ok());
  }
  return bow.value();
}

}  // namespace
}  // namespace bowstack::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace bowstack;
  using namespace bowstack::fuzz;
  if (size == 0 || size > kMaxInput) return 0;
  fuzz_validator(data + 1, size - 1);

  const Config config(data[0]);
  Volume volume(make_stack(config));
  const nbd::ExportInfo exp =
      nbd::make_export_info(volume.geometry(), volume.capabilities(), "bowstack", "", config.read_only);
  std::vector<uint8_t> stream = handshake_script(config);
  stream.insert(stream.end(), data + 1, data + size);

  Peer peer;
  if (!peer.start(stream)) return 0;
  {
    nbd::Connection conn(peer.server_fd(), 1, volume, exp,
                         nbd::Connection::Limits{.max_threads = 1, .handshake_timeout_ms = 5000});
    conn.run();
  }
  const std::vector<uint8_t>& out = peer.finish();
  const nbd::Session session{config.structured, config.base_allocation, 0};
  const size_t at = skip_handshake(out, config);
  // The memory device never fails; bow may (e.g. ENOSPC while checkpointed).
  check_replies(out, at, expected_requests(data + 1, size - 1), exp, session, !config.bow);
  return 0;
}
