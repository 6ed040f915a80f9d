// Test-only: a minimal NBD client that speaks raw bytes, written from the
// protocol text and deliberately independent of the server's own code
// (its constants are spelled out here again), so that tests check the
// server against the spec rather than against itself.
//
// Every socket operation has a timeout, so a server that hangs fails the
// test instead of hanging it.
#pragma once

#include <poll.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <functional>
#include <map>
#include <string>
#include <string_view>
#include <vector>

namespace bowstack::nbd::testing {

namespace wire {
constexpr uint64_t kNbdMagic = 0x4e42444d41474943ull;
constexpr uint64_t kIHaveOpt = 0x49484156454f5054ull;
constexpr uint64_t kOptReplyMagic = 0x3e889045565a9ull;
constexpr uint32_t kRequestMagic = 0x25609513u;
constexpr uint32_t kSimpleMagic = 0x67446698u;
constexpr uint32_t kStructuredMagic = 0x668e33efu;

constexpr uint32_t kOptExportName = 1, kOptAbort = 2, kOptList = 3, kOptStartTls = 5, kOptInfo = 6,
                   kOptGo = 7, kOptStructuredReply = 8, kOptListMetaContext = 9, kOptSetMetaContext = 10,
                   kOptExtendedHeaders = 11;
constexpr uint32_t kRepAck = 1, kRepServer = 2, kRepInfo = 3, kRepMetaContext = 4;
constexpr uint32_t kRepErrUnsup = 0x80000001u, kRepErrInvalid = 0x80000003u, kRepErrTlsReqd = 0x80000005u,
                   kRepErrUnknown = 0x80000006u, kRepErrTooBig = 0x80000009u;
constexpr uint16_t kInfoExport = 0, kInfoName = 1, kInfoDescription = 2, kInfoBlockSize = 3;

constexpr uint16_t kFlagHasFlags = 1 << 0, kFlagReadOnly = 1 << 1, kFlagSendFlush = 1 << 2,
                   kFlagSendFua = 1 << 3, kFlagRotational = 1 << 4, kFlagSendTrim = 1 << 5,
                   kFlagSendWriteZeroes = 1 << 6, kFlagSendDf = 1 << 7, kFlagCanMultiConn = 1 << 8,
                   kFlagSendCache = 1 << 10, kFlagSendFastZero = 1 << 11;

constexpr uint16_t kCmdRead = 0, kCmdWrite = 1, kCmdDisc = 2, kCmdFlush = 3, kCmdTrim = 4, kCmdCache = 5,
                   kCmdWriteZeroes = 6, kCmdBlockStatus = 7;
constexpr uint16_t kCmdFlagFua = 1 << 0, kCmdFlagNoHole = 1 << 1, kCmdFlagDf = 1 << 2,
                   kCmdFlagReqOne = 1 << 3, kCmdFlagFastZero = 1 << 4;

constexpr uint16_t kReplyFlagDone = 1;
constexpr uint16_t kReplyTypeNone = 0, kReplyTypeOffsetData = 1, kReplyTypeBlockStatus = 5,
                   kReplyTypeError = 0x8001;

constexpr uint32_t kEperm = 1, kEio = 5, kEinval = 22, kEnospc = 28, kEoverflow = 75, kEnotsup = 95;
}  // namespace wire

using Bytes = std::vector<uint8_t>;

// Big-endian builder.
class Msg {
 public:
  Msg& u8(uint8_t v) {
    b_.push_back(v);
    return *this;
  }
  Msg& u16(uint16_t v) { return u8(uint8_t(v >> 8)).u8(uint8_t(v)); }
  Msg& u32(uint32_t v) { return u16(uint16_t(v >> 16)).u16(uint16_t(v)); }
  Msg& u64(uint64_t v) { return u32(uint32_t(v >> 32)).u32(uint32_t(v)); }
  Msg& str(std::string_view s) {
    b_.insert(b_.end(), s.begin(), s.end());
    return *this;
  }
  Msg& bytes(const Bytes& b) {
    b_.insert(b_.end(), b.begin(), b.end());
    return *this;
  }
  const Bytes& data() const { return b_; }

 private:
  Bytes b_;
};

inline uint16_t be16(const uint8_t* p) { return uint16_t(p[0] << 8 | p[1]); }
inline uint32_t be32(const uint8_t* p) { return uint32_t(be16(p)) << 16 | be16(p + 2); }
inline uint64_t be64(const uint8_t* p) { return uint64_t(be32(p)) << 32 | be32(p + 4); }

struct OptReply {
  uint64_t magic = 0;
  uint32_t option = 0;
  uint32_t type = 0;
  Bytes data;
};

struct Reply {
  bool structured = false;
  uint32_t error = 0;  // simple replies; for error chunks, the chunk's error
  uint64_t cookie = 0;
  uint16_t flags = 0;  // structured only
  uint16_t type = 0;   // structured only
  Bytes payload;       // read data (simple) or the chunk payload (structured)
};

struct Negotiated {
  uint64_t size = 0;
  uint16_t flags = 0;
  uint32_t min_block = 0, preferred_block = 0, max_block = 0;
  uint32_t meta_context_id = 0;
};

class RawClient {
 public:
  static constexpr int kTimeoutMs = 10000;

