// The fixed-newstyle handshake (option haggling) for one connection.
//
// Supported options: EXPORT_NAME, ABORT, LIST, INFO, GO, STRUCTURED_REPLY,
// LIST_META_CONTEXT and SET_META_CONTEXT (base:allocation only), and
// STARTTLS when TLS is on. EXTENDED_HEADERS and unknown options get
// NBD_REP_ERR_UNSUP and haggling continues.
//
// TLS (docs/tls.md): STARTTLS is answered NBD_REP_ACK, the TLS handshake
// follows on the same socket, and haggling goes on encrypted, with what was
// negotiated before forgotten (structured replies, meta contexts), as the
// spec asks. TLS off: STARTTLS gets NBD_REP_ERR_UNSUP. TLS required: until
// STARTTLS, every option but ABORT gets NBD_REP_ERR_TLS_REQD (EXPORT_NAME,
// which has no error reply, closes the connection), so a plain client
// learns nothing about the export; a failed TLS handshake closes it.
//
// Bounds: an option payload above kMaxOptionLength is discarded in chunks
// and answered with NBD_REP_ERR_TOO_BIG; after kMaxOptions options the
// connection is dropped. Per-read timeouts are the caller's (BufferedReader).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>
#include <vector>

#include "nbd/export_info.h"
#include "nbd/session.h"
#include "nbd/socket_io.h"
#include "nbd/tls_credentials.h"

namespace bowstack::nbd {

inline constexpr size_t kMaxOptionLength = 64 << 10;
inline constexpr unsigned kMaxOptions = 64;

// Thread-safety: used by one thread, before any transmission-phase worker
// exists. Does not own the transport, the reader or the TLS context (null:
// TLS off). STARTTLS upgrades the transport the reader reads from; the TLS
// handshake waits at most the reader's timeout.
class Handshake {
 public:
  Handshake(Transport* transport, BufferedReader* reader, const ExportInfo& exp, uint64_t conn_id,
            const TlsContext* tls = nullptr);

  // Returns true when the client entered the transmission phase; *session
  // then holds what was negotiated. False: close the connection (the client
  // aborted, disconnected, timed out or broke the protocol).
  bool run(Session* session);

 private:
  enum class Next { kContinue, kTransmission, kClose };

  Next handle_option(uint32_t option, const std::vector<std::byte>& data);
  Next export_name(const std::vector<std::byte>& data);
  Next info_or_go(uint32_t option, const std::vector<std::byte>& data);
  Next meta_context(uint32_t option, const std::vector<std::byte>& data);
  Next start_tls(const std::vector<std::byte>& data);
  // True while TLS is required and not yet started: the option must be
  // refused.
  bool tls_missing(uint32_t option) const;
  // Sends one option reply; false if the socket failed.
  bool reply(uint32_t option, uint32_t type, std::string_view data = {});
  bool reply(uint32_t option, uint32_t type, const std::vector<std::byte>& data);
  Next reply_or_close(uint32_t option, uint32_t type, std::string_view data = {}) {
    return reply(option, type, data) ? Next::kContinue : Next::kClose;
  }

  Transport* transport_;
  BufferedReader* reader_;
  const ExportInfo& exp_;
  uint64_t id_;
  const TlsContext* tls_;
  bool no_zeroes_ = false;
  Session session_;
};

}  // namespace bowstack::nbd
