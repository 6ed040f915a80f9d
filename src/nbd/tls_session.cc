#include "nbd/tls_session.h"

#include <fmt/format.h>
#include <gnutls/gnutls.h>
#include <poll.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace bowstack::nbd {

namespace {

// Replies at most this large are gathered into one TLS record (one
// encryption, one send); larger ones go out as they are, since they span
// several records anyway and gathering would only copy them.
constexpr size_t kCorkLimit = 64 << 10;

unsigned handshake_timeout(int ms) { return ms > 0 ? static_cast<unsigned>(ms) : GNUTLS_INDEFINITE_TIMEOUT; }

Status send_error(ssize_t rc) {
  // With a blocking socket, EAGAIN only comes from SO_SNDTIMEO expiring.
  if (rc == GNUTLS_E_AGAIN) return Status::Error(ETIMEDOUT, "TLS send timed out");
  return Status::Error(EPIPE, fmt::format("TLS send: {}", gnutls_strerror(static_cast<int>(rc))));
}

}  // namespace

TlsSession::TlsSession(int fd) : fd_(fd), ahead_(new std::byte[kReadAhead]) {}

ssize_t TlsSession::pull(void* ptr, void* data, size_t len) {
  auto* t = static_cast<TlsSession*>(ptr);
  if (t->begin_ == t->end_) {
    ssize_t n;
    do {
      n = ::recv(t->fd_, t->ahead_.get(), kReadAhead, 0);
    } while (n < 0 && errno == EINTR);
    if (n <= 0) return n;  // GnuTLS reads errno
    t->begin_ = 0;
    t->end_ = static_cast<size_t>(n);
  }
  size_t k = std::min(len, t->end_ - t->begin_);
  std::memcpy(data, t->ahead_.get() + t->begin_, k);
  t->begin_ += k;
  return static_cast<ssize_t>(k);
}

int TlsSession::pull_timeout(void* ptr, unsigned ms) {
  auto* t = static_cast<TlsSession*>(ptr);
  if (t->begin_ != t->end_) return 1;
  pollfd p{t->fd_, POLLIN, 0};
  int timeout = ms == GNUTLS_INDEFINITE_TIMEOUT ? -1 : static_cast<int>(std::min<unsigned>(ms, INT32_MAX));
  int r;
  do {
    r = ::poll(&p, 1, timeout);
  } while (r < 0 && errno == EINTR);
  return r;
}

ssize_t TlsSession::push(void* ptr, const iovec* iov, int count) {
  auto* t = static_cast<TlsSession*>(ptr);
  msghdr msg{};
  msg.msg_iov = const_cast<iovec*>(iov);
  msg.msg_iovlen = static_cast<size_t>(count);
  return ::sendmsg(t->fd_, &msg, MSG_NOSIGNAL);
}

Result<std::unique_ptr<TlsSession>> TlsSession::accept(int fd, std::shared_ptr<const TlsCredentials> creds,
                                                       int timeout_ms) {
  std::unique_ptr<TlsSession> t(new TlsSession(fd));
  t->creds_ = std::move(creds);
  // No session tickets: NBD clients do not resume sessions, and TLS 1.3
  // tickets would only cost a message per connection.
  if (int rc = gnutls_init(&t->session_, GNUTLS_SERVER | GNUTLS_NO_SIGNAL | GNUTLS_NO_TICKETS); rc < 0) {
    t->session_ = nullptr;
    return Status::Error(ENOMEM, fmt::format("TLS session: {}", gnutls_strerror(rc)));
  }
  if (Status s = t->creds_->apply(t->session_); !s.ok()) return s;
  gnutls_transport_set_ptr(t->session_, t.get());
  gnutls_transport_set_pull_function(t->session_, &TlsSession::pull);
  gnutls_transport_set_pull_timeout_function(t->session_, &TlsSession::pull_timeout);
  gnutls_transport_set_vec_push_function(t->session_, &TlsSession::push);
  gnutls_handshake_set_timeout(t->session_, handshake_timeout(timeout_ms));
  int rc;
  do {
    rc = gnutls_handshake(t->session_);
  } while (rc < 0 && gnutls_error_is_fatal(rc) == 0);
  if (rc < 0) {
    if (rc == GNUTLS_E_TIMEDOUT) return Status::Error(ETIMEDOUT, "TLS handshake timed out");
    return Status::Error(EACCES, fmt::format("TLS handshake failed: {}", gnutls_strerror(rc)));
  }
  return t;
}