  explicit RawClient(int fd) : fd_(fd) {
    timeval tv{kTimeoutMs / 1000, 0};
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    ::setsockopt(fd_, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  }
  ~RawClient() { close(); }
  RawClient(const RawClient&) = delete;
  RawClient& operator=(const RawClient&) = delete;
  RawClient(RawClient&& o) noexcept
      : fd_(o.fd_), channel_send_(std::move(o.channel_send_)), channel_recv_(std::move(o.channel_recv_)) {
    o.fd_ = -1;
  }

  // Replaces the socket calls under every helper (a TLS session, once
  // STARTTLS has been answered): each returns bytes moved, <= 0 on failure.
  using SendFn = std::function<ssize_t(const void*, size_t)>;
  using RecvFn = std::function<ssize_t(void*, size_t)>;
  void set_channel(SendFn send, RecvFn recv) {
    channel_send_ = std::move(send);
    channel_recv_ = std::move(recv);
  }

  int fd() const { return fd_; }
  void close() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

  bool send_bytes(const void* p, size_t n) {
    auto* c = static_cast<const char*>(p);
    while (n > 0) {
      ssize_t k = channel_send_ ? channel_send_(c, n) : ::send(fd_, c, n, MSG_NOSIGNAL);
      if (k < 0 && errno == EINTR) continue;
      if (k <= 0) return false;
      c += k;
      n -= size_t(k);
    }
    return true;
  }
  bool send(const Msg& m) { return send_bytes(m.data().data(), m.data().size()); }
  bool send(const Bytes& b) { return send_bytes(b.data(), b.size()); }

  // False on EOF, error or timeout.
  bool recv_bytes(void* p, size_t n) {
    auto* c = static_cast<char*>(p);
    while (n > 0) {
      ssize_t k = channel_recv_ ? channel_recv_(c, n) : ::recv(fd_, c, n, 0);
      if (k < 0 && errno == EINTR) continue;
      if (k <= 0) return false;
      c += k;
      n -= size_t(k);
    }
    return true;
  }
  bool recv_into(Bytes* b, size_t n) {
    b->resize(n);
    return recv_bytes(b->data(), n);
  }

  // True if the server closed the connection (EOF or reset) within the
  // timeout, discarding anything it sent first.
  bool wait_for_eof() {
    char buf[4096];
    for (;;) {
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, kTimeoutMs) <= 0) return false;
      ssize_t k = ::recv(fd_, buf, sizeof buf, 0);
      if (k == 0) return true;
      if (k < 0) return errno == ECONNRESET;
    }
  }

  // --- Handshake ---
  bool read_greeting(uint16_t* flags = nullptr) {
    uint8_t g[18];
    if (!recv_bytes(g, sizeof g)) return false;
    if (be64(g) != wire::kNbdMagic || be64(g + 8) != wire::kIHaveOpt) return false;
    if (flags != nullptr) *flags = be16(g + 16);
    return true;
  }
  bool send_client_flags(uint32_t f) { return send(Msg().u32(f)); }
  bool send_option(uint32_t opt, const Bytes& data = {}) {
    return send(Msg().u64(wire::kIHaveOpt).u32(opt).u32(uint32_t(data.size())).bytes(data));
  }
  bool read_option_reply(OptReply* r) {
    uint8_t h[20];
    if (!recv_bytes(h, sizeof h)) return false;
    r->magic = be64(h);
    r->option = be32(h + 8);
    r->type = be32(h + 12);
    return r->magic == wire::kOptReplyMagic && recv_into(&r->data, be32(h + 16));
  }
  // Greeting and client flags (fixed newstyle + no zeroes).
  bool start_handshake() { return read_greeting() && send_client_flags(3); }

  static Bytes info_request(std::string_view name, const std::vector<uint16_t>& infos) {
    Msg m;
    m.u32(uint32_t(name.size())).str(name).u16(uint16_t(infos.size()));
    for (uint16_t i : infos) m.u16(i);
    return m.data();
  }
  static Bytes meta_request(std::string_view name, const std::vector<std::string>& queries) {
    Msg m;
    m.u32(uint32_t(name.size())).str(name).u32(uint32_t(queries.size()));
    for (const auto& q : queries) m.u32(uint32_t(q.size())).str(q);
    return m.data();
  }

