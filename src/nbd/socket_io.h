// Blocking socket I/O used by the handshake and by connection workers.
#pragma once

#include <sys/uio.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>

#include "core/status.h"

namespace bowstack::nbd {

// Sends every byte described by iov[0..count) with sendmsg(MSG_NOSIGNAL), so
// a vanished peer yields EPIPE rather than SIGPIPE. Resumes after partial
// sends and EINTR; modifies the iovec array while doing so.
// Thread-safety: callers serialise sends on one socket themselves.
Status send_all(int fd, iovec* iov, size_t count);
Status send_all(int fd, const void* data, size_t length);

// Reads a socket through a 64 KiB buffer, so that small requests cost one
// recv() for many of them; large reads bypass the buffer and land directly in
// the caller's memory.
//
// Thread-safety: none; a connection serialises readers with its read mutex.
// Does not own the fd.
class BufferedReader {
 public:
  static constexpr size_t kBufferSize = 64 << 10;

  explicit BufferedReader(int fd);

  // Each recv() waits at most `ms` milliseconds for data (ETIMEDOUT
  // otherwise); negative waits forever.
  void set_timeout_ms(int ms) { timeout_ms_ = ms; }

  // Fills dst completely or fails: EPIPE if the peer closed the connection
  // before sending any byte of dst (then at_eof() is true), ECONNRESET if it
  // closed in the middle, ETIMEDOUT, or the recv() errno.
  Status read_exact(std::span<std::byte> dst);
  // Reads and discards n bytes, at most kBufferSize at a time.
  Status skip(uint64_t n);
  // True when the last failure was an orderly close at a message boundary.
  bool at_eof() const { return eof_; }

 private:
  // Receives up to len bytes into dst; 0 means EOF.
  Result<size_t> recv_some(std::byte* dst, size_t len, bool wait_all);
  Status fill();

  int fd_;
  int timeout_ms_ = -1;
  bool eof_ = false;
  std::unique_ptr<std::byte[]> buf_;
  size_t begin_ = 0;  // unread bytes are buf_[begin_, end_)
  size_t end_ = 0;
};

}  // namespace bowstack::nbd