TlsSession::~TlsSession() {
  if (session_ != nullptr) gnutls_deinit(session_);
}

Result<size_t> TlsSession::recv(std::byte* dst, size_t len, int timeout_ms) {
  if (timeout_ms != timeout_ms_) {
    // 0, not GNUTLS_INDEFINITE_TIMEOUT, for none: with the latter GnuTLS
    // still calls pull_timeout (poll) before every receive; with 0 it just
    // calls pull.
    gnutls_record_set_timeout(session_, timeout_ms > 0 ? static_cast<unsigned>(timeout_ms) : 0);
    timeout_ms_ = timeout_ms;
  }
  for (;;) {
    ssize_t n = gnutls_record_recv(session_, dst, len);
    if (n >= 0) return static_cast<size_t>(n);
    switch (n) {
      case GNUTLS_E_INTERRUPTED:
      case GNUTLS_E_AGAIN:
        continue;
      case GNUTLS_E_PREMATURE_TERMINATION:
        // Most clients close the socket without close_notify; NBD framing,
        // not TLS, tells whether that happened mid-message.
        return size_t{0};
      case GNUTLS_E_TIMEDOUT:
        return Status::Error(ETIMEDOUT, "no data from peer");
      default:
        // Includes GNUTLS_E_REHANDSHAKE: renegotiation would need both
        // directions at once, which the threading model does not allow.
        return Status::Error(ECONNRESET,
                             fmt::format("TLS receive: {}", gnutls_strerror(static_cast<int>(n))));
    }
  }
}

Status TlsSession::send(const iovec* iov, size_t count) {
  size_t total = 0;
  for (size_t i = 0; i < count; ++i) total += iov[i].iov_len;
  const bool cork = count > 1 && total <= kCorkLimit;
  if (cork) gnutls_record_cork(session_);
  for (size_t i = 0; i < count; ++i) {
    const char* p = static_cast<const char*>(iov[i].iov_base);
    size_t left = iov[i].iov_len;
    while (left > 0) {
      ssize_t n = gnutls_record_send(session_, p, left);
      if (n == GNUTLS_E_INTERRUPTED) continue;
      if (n < 0) return send_error(n);
      p += n;
      left -= static_cast<size_t>(n);
    }
  }
  if (cork) {
    for (;;) {
      int rc = gnutls_record_uncork(session_, GNUTLS_RECORD_WAIT);
      if (rc >= 0) break;
      if (rc == GNUTLS_E_INTERRUPTED) continue;
      return send_error(rc);
    }
  }
  return Status::Ok();
}

void TlsSession::bye() { (void)gnutls_bye(session_, GNUTLS_SHUT_WR); }

std::string TlsSession::description() const {
  std::string out;
  if (char* desc = gnutls_session_get_desc(session_); desc != nullptr) {
    out = desc;
    gnutls_free(desc);
  }
  if (creds_->is_psk()) {
    // The name is the client's: keep the log line printable.
    if (const char* user = gnutls_psk_server_get_username(session_); user != nullptr) {
      std::string name;
      for (const char* p = user; *p != '\0' && name.size() < 64; ++p) {
        name += (*p >= 0x20 && *p < 0x7f) ? *p : '?';
      }
      out += fmt::format(" PSK user '{}'", name);
    }
  }
  return out;
}

}  // namespace bowstack::nbd
