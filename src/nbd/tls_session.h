// One server-side TLS session on a connected socket (GnuTLS), started by
// NBD_OPT_STARTTLS.
//
// Thread-safety: after accept() returns, one thread may receive while
// another sends (GnuTLS allows exactly that split); receivers are
// serialised among themselves by the caller, and so are senders.
// Renegotiation is refused, so no operation ever needs both directions.
// Lifetime: does not own the fd, which must outlive the session. Holds the
// credentials it was started with until it is destroyed.
#pragma once

#include <sys/uio.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "core/status.h"
#include "nbd/tls_credentials.h"

namespace bowstack::nbd {

class TlsSession {
 public:
  // Runs the server handshake on fd (which the client has just been told
  // NBD_REP_ACK to STARTTLS on), giving up after timeout_ms (<= 0: never).
  // Fails (EACCES for authentication failures) without sending anything
  // but TLS alerts; the caller then closes the connection.
  static Result<std::unique_ptr<TlsSession>> accept(int fd, std::shared_ptr<const TlsCredentials> creds,
                                                    int timeout_ms);
  ~TlsSession();
  TlsSession(const TlsSession&) = delete;
  TlsSession& operator=(const TlsSession&) = delete;

  // Receives up to len bytes of plaintext (at most one TLS record); 0 is an
  // orderly close (close_notify, or the peer closed the socket between
  // records). Waits at most timeout_ms for each record (< 0: forever);
  // ETIMEDOUT then.
  Result<size_t> recv(std::byte* dst, size_t len, int timeout_ms);
  // Sends every byte of iov[0..count) as few records as possible.
  // ETIMEDOUT if the socket's send timeout (SO_SNDTIMEO) expires.
  Status send(const iovec* iov, size_t count);
  // Best effort close_notify; call once no other thread uses the session.
  void bye();

  // "TLS1.3 PSK user alice" and the like, for logs.
  std::string description() const;

 private:
  // Ciphertext read ahead of GnuTLS: it asks for a record's 5-byte header
  // and then its body, two recv() calls per record on the bare socket;
  // reading up to this much at once lets pipelined requests share one.
  static constexpr size_t kReadAhead = 64 << 10;

  explicit TlsSession(int fd);
  // GnuTLS's transport callbacks; ptr is the TlsSession. pull and
  // pull_timeout run on the receiving thread only, push on the sending one.
  static ssize_t pull(void* ptr, void* data, size_t len);
  static int pull_timeout(void* ptr, unsigned ms);
  static ssize_t push(void* ptr, const iovec* iov, int count);

  const int fd_;
  gnutls_session_int* session_ = nullptr;
  std::shared_ptr<const TlsCredentials> creds_;
  int timeout_ms_ = -1;                 // the receive timeout last given to GnuTLS
  std::unique_ptr<std::byte[]> ahead_;  // unread ciphertext is ahead_[begin_, end_)
  size_t begin_ = 0;
  size_t end_ = 0;
};

}  // namespace bowstack::nbd
