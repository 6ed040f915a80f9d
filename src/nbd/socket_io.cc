#include "nbd/socket_io.h"

#include <poll.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "nbd/tls_session.h"

namespace bowstack::nbd {

Status send_all(int fd, iovec* iov, size_t count) {
  while (count > 0) {
    msghdr msg{};
    msg.msg_iov = iov;
    msg.msg_iovlen = count;
    ssize_t n = ::sendmsg(fd, &msg, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      return Status::Error(errno, "send");
    }
    auto sent = static_cast<size_t>(n);
    while (count > 0 && sent >= iov->iov_len) {
      sent -= iov->iov_len;
      ++iov;
      --count;
    }
    if (count > 0) {
      iov->iov_base = static_cast<char*>(iov->iov_base) + sent;
      iov->iov_len -= sent;
    }
  }
  return Status::Ok();
}

Status send_all(int fd, const void* data, size_t length) {
  iovec iov{const_cast<void*>(data), length};
  return send_all(fd, &iov, 1);
}

Transport::Transport(int fd) : fd_(fd) {}

Transport::~Transport() = default;

void Transport::start_tls(std::unique_ptr<TlsSession> session) { tls_ = std::move(session); }

Result<size_t> Transport::recv_some(std::byte* dst, size_t len, bool wait_all, int timeout_ms) {
  if (tls_ != nullptr) [[unlikely]] {
    return tls_->recv(dst, len, timeout_ms);
  }
  return recv_plain(dst, len, wait_all, timeout_ms);
}

Status Transport::send_all(iovec* iov, size_t count) {
  if (tls_ != nullptr) [[unlikely]] {
    return tls_->send(iov, count);
  }
  return nbd::send_all(fd_, iov, count);
}

Status Transport::send_all(const void* data, size_t length) {
  iovec iov{const_cast<void*>(data), length};
  return send_all(&iov, 1);
}

Result<size_t> Transport::recv_plain(std::byte* dst, size_t len, bool wait_all, int timeout_ms) {
  for (;;) {
    if (timeout_ms >= 0) {
      pollfd p{fd_, POLLIN, 0};
      int r = ::poll(&p, 1, timeout_ms);
      if (r < 0 && errno == EINTR) continue;
      if (r < 0) return Status::Error(errno, "poll");
      if (r == 0) return Status::Error(ETIMEDOUT, "no data from peer");
      // With a timeout, never block in recv beyond what poll promised.
      wait_all = false;
    }
    ssize_t n = ::recv(fd_, dst, len, wait_all ? MSG_WAITALL : 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      return Status::Error(errno, "recv");
    }
    return static_cast<size_t>(n);
  }
}

BufferedReader::BufferedReader(Transport* transport)
    : transport_(transport), buf_(new std::byte[kBufferSize]) {}

Status BufferedReader::fill() {
  begin_ = end_ = 0;
  auto n = transport_->recv_some(buf_.get(), kBufferSize, false, timeout_ms_);
  if (!n.ok()) return n.status();
  end_ = n.value();
  return Status::Ok();
}

Status BufferedReader::read_exact(std::span<std::byte> dst) {
  eof_ = false;
  size_t got = 0;
  while (got < dst.size()) {
    if (begin_ < end_) {
      size_t n = std::min(end_ - begin_, dst.size() - got);
      std::memcpy(dst.data() + got, buf_.get() + begin_, n);
      begin_ += n;
      got += n;
      continue;
    }
    size_t need = dst.size() - got;
    size_t n = 0;
    if (need >= kBufferSize / 2) {
      auto r = transport_->recv_some(dst.data() + got, need, true, timeout_ms_);
      if (!r.ok()) return r.status();
      n = r.value();
      got += n;
    } else {
      if (Status s = fill(); !s.ok()) return s;
      n = end_;
    }
    if (n == 0) {
      if (got == 0) {
        eof_ = true;
        return Status::Error(EPIPE, "connection closed by peer");
      }
      return Status::Error(ECONNRESET, "connection closed in the middle of a message");
    }
  }
  return Status::Ok();
}

Status BufferedReader::skip(uint64_t n) {
  eof_ = false;
  while (n > 0) {
    if (begin_ == end_) {
      if (Status s = fill(); !s.ok()) return s;
      if (end_ == 0) return Status::Error(ECONNRESET, "connection closed in the middle of a message");
    }
    size_t k = static_cast<size_t>(std::min<uint64_t>(n, end_ - begin_));
    begin_ += k;
    n -= k;
  }
  return Status::Ok();
}

}  // namespace bowstack::nbd
