// Blocking socket I/O used by the handshake and by connection workers: the
// transport (plain socket or TLS session) and a buffered reader on top.
#pragma once

#include <sys/uio.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>

#include "core/status.h"

namespace bowstack::nbd {

class TlsSession;

// Sends every byte described by iov[0..count) with sendmsg(MSG_NOSIGNAL), so
// a vanished peer yields EPIPE rather than SIGPIPE. Resumes after partial
// sends and EINTR; modifies the iovec array while doing so.
// Thread-safety: callers serialise sends on one socket themselves.
Status send_all(int fd, iovec* iov, size_t count);
Status send_all(int fd, const void* data, size_t length);

// A connected socket, plain until start_tls() and encrypted after.
//
// The plain path is the socket system calls themselves; TLS costs one
// well-predicted branch when it is off.
// Thread-safety: one receiver and one sender may run concurrently, each
// serialised by the caller (a connection's read and write mutexes);
// start_tls() only while neither runs (during the handshake).
// Lifetime: does not own the fd; owns the TLS session.
class Transport {
 public:
  explicit Transport(int fd);
  ~Transport();
  Transport(const Transport&) = delete;
  Transport& operator=(const Transport&) = delete;

  int fd() const { return fd_; }
  bool tls() const { return tls_ != nullptr; }
  TlsSession* tls_session() const { return tls_.get(); }
  void start_tls(std::unique_ptr<TlsSession> session);

  // Receives up to len bytes; 0 means EOF. Waits at most timeout_ms for
  // data (< 0: forever), ETIMEDOUT otherwise. wait_all asks a plain socket
  // to fill dst in one call when there is no timeout.
  Result<size_t> recv_some(std::byte* dst, size_t len, bool wait_all, int timeout_ms);
  // As the free send_all(), through TLS once started.
  Status send_all(iovec* iov, size_t count);
  Status send_all(const void* data, size_t length);

 private:
  Result<size_t> recv_plain(std::byte* dst, size_t len, bool wait_all, int timeout_ms);

  const int fd_;
  std::unique_ptr<TlsSession> tls_;
};

// Reads a transport through a 64 KiB buffer, so that small requests cost one
// recv() for many of them; large reads bypass the buffer and land directly in
// the caller's memory.
//
// Thread-safety: none; a connection serialises readers with its read mutex.
// Does not own the transport, which must outlive it.
class BufferedReader {
 public:
  static constexpr size_t kBufferSize = 64 << 10;

  explicit BufferedReader(Transport* transport);

  // Each recv() waits at most `ms` milliseconds for data (ETIMEDOUT
  // otherwise); negative waits forever.
  void set_timeout_ms(int ms) { timeout_ms_ = ms; }
  int timeout_ms() const { return timeout_ms_; }
  // Bytes received but not yet read.
  size_t buffered() const { return end_ - begin_; }

  // Fills dst completely or fails: EPIPE if the peer closed the connection
  // before sending any byte of dst (then at_eof() is true), ECONNRESET if it
  // closed in the middle, ETIMEDOUT, or the recv() errno.
  Status read_exact(std::span<std::byte> dst);
  // Reads and discards n bytes, at most kBufferSize at a time.
  Status skip(uint64_t n);
  // True when the last failure was an orderly close at a message boundary.
  bool at_eof() const { return eof_; }

 private:
  Status fill();

  Transport* transport_;
  int timeout_ms_ = -1;
  bool eof_ = false;
  std::unique_ptr<std::byte[]> buf_;
  size_t begin_ = 0;  // unread bytes are buf_[begin_, end_)
  size_t end_ = 0;
};

}  // namespace bowstack::nbd
