// NBD wire constants and big-endian field packing.
//
// The protocol is specified in doc/proto.md of the NetworkBlockDevice
// project; this header holds only the subset bowstack speaks (fixed newstyle
// handshake, simple and structured replies, base:allocation). Every field on
// the wire is big-endian. Layouts, with sizes in bytes:
//
//   option request     magic(8)=kIHaveOpt option(4) length(4) data(length)
//   option reply       magic(8)=kOptionReplyMagic option(4) type(4) length(4) data(length)
//   request            magic(4)=kRequestMagic flags(2) type(2) cookie(8) offset(8) length(4)
//                      [length bytes of payload for kCmdWrite]
//   simple reply       magic(4)=kSimpleReplyMagic error(4) cookie(8) [data for a successful read]
//   structured chunk   magic(4)=kStructuredReplyMagic flags(2) type(2) cookie(8) length(4) payload
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string_view>
#include <vector>

namespace bowstack::nbd {

// Magics.
inline constexpr uint64_t kNbdMagic = 0x4e42444d41474943ull;  // "NBDMAGIC"
inline constexpr uint64_t kIHaveOpt = 0x49484156454f5054ull;  // "IHAVEOPT"
inline constexpr uint64_t kOptionReplyMagic = 0x3e889045565a9ull;
inline constexpr uint32_t kRequestMagic = 0x25609513u;
inline constexpr uint32_t kSimpleReplyMagic = 0x67446698u;
inline constexpr uint32_t kStructuredReplyMagic = 0x668e33efu;

// Handshake flags (server) and client flags.
inline constexpr uint16_t kFlagFixedNewstyle = 1u << 0;
inline constexpr uint16_t kFlagNoZeroes = 1u << 1;
inline constexpr uint32_t kClientFlagFixedNewstyle = 1u << 0;
inline constexpr uint32_t kClientFlagNoZeroes = 1u << 1;
inline constexpr uint32_t kClientFlagsKnown = kClientFlagFixedNewstyle | kClientFlagNoZeroes;

// Options.
inline constexpr uint32_t kOptExportName = 1;
inline constexpr uint32_t kOptAbort = 2;
inline constexpr uint32_t kOptList = 3;
inline constexpr uint32_t kOptStartTls = 5;
inline constexpr uint32_t kOptInfo = 6;
inline constexpr uint32_t kOptGo = 7;
inline constexpr uint32_t kOptStructuredReply = 8;
inline constexpr uint32_t kOptListMetaContext = 9;
inline constexpr uint32_t kOptSetMetaContext = 10;
inline constexpr uint32_t kOptExtendedHeaders = 11;

// Option reply types.
inline constexpr uint32_t kRepAck = 1;
inline constexpr uint32_t kRepServer = 2;
inline constexpr uint32_t kRepInfo = 3;
inline constexpr uint32_t kRepMetaContext = 4;
inline constexpr uint32_t kRepErrUnsup = 0x80000001u;
inline constexpr uint32_t kRepErrPolicy = 0x80000002u;
inline constexpr uint32_t kRepErrInvalid = 0x80000003u;
inline constexpr uint32_t kRepErrPlatform = 0x80000004u;
inline constexpr uint32_t kRepErrTlsReqd = 0x80000005u;
inline constexpr uint32_t kRepErrUnknown = 0x80000006u;
inline constexpr uint32_t kRepErrShutdown = 0x80000007u;
inline constexpr uint32_t kRepErrBlockSizeReqd = 0x80000008u;
inline constexpr uint32_t kRepErrTooBig = 0x80000009u;

// NBD_INFO_* types inside NBD_REP_INFO.
inline constexpr uint16_t kInfoExport = 0;
inline constexpr uint16_t kInfoName = 1;
inline constexpr uint16_t kInfoDescription = 2;
inline constexpr uint16_t kInfoBlockSize = 3;

// Transmission flags.
inline constexpr uint16_t kFlagHasFlags = 1u << 0;
inline constexpr uint16_t kFlagReadOnly = 1u << 1;
inline constexpr uint16_t kFlagSendFlush = 1u << 2;
inline constexpr uint16_t kFlagSendFua = 1u << 3;
inline constexpr uint16_t kFlagRotational = 1u << 4;
inline constexpr uint16_t kFlagSendTrim = 1u << 5;
inline constexpr uint16_t kFlagSendWriteZeroes = 1u << 6;
inline constexpr uint16_t kFlagSendDf = 1u << 7;
inline constexpr uint16_t kFlagCanMultiConn = 1u << 8;
inline constexpr uint16_t kFlagSendCache = 1u << 10;
inline constexpr uint16_t kFlagSendFastZero = 1u << 11;

// Commands.
inline constexpr uint16_t kCmdRead = 0;
inline constexpr uint16_t kCmdWrite = 1;
inline constexpr uint16_t kCmdDisc = 2;
inline constexpr uint16_t kCmdFlush = 3;
inline constexpr uint16_t kCmdTrim = 4;
inline constexpr uint16_t kCmdCache = 5;
inline constexpr uint16_t kCmdWriteZeroes = 6;
inline constexpr uint16_t kCmdBlockStatus = 7;

// Command flags.
inline constexpr uint16_t kCmdFlagFua = 1u << 0;
inline constexpr uint16_t kCmdFlagNoHole = 1u << 1;
inline constexpr uint16_t kCmdFlagDf = 1u << 2;
inline constexpr uint16_t kCmdFlagReqOne = 1u << 3;
inline constexpr uint16_t kCmdFlagFastZero = 1u << 4;

// Structured reply flags and chunk types.
inline constexpr uint16_t kReplyFlagDone = 1u << 0;
inline constexpr uint16_t kReplyTypeNone = 0;
inline constexpr uint16_t kReplyTypeOffsetData = 1;
inline constexpr uint16_t kReplyTypeBlockStatus = 5;
inline constexpr uint16_t kReplyTypeError = (1u << 15) + 1;

// base:allocation descriptor flags.
inline constexpr uint32_t kStateHole = 1u << 0;
inline constexpr uint32_t kStateZero = 1u << 1;

// Error values allowed on the wire.
inline constexpr uint32_t kEperm = 1;
inline constexpr uint32_t kEio = 5;
inline constexpr uint32_t kEnomem = 12;
inline constexpr uint32_t kEinval = 22;
inline constexpr uint32_t kEnospc = 28;
inline constexpr uint32_t kEoverflow = 75;
inline constexpr uint32_t kEnotsup = 95;
inline constexpr uint32_t kEshutdown = 108;

// Fixed sizes.
inline constexpr size_t kOptionHeaderSize = 16;
inline constexpr size_t kOptionReplyHeaderSize = 20;
inline constexpr size_t kRequestSize = 28;
inline constexpr size_t kSimpleReplySize = 16;
inline constexpr size_t kStructuredReplySize = 20;
inline constexpr size_t kExportNameZeroes = 124;
// Strings (names, queries, messages) longer than this are not allowed.
inline constexpr size_t kMaxStringLength = 4096;

inline constexpr std::string_view kBaseAllocation = "base:allocation";

// Big-endian stores and loads. p must point at enough bytes.
inline void put_be16(std::byte* p, uint16_t v) {
  p[0] = std::byte(v >> 8);
  p[1] = std::byte(v);
}
inline void put_be32(std::byte* p, uint32_t v) {
  put_be16(p, uint16_t(v >> 16));
  put_be16(p + 2, uint16_t(v));
}
inline void put_be64(std::byte* p, uint64_t v) {
  put_be32(p, uint32_t(v >> 32));
  put_be32(p + 4, uint32_t(v));
}
inline uint16_t get_be16(const std::byte* p) {
  return uint16_t((std::to_integer<uint16_t>(p[0]) << 8) | std::to_integer<uint16_t>(p[1]));
}
inline uint32_t get_be32(const std::byte* p) { return (uint32_t(get_be16(p)) << 16) | get_be16(p + 2); }
inline uint64_t get_be64(const std::byte* p) { return (uint64_t(get_be32(p)) << 32) | get_be32(p + 4); }

// Appends big-endian fields to a growing message.
class WireWriter {
 public:
  void u16(uint16_t v) { put_be16(grow(2), v); }
  void u32(uint32_t v) { put_be32(grow(4), v); }
  void u64(uint64_t v) { put_be64(grow(8), v); }
  void bytes(std::string_view s) {
    if (!s.empty()) std::memcpy(grow(s.size()), s.data(), s.size());
  }
  void zeroes(size_t n) { std::memset(grow(n), 0, n); }
  const std::vector<std::byte>& data() const { return buf_; }
  size_t size() const { return buf_.size(); }

 private:
  std::byte* grow(size_t n) {
    size_t at = buf_.size();
    buf_.resize(at + n);
    return buf_.data() + at;
  }
  std::vector<std::byte> buf_;
};

// Consumes big-endian fields from a received message; every read is bounds
// checked and a short message sets ok() to false instead of overrunning.
class WireReader {
 public:
  WireReader(const std::byte* p, size_t n) : p_(p), n_(n) {}
  bool ok() const { return ok_; }
  size_t remaining() const { return n_ - at_; }
  uint16_t u16() { return take(2) ? get_be16(p_ + at_ - 2) : 0; }
  uint32_t u32() { return take(4) ? get_be32(p_ + at_ - 4) : 0; }
  std::string_view str(size_t n) {
    if (!take(n)) return {};
    return {reinterpret_cast<const char*>(p_ + at_ - n), n};
  }

 private:
  bool take(size_t n) {
    if (!ok_ || n > n_ - at_) {
      ok_ = false;
      return false;
    }
    at_ += n;
    return true;
  }
  const std::byte* p_;
  size_t n_;
  size_t at_ = 0;
  bool ok_ = true;
};

}  // namespace bowstack::nbd
