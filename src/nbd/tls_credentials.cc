#include "nbd/tls_credentials.h"

#include <fmt/format.h>
#include <gnutls/gnutls.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

namespace bowstack::nbd {

namespace {

// GnuTLS's defaults (TLS 1.2 and 1.3, no weak ciphers), as nbdkit uses; PSK
// key exchanges are not in NORMAL and must be added.
constexpr const char* kPriorityX509 = "NORMAL";
constexpr const char* kPriorityPsk = "NORMAL:+ECDHE-PSK:+DHE-PSK:+PSK";

Status gnutls_error(int rc, std::string_view what) {
  return Status::Error(EINVAL, fmt::format("{}: {}", what, gnutls_strerror(rc)));
}

bool readable(const std::string& path) { return ::access(path.c_str(), R_OK) == 0; }

Result<std::string> read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return Status::Error(errno ? errno : EIO, fmt::format("cannot read {}", path));
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) return Status::Error(EIO, fmt::format("cannot read {}", path));
  return ss.str();
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// GnuTLS calls this during a PSK handshake, from the connection's thread.
// The session's pointer is the TlsCredentials the session was started with.
int psk_lookup(gnutls_session_t session, const char* username, gnutls_datum_t* key) {
  const auto* creds = static_cast<const TlsCredentials*>(gnutls_session_get_ptr(session));
  const std::vector<uint8_t>* k = creds ? creds->psk_key(username) : nullptr;
  if (k == nullptr) return -1;  // unknown user: the handshake fails
  // GnuTLS frees the key with gnutls_free.
  key->data = static_cast<unsigned char*>(gnutls_malloc(k->size()));
  if (key->data == nullptr) return -1;
  std::memcpy(key->data, k->data(), k->size());
  key->size = static_cast<unsigned>(k->size());
  return 0;
}

}  // namespace

Result<TlsMode> parse_tls_mode(std::string_view text) {
  if (text == "off" || text == "no") return TlsMode::kOff;
  if (text == "on" || text == "yes") return TlsMode::kOn;
  if (text == "require" || text == "force") return TlsMode::kRequire;
  return Status::Error(EINVAL, fmt::format("--tls '{}': expected off, on or require", text));
}

std::string_view tls_mode_name(TlsMode mode) {
  switch (mode) {
    case TlsMode::kOff:
      return "off";
    case TlsMode::kOn:
      return "on";
    case TlsMode::kRequire:
      return "require";
  }
  return "?";
}

Status validate_tls_options(const TlsOptions& opts) {
  bool certs = !opts.certificates_dir.empty(), psk = !opts.psk_file.empty();
  if (opts.mode == TlsMode::kOff) {
    if (certs || psk || opts.verify_peer) {
      return Status::Error(
          EINVAL, "--tls-certificates, --tls-psk and --tls-verify-peer need --tls=on or --tls=require");
    }
    return Status::Ok();
  }
  if (!certs && !psk) {
    return Status::Error(EINVAL, fmt::format("--tls={} needs --tls-certificates=DIR or --tls-psk=FILE",
                                             tls_mode_name(opts.mode)));
  }
  if (certs && psk) return Status::Error(EINVAL, "give --tls-certificates or --tls-psk, not both");
  if (opts.verify_peer && !certs) {
    return Status::Error(EINVAL, "--tls-verify-peer checks client certificates: it needs --tls-certificates");
  }
  return Status::Ok();
}

Result<PskKeys> parse_psk_file(std::string_view text) {
  PskKeys keys;
  unsigned lineno = 0;
  while (!text.empty()) {
    ++lineno;
    size_t nl = text.find('\n');
    std::string_view line = text.substr(0, nl);
    text = nl == std::string_view::npos ? std::string_view{} : text.substr(nl + 1);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.empty() || line.front() == '#') continue;
    size_t colon = line.find(':');
    if (colon == std::string_view::npos || colon == 0) {
      return Status::Error(EINVAL, fmt::format("line {}: expected username:hexkey", lineno));
    }
    std::string_view hex = line.substr(colon + 1);
    if (hex.empty() || hex.size() % 2 != 0) {
      return Status::Error(EINVAL,
                           fmt::format("line {}: the key must be an even number of hex digits", lineno));
    }
    std::vector<uint8_t> key(hex.size() / 2);
    for (size_t i = 0; i < key.size(); ++i) {
      int hi = hex_value(hex[2 * i]), lo = hex_value(hex[2 * i + 1]);
      if (hi < 0 || lo < 0) return Status::Error(EINVAL, fmt::format("line {}: the key is not hex", lineno));
      key[i] = static_cast<uint8_t>(hi << 4 | lo);
    }
    std::string user(line.substr(0, colon));
    if (keys.count(user) != 0) {
      return Status::Error(EINVAL, fmt::format("line {}: user '{}' appears twice", lineno, user));
    }
    keys.emplace(std::move(user), std::move(key));
  }
  if (keys.empty()) return Status::Error(EINVAL, "no username:hexkey line");
  return keys;
}

