#include "nbd/handshake.h"

#include <spdlog/spdlog.h>
#include <sys/uio.h>

#include <array>
#include <string>

#include "nbd/protocol.h"
#include "nbd/tls_session.h"

namespace bowstack::nbd {

namespace {

std::string_view as_chars(const std::vector<std::byte>& v) {
  return {reinterpret_cast<const char*>(v.data()), v.size()};
}

// Parsed payload of LIST_META_CONTEXT / SET_META_CONTEXT.
struct MetaQuery {
  std::string_view export_name;
  std::vector<std::string_view> queries;
};

// Client-supplied text made safe for a log line.
std::string printable(std::string_view s) {
  constexpr size_t kMax = 256;
  std::string out;
  for (char c : s.substr(0, kMax)) {
    auto u = static_cast<unsigned char>(c);
    out += (u >= 0x20 && u < 0x7f) ? c : '?';
  }
  if (s.size() > kMax) out += "...";
  return out;
}

bool parse_meta_query(const std::vector<std::byte>& data, MetaQuery* out) {
  WireReader r(data.data(), data.size());
  uint32_t name_len = r.u32();
  out->export_name = r.str(name_len);
  uint32_t count = r.u32();
  if (!r.ok()) return false;
  // Each query needs at least its 4-byte length; reject absurd counts before
  // reserving anything.
  if (count > r.remaining() / 4) return false;
  for (uint32_t i = 0; i < count; ++i) {
    uint32_t len = r.u32();
    std::string_view q = r.str(len);
    if (!r.ok()) return false;
    out->queries.push_back(q);
  }
  return r.remaining() == 0;
}

}  // namespace

Handshake::Handshake(Transport* transport, BufferedReader* reader, const ExportInfo& exp, uint64_t conn_id,
                     const TlsContext* tls)
    : transport_(transport), reader_(reader), exp_(exp), id_(conn_id), tls_(tls) {}

bool Handshake::tls_missing(uint32_t option) const {
  return tls_ != nullptr && tls_->mode() == TlsMode::kRequire && !transport_->tls() &&
         option != kOptStartTls && option != kOptAbort;
}

bool Handshake::reply(uint32_t option, uint32_t type, std::string_view data) {
  std::array<std::byte, kOptionReplyHeaderSize> hdr;
  put_be64(hdr.data(), kOptionReplyMagic);
  put_be32(hdr.data() + 8, option);
  put_be32(hdr.data() + 12, type);
  put_be32(hdr.data() + 16, static_cast<uint32_t>(data.size()));
  iovec iov[2] = {{hdr.data(), hdr.size()}, {const_cast<char*>(data.data()), data.size()}};
  Status s = transport_->send_all(iov, data.empty() ? 1 : 2);
  if (!s.ok()) spdlog::debug("nbd[{}]: handshake send failed: {}", id_, s.message());
  return s.ok();
}

bool Handshake::reply(uint32_t option, uint32_t type, const std::vector<std::byte>& data) {
  return reply(option, type, as_chars(data));
}

bool Handshake::run(Session* session) {
  WireWriter hello;
  hello.u64(kNbdMagic);
  hello.u64(kIHaveOpt);
  hello.u16(kFlagFixedNewstyle | kFlagNoZeroes);
  if (Status s = transport_->send_all(hello.data().data(), hello.size()); !s.ok()) {
    spdlog::debug("nbd[{}]: handshake send failed: {}", id_, s.message());
    return false;
  }

  std::array<std::byte, 4> cflags;
  if (Status s = reader_->read_exact(cflags); !s.ok()) {
    spdlog::debug("nbd[{}]: no client flags: {}", id_, s.message());
    return false;
  }
  uint32_t client_flags = get_be32(cflags.data());
  if ((client_flags & ~kClientFlagsKnown) != 0) {
    spdlog::warn("nbd[{}]: client sent unknown flags {:#x}; dropping", id_, client_flags);
    return false;
  }
  no_zeroes_ = (client_flags & kClientFlagNoZeroes) != 0;

  for (unsigned n = 0; n < kMaxOptions; ++n) {
    std::array<std::byte, kOptionHeaderSize> hdr;
    if (Status s = reader_->read_exact(hdr); !s.ok()) {
      spdlog::debug("nbd[{}]: handshake ended: {}", id_, s.message());
      return false;
    }
    if (get_be64(hdr.data()) != kIHaveOpt) {
      spdlog::warn("nbd[{}]: bad option magic; dropping", id_);
      return false;
    }
    uint32_t option = get_be32(hdr.data() + 8);
    uint32_t length = get_be32(hdr.data() + 12);
    if (length > kMaxOptionLength) {
      spdlog::warn("nbd[{}]: option {} has a {}-byte payload; discarding", id_, option, length);
      if (Status s = reader_->skip(length); !s.ok()) return false;
      // EXPORT_NAME cannot be answered with an error.
      if (option == kOptExportName) return false;
      if (tls_missing(option)) {
        if (!reply(option, kRepErrTlsReqd, "TLS is required")) return false;
        continue;
      }
      if (!reply(option, kRepErrTooBig, "option payload too large")) return false;
      continue;
    }
    std::vector<std::byte> data(length);
    if (Status s = reader_->read_exact(data); !s.ok()) {
      spdlog::debug("nbd[{}]: handshake ended: {}", id_, s.message());
      return false;
    }
    switch (handle_option(option, data)) {
      case Next::kContinue:
        break;
      case Next::kTransmission:
        *session = session_;
        return true;
      case Next::kClose:
        return false;
    }
  }
  spdlog::warn("nbd[{}]: more than {} options during handshake; dropping", id_, kMaxOptions);
  return false;
}

Handshake::Next Handshake::handle_option(uint32_t option, const std::vector<std::byte>& data) {
  if (tls_missing(option)) {
    if (option == kOptExportName) {
      spdlog::warn("nbd[{}]: plain client sent NBD_OPT_EXPORT_NAME but TLS is required; dropping", id_);
      return Next::kClose;
    }
    spdlog::debug("nbd[{}]: option {} refused: TLS is required", id_, option);
    return reply_or_close(option, kRepErrTlsReqd, "TLS is required");
  }
  switch (option) {
    case kOptExportName:
      return export_name(data);
    case kOptAbort:
      spdlog::debug("nbd[{}]: client aborted the handshake", id_);
      reply(option, kRepAck);
      return Next::kClose;
    case kOptList: {
      if (!data.empty()) return reply_or_close(option, kRepErrInvalid, "NBD_OPT_LIST takes no data");
      // Name, then the description as the human-readable details.
      WireWriter w;
      w.u32(static_cast<uint32_t>(exp_.name.size()));
      w.bytes(exp_.name);
      w.bytes(std::string_view(exp_.description).substr(0, kMaxStringLength));
      if (!reply(option, kRepServer, w.data())) return Next::kClose;
      return reply_or_close(option, kRepAck);
    }
    case kOptInfo:
    case kOptGo:
      return info_or_go(option, data);
    case kOptStructuredReply:
      if (!data.empty()) {
        return reply_or_close(option, kRepErrInvalid, "NBD_OPT_STRUCTURED_REPLY takes no data");
      }
      session_.structured_replies = true;
      return reply_or_close(option, kRepAck);
    case kOptListMetaContext:
    case kOptSetMetaContext:
      return meta_context(option, data);
    case kOptStartTls:
      return start_tls(data);
    default:
      spdlog::debug("nbd[{}]: unsupported option {}", id_, option);
      return reply_or_close(option, kRepErrUnsup, "option not supported");
  }
}

Handshake::Next Handshake::export_name(const std::vector<std::byte>& data) {
  std::string_view name = as_chars(data);
  if (!exp_.matches(name)) {
    // NBD_OPT_EXPORT_NAME has no error reply: the only answer is to hang up.
    spdlog::warn("nbd[{}]: client asked for unknown export '{}'; dropping", id_, printable(name));
    return Next::kClose;
  }
  session_.transmission_flags = exp_.transmission_flags(session_.structured_replies);
  WireWriter w;
  w.u64(exp_.size);
  w.u16(session_.transmission_flags);
  if (!no_zeroes_) w.zeroes(kExportNameZeroes);
  if (Status s = transport_->send_all(w.data().data(), w.size()); !s.ok()) return Next::kClose;
  return Next::kTransmission;
}

Handshake::Next Handshake::info_or_go(uint32_t option, const std::vector<std::byte>& data) {
  WireReader r(data.data(), data.size());
  uint32_t name_len = r.u32();
  std::string_view name = r.str(name_len);
  uint16_t count = r.u16();
  std::vector<uint16_t> requests;
  for (uint16_t i = 0; i < count && r.ok(); ++i) requests.push_back(r.u16());
  if (!r.ok() || r.remaining() != 0) return reply_or_close(option, kRepErrInvalid, "malformed request");
  if (!exp_.matches(name)) {
    spdlog::debug("nbd[{}]: client asked for unknown export '{}'", id_, printable(name));
    return reply_or_close(option, kRepErrUnknown, "no such export");
  }

  uint16_t flags = exp_.transmission_flags(session_.structured_replies);
  WireWriter info;
  info.u16(kInfoExport);
  info.u64(exp_.size);
  info.u16(flags);
  if (!reply(option, kRepInfo, info.data())) return Next::kClose;

  bool sent_name = false, sent_description = false;
  for (uint16_t req : requests) {
    if (req == kInfoName && !sent_name) {
      sent_name = true;
      WireWriter w;
      w.u16(kInfoName);
      w.bytes(exp_.name);
      if (!reply(option, kRepInfo, w.data())) return Next::kClose;
    } else if (req == kInfoDescription && !sent_description && !exp_.description.empty()) {
      sent_description = true;
      WireWriter w;
      w.u16(kInfoDescription);
      w.bytes(std::string_view(exp_.description).substr(0, kMaxStringLength));
      if (!reply(option, kRepInfo, w.data())) return Next::kClose;
    }
  }
  WireWriter bs;
  bs.u16(kInfoBlockSize);
  bs.u32(exp_.min_block);
  bs.u32(exp_.preferred_block);
  bs.u32(exp_.max_block);
  if (!reply(option, kRepInfo, bs.data())) return Next::kClose;
  if (!reply(option, kRepAck)) return Next::kClose;
  if (option == kOptInfo) return Next::kContinue;
  session_.transmission_flags = flags;
  return Next::kTransmission;
}

Handshake::Next Handshake::meta_context(uint32_t option, const std::vector<std::byte>& data) {
  bool set = option == kOptSetMetaContext;
  // SET replaces the selection even when it fails.
  if (set) session_.base_allocation = false;
  if (set && !session_.structured_replies) {
    return reply_or_close(option, kRepErrInvalid, "structured replies must be negotiated first");
  }
  MetaQuery q;
  if (!parse_meta_query(data, &q)) return reply_or_close(option, kRepErrInvalid, "malformed request");
  if (!exp_.matches(q.export_name)) return reply_or_close(option, kRepErrUnknown, "no such export");

  bool match = false;
  if (set) {
    for (std::string_view query : q.queries) match = match || query == kBaseAllocation;
  } else {
    match = q.queries.empty();
    for (std::string_view query : q.queries) match = match || query == kBaseAllocation || query == "base:";
  }
  if (match) {
    WireWriter w;
    w.u32(set ? kBaseAllocationId : 0);
    w.bytes(kBaseAllocation);
    if (!reply(option, kRepMetaContext, w.data())) return Next::kClose;
    if (set) session_.base_allocation = true;
  }
  return reply_or_close(option, kRepAck);
}

Handshake::Next Handshake::start_tls(const std::vector<std::byte>& data) {
  const uint32_t option = kOptStartTls;
  if (tls_ == nullptr || tls_->mode() == TlsMode::kOff) {
    return reply_or_close(option, kRepErrUnsup, "TLS is not configured on this server");
  }
  if (!data.empty()) return reply_or_close(option, kRepErrInvalid, "NBD_OPT_STARTTLS takes no data");
  if (transport_->tls()) return reply_or_close(option, kRepErrInvalid, "TLS is already in use");
  if (!reply(option, kRepAck)) return Next::kClose;
  // The client must wait for the ACK before its ClientHello; anything
  // already buffered was sent in plain text after STARTTLS.
  if (reader_->buffered() != 0) {
    spdlog::warn("nbd[{}]: client sent data between STARTTLS and the TLS handshake; dropping", id_);
    return Next::kClose;
  }
  auto session = TlsSession::accept(transport_->fd(), tls_->current(), reader_->timeout_ms());
  if (!session.ok()) {
    // The context is the whole story ("TLS handshake failed: <GnuTLS's reason>").
    spdlog::warn("nbd[{}]: {}; dropping", id_, session.status().context());
    return Next::kClose;
  }
  spdlog::debug("nbd[{}]: TLS started: {}", id_, session.value()->description());
  transport_->start_tls(std::move(session.value()));
  // Nothing negotiated in plain text carries over into the TLS session.
  session_ = Session{};
  return Next::kContinue;
}

}  // namespace bowstack::nbd
