// TLS configuration and credentials of the NBD server (GnuTLS), with the
// options spelled as nbdkit's: --tls=off|on|require, --tls-certificates=DIR,
// --tls-psk=FILE, --tls-verify-peer. See docs/tls.md.
//
// Credentials are immutable once loaded and shared: every TLS session holds a
// shared_ptr to the credentials it was started with, so a reload (SIGHUP)
// swaps in new ones for new handshakes while sessions already running keep
// theirs until they end.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"

// GnuTLS types, so that users of this header need not include gnutls.h.
struct gnutls_session_int;
struct gnutls_certificate_credentials_st;
struct gnutls_psk_server_credentials_st;
struct gnutls_priority_st;

namespace bowstack::nbd {

enum class TlsMode {
  kOff,      // STARTTLS is answered NBD_REP_ERR_UNSUP
  kOn,       // plain and TLS clients are both served
  kRequire,  // before STARTTLS every option but ABORT gets NBD_REP_ERR_TLS_REQD
};

// "off", "on" or "require" (nbdkit also takes "no", "yes" and "force").
Result<TlsMode> parse_tls_mode(std::string_view text);
std::string_view tls_mode_name(TlsMode mode);

struct TlsOptions {
  TlsMode mode = TlsMode::kOff;
  // Holds ca-cert.pem, server-cert.pem, server-key.pem and optionally
  // ca-crl.pem (the layout of nbdkit and qemu).
  std::string certificates_dir;
  // psktool's format: one "username:hexkey" per line.
  std::string psk_file;
  // Clients must present a certificate signed by ca-cert.pem (X.509 only).
  bool verify_peer = false;
};

// Checks that the options are consistent (no file is read).
Status validate_tls_options(const TlsOptions& opts);

using PskKeys = std::map<std::string, std::vector<uint8_t>, std::less<>>;

// Parses psktool's file format. Empty lines and lines starting with '#' are
// skipped; anything else must be "username:hexkey" with a non-empty name
// and an even, non-empty number of hex digits. Errors name the line.
Result<PskKeys> parse_psk_file(std::string_view text);

// Thread-safety: immutable after load(); any number of sessions may use one
// TlsCredentials concurrently.
class TlsCredentials {
 public:
  // Reads the certificate files or the PSK file the options name.
  // REQUIRES: validate_tls_options(opts).ok() and mode != kOff.
  static Result<std::shared_ptr<const TlsCredentials>> load(const TlsOptions& opts);
  ~TlsCredentials();
  TlsCredentials(const TlsCredentials&) = delete;
  TlsCredentials& operator=(const TlsCredentials&) = delete;

  bool is_psk() const { return psk_ != nullptr; }
  // "PSK (2 users)" or "X.509 (client certificates required)": for logs.
  const std::string& summary() const { return summary_; }

  // Attaches the credentials, priorities and peer verification to a new
  // server session. The credentials must outlive the session.
  Status apply(gnutls_session_int* session) const;
  // The key of a PSK user, or null.
  const std::vector<uint8_t>* psk_key(std::string_view username) const;

 private:
  TlsCredentials() = default;

  gnutls_certificate_credentials_st* x509_ = nullptr;
  gnutls_psk_server_credentials_st* psk_ = nullptr;
  gnutls_priority_st* priority_ = nullptr;
  bool verify_peer_ = false;
  PskKeys keys_;
  std::string summary_;
};

// The server's TLS mode and current credentials.
// Thread-safety: every method may be called from any thread concurrently.
class TlsContext {
 public:
  // Loads the credentials once; fails if any file is missing or malformed.
  static Result<std::shared_ptr<TlsContext>> create(TlsOptions opts);

  TlsMode mode() const { return opts_.mode; }
  const TlsOptions& options() const { return opts_; }
  // The credentials new handshakes use; never null.
  std::shared_ptr<const TlsCredentials> current() const { return creds_.load(); }
  // Reads the files again. On success new handshakes use the new
  // credentials (sessions already running keep theirs); on error the old
  // credentials stay in use and the error is returned.
  Status reload();

 private:
  explicit TlsContext(TlsOptions opts) : opts_(std::move(opts)) {}

  const TlsOptions opts_;
  std::atomic<std::shared_ptr<const TlsCredentials>> creds_;
};

}  // namespace bowstack::nbd