Result<std::shared_ptr<const TlsCredentials>> TlsCredentials::load(const TlsOptions& opts) {
  std::shared_ptr<TlsCredentials> c(new TlsCredentials());
  c->verify_peer_ = opts.verify_peer;
  if (!opts.psk_file.empty()) {
    auto text = read_text(opts.psk_file);
    if (!text.ok()) return text.status();
    auto keys = parse_psk_file(*text);
    if (!keys.ok())
      return Status::Error(EINVAL, fmt::format("{}: {}", opts.psk_file, keys.status().context()));
    c->keys_ = std::move(keys.value());
    if (int rc = gnutls_psk_allocate_server_credentials(&c->psk_); rc < 0) {
      c->psk_ = nullptr;
      return gnutls_error(rc, "allocating PSK credentials");
    }
    gnutls_psk_set_server_credentials_function(c->psk_, psk_lookup);
    if (int rc = gnutls_priority_init(&c->priority_, kPriorityPsk, nullptr); rc < 0) {
      c->priority_ = nullptr;
      return gnutls_error(rc, "TLS priority");
    }
    c->summary_ = fmt::format("PSK from {} ({} user{})", opts.psk_file, c->keys_.size(),
                              c->keys_.size() == 1 ? "" : "s");
    return std::shared_ptr<const TlsCredentials>(std::move(c));
  }

  const std::string& dir = opts.certificates_dir;
  const std::string ca = dir + "/ca-cert.pem", crl = dir + "/ca-crl.pem", cert = dir + "/server-cert.pem",
                    key = dir + "/server-key.pem";
  for (const std::string* f : {&ca, &cert, &key}) {
    if (!readable(*f)) {
      int err = errno;
      return Status::Error(err, fmt::format("cannot read {}", *f));
    }
  }
  if (int rc = gnutls_certificate_allocate_credentials(&c->x509_); rc < 0) {
    c->x509_ = nullptr;
    return gnutls_error(rc, "allocating certificate credentials");
  }
  // The set_*_file functions return how many certificates they loaded.
  if (int rc = gnutls_certificate_set_x509_trust_file(c->x509_, ca.c_str(), GNUTLS_X509_FMT_PEM); rc < 0) {
    return gnutls_error(rc, fmt::format("loading {}", ca));
  }
  if (readable(crl)) {
    if (int rc = gnutls_certificate_set_x509_crl_file(c->x509_, crl.c_str(), GNUTLS_X509_FMT_PEM); rc < 0) {
      return gnutls_error(rc, fmt::format("loading {}", crl));
    }
  }
  if (int rc = gnutls_certificate_set_x509_key_file(c->x509_, cert.c_str(), key.c_str(), GNUTLS_X509_FMT_PEM);
      rc < 0) {
    return gnutls_error(rc, fmt::format("loading {} and {}", cert, key));
  }
  // For DHE key exchanges with TLS 1.2 clients.
  gnutls_certificate_set_known_dh_params(c->x509_, GNUTLS_SEC_PARAM_MEDIUM);
  if (int rc = gnutls_priority_init(&c->priority_, kPriorityX509, nullptr); rc < 0) {
    c->priority_ = nullptr;
    return gnutls_error(rc, "TLS priority");
  }
  c->summary_ = fmt::format("X.509 from {}{}{}", dir, readable(crl) ? " with CRL" : "",
                            opts.verify_peer ? " (client certificates required)" : "");
  return std::shared_ptr<const TlsCredentials>(std::move(c));
}

TlsCredentials::~TlsCredentials() {
  if (x509_ != nullptr) gnutls_certificate_free_credentials(x509_);
  if (psk_ != nullptr) gnutls_psk_free_server_credentials(psk_);
  if (priority_ != nullptr) gnutls_priority_deinit(priority_);
}

const std::vector<uint8_t>* TlsCredentials::psk_key(std::string_view username) const {
  auto it = keys_.find(username);
  return it == keys_.end() ? nullptr : &it->second;
}

Status TlsCredentials::apply(gnutls_session_t session) const {
  gnutls_session_set_ptr(session, const_cast<TlsCredentials*>(this));
  if (int rc = gnutls_priority_set(session, priority_); rc < 0) return gnutls_error(rc, "TLS priority");
  if (psk_ != nullptr) {
    if (int rc = gnutls_credentials_set(session, GNUTLS_CRD_PSK, psk_); rc < 0) {
      return gnutls_error(rc, "TLS credentials");
    }
    return Status::Ok();
  }
  if (int rc = gnutls_credentials_set(session, GNUTLS_CRD_CERTIFICATE, x509_); rc < 0) {
    return gnutls_error(rc, "TLS credentials");
  }
  if (verify_peer_) {
    // The handshake itself then fails unless the client presents a
    // certificate that verifies against ca-cert.pem (and the CRL).
    gnutls_certificate_server_set_request(session, GNUTLS_CERT_REQUIRE);
    gnutls_session_set_verify_cert(session, nullptr, 0);
  }
  return Status::Ok();
}

Result<std::shared_ptr<TlsContext>> TlsContext::create(TlsOptions opts) {
  if (Status s = validate_tls_options(opts); !s.ok()) return s;
  std::shared_ptr<TlsContext> ctx(new TlsContext(std::move(opts)));
  if (ctx->opts_.mode == TlsMode::kOff) return ctx;
  auto creds = TlsCredentials::load(ctx->opts_);
  if (!creds.ok()) return creds.status();
  ctx->creds_.store(std::move(creds.value()));
  return ctx;
}

Status TlsContext::reload() {
  if (opts_.mode == TlsMode::kOff) return Status::Ok();
  auto creds = TlsCredentials::load(opts_);
  if (!creds.ok()) return creds.status();
  creds_.store(std::move(creds.value()));
  return Status::Ok();
}

}  // namespace bowstack::nbd