  // Optional STRUCTURED_REPLY and SET_META_CONTEXT base:allocation, then GO
  // with an NBD_INFO_BLOCK_SIZE request. False on any unexpected reply.
  bool negotiate(bool structured, bool meta, Negotiated* out, std::string_view name = "") {
    return start_handshake() && negotiate_options(structured, meta, out, name);
  }
  // negotiate() after the greeting (after STARTTLS, say).
  bool negotiate_options(bool structured, bool meta, Negotiated* out, std::string_view name = "") {
    OptReply r;
    if (structured) {
      if (!send_option(wire::kOptStructuredReply) || !read_option_reply(&r) || r.type != wire::kRepAck)
        return false;
    }
    if (meta) {
      if (!send_option(wire::kOptSetMetaContext, meta_request(name, {"base:allocation"}))) return false;
      if (!read_option_reply(&r) || r.type != wire::kRepMetaContext || r.data.size() < 4) return false;
      out->meta_context_id = be32(r.data.data());
      if (!read_option_reply(&r) || r.type != wire::kRepAck) return false;
    }
    return go(name, {wire::kInfoBlockSize}, out);
  }
  // Sends GO and reads INFO replies up to ACK.
  bool go(std::string_view name, const std::vector<uint16_t>& infos, Negotiated* out) {
    if (!send_option(wire::kOptGo, info_request(name, infos))) return false;
    for (;;) {
      OptReply r;
      if (!read_option_reply(&r) || r.option != wire::kOptGo) return false;
      if (r.type == wire::kRepAck) return true;
      if (r.type != wire::kRepInfo || r.data.size() < 2) return false;
      uint16_t info = be16(r.data.data());
      if (info == wire::kInfoExport && r.data.size() == 12) {
        out->size = be64(r.data.data() + 2);
        out->flags = be16(r.data.data() + 10);
      } else if (info == wire::kInfoBlockSize && r.data.size() == 14) {
        out->min_block = be32(r.data.data() + 2);
        out->preferred_block = be32(r.data.data() + 6);
        out->max_block = be32(r.data.data() + 10);
      }
    }
  }

  // --- Transmission ---
  bool send_request(uint16_t flags, uint16_t type, uint64_t cookie, uint64_t offset, uint32_t length,
                    const Bytes& payload = {}) {
    return send(Msg()
                    .u32(wire::kRequestMagic)
                    .u16(flags)
                    .u16(type)
                    .u64(cookie)
                    .u64(offset)
                    .u32(length)
                    .bytes(payload));
  }
  // Reads one simple reply or structured chunk. For a simple reply without
  // error, `read_lengths[cookie]` bytes of data follow (0 if absent).
  bool read_reply(Reply* r, const std::map<uint64_t, uint32_t>& read_lengths = {}) {
    uint8_t m[4];
    if (!recv_bytes(m, 4)) return false;
    uint32_t magic = be32(m);
    if (magic == wire::kSimpleMagic) {
      uint8_t h[12];
      if (!recv_bytes(h, sizeof h)) return false;
      r->structured = false;
      r->error = be32(h);
      r->cookie = be64(h + 4);
      auto it = read_lengths.find(r->cookie);
      size_t n = (r->error == 0 && it != read_lengths.end()) ? it->second : 0;
      return recv_into(&r->payload, n);
    }
    if (magic == wire::kStructuredMagic) {
      uint8_t h[16];
      if (!recv_bytes(h, sizeof h)) return false;
      r->structured = true;
      r->flags = be16(h);
      r->type = be16(h + 2);
      r->cookie = be64(h + 4);
      if (!recv_into(&r->payload, be32(h + 12))) return false;
      r->error = 0;
      if ((r->type & 0x8000) && r->payload.size() >= 4) r->error = be32(r->payload.data());
      return true;
    }
    return false;
  }

  // Convenience wrappers for one request at a time.
  uint32_t write(uint64_t offset, const Bytes& data, uint16_t flags = 0, uint64_t cookie = 1) {
    Reply r;
    if (!send_request(flags, wire::kCmdWrite, cookie, offset, uint32_t(data.size()), data) ||
        !read_reply(&r) || r.cookie != cookie) {
      return UINT32_MAX;
    }
    return r.error;
  }
  uint32_t command(uint16_t type, uint64_t offset, uint32_t length, uint16_t flags = 0, uint64_t cookie = 1) {
    Reply r;
    if (!send_request(flags, type, cookie, offset, length) || !read_reply(&r) || r.cookie != cookie) {
      return UINT32_MAX;
    }
    return r.error;
  }
  // Simple-reply read; returns the error, fills *data on success.
  uint32_t read(uint64_t offset, uint32_t length, Bytes* data, uint16_t flags = 0, uint64_t cookie = 1) {
    Reply r;
    if (!send_request(flags, wire::kCmdRead, cookie, offset, length) || !read_reply(&r, {{cookie, length}}) ||
        r.cookie != cookie) {
      return UINT32_MAX;
    }
    if (r.structured) {
      if (r.type != wire::kReplyTypeOffsetData || r.payload.size() < 8) return r.error ? r.error : UINT32_MAX;
      data->assign(r.payload.begin() + 8, r.payload.end());
      return 0;
    }
    *data = std::move(r.payload);
    return r.error;
  }

 private:
  int fd_;
  SendFn channel_send_;
  RecvFn channel_recv_;
};

inline Bytes pattern(size_t n, uint8_t seed) {
  Bytes b(n);
  for (size_t i = 0; i < n; ++i) b[i] = uint8_t(seed + i * 7 + (i >> 9));
  return b;
}

}  // namespace bowstack::nbd::testing
