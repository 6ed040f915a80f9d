#include "nbd/connection.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <system_error>

#include "core/thread_name.h"
#include "nbd/error_map.h"
#include "nbd/handshake.h"
#include "nbd/protocol.h"
#include "nbd/tls_session.h"

namespace bowstack::nbd {

namespace {

// A worker keeps its payload buffer between requests up to this size.
constexpr size_t kRetainedBuffer = 4 << 20;
// Descriptors in one block-status reply (512 KiB of payload at most).
constexpr size_t kMaxDescriptors = 1 << 16;
// Longest error message in a structured error chunk.
constexpr size_t kMaxMessage = 1024;

void set_send_timeout(int fd, int ms) {
  timeval tv{};
  if (ms > 0) {
    tv.tv_sec = ms / 1000;
    tv.tv_usec = (ms % 1000) * 1000;
  }
  (void)::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

}  // namespace

Connection::Connection(int fd, uint64_t id, Volume& volume, const ExportInfo& exp, Limits limits,
                       const TlsContext* tls)
    : fd_(fd),
      id_(id),
      volume_(volume),
      exp_(exp),
      limits_(limits),
      tls_(tls),
      transport_(fd),
      reader_(&transport_) {
  // Spawning must not fail half-way on a reallocation.
  workers_.reserve(std::max(1u, limits_.max_threads));
}

Connection::~Connection() {
  std::lock_guard lock(fd_mu_);
  if (!closed_) ::close(fd_);
}

void Connection::shutdown_read() {
  closing_ = true;
  std::lock_guard lock(fd_mu_);
  if (!closed_) ::shutdown(fd_, SHUT_RD);
}

void Connection::abort() {
  closing_ = true;
  std::lock_guard lock(fd_mu_);
  if (!closed_) ::shutdown(fd_, SHUT_RDWR);
}

void Connection::run() {
  // Best effort: fails harmlessly on Unix sockets.
  int one = 1;
  (void)::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);

  // A client that stalls during the handshake is dropped; in transmission
  // an idle client may stay as long as it likes.
  int timeout = limits_.handshake_timeout_ms > 0 ? limits_.handshake_timeout_ms : -1;
  reader_.set_timeout_ms(timeout);
  set_send_timeout(fd_, timeout);
  bool transmission = Handshake(&transport_, &reader_, exp_, id_, tls_).run(&session_);
  if (transmission) {
    reader_.set_timeout_ms(-1);
    set_send_timeout(fd_, 0);
    spdlog::debug("nbd[{}]: transmission phase (structured replies {}, base:allocation {}, TLS {})", id_,
                  session_.structured_replies, session_.base_allocation, transport_.tls());
    worker_loop(false);
    join_workers();
  }
  if (transport_.tls() && !broken_) {
    // close_notify, bounded: a client that has stopped reading must not
    // hold the thread.
    set_send_timeout(fd_, 1000);
    transport_.tls_session()->bye();
  }
  std::lock_guard lock(fd_mu_);
  ::close(fd_);
  closed_ = true;
  spdlog::debug("nbd[{}]: closed", id_);
}

void Connection::worker_loop(bool pre_counted) {
  AlignedBuffer buf;
  bool counted = pre_counted;
  for (;;) {
    Request req;
    Verdict verdict;
    if (!counted) waiting_readers_.fetch_add(1);
    counted = false;
    {
      std::lock_guard lock(read_mu_);
      waiting_readers_.fetch_sub(1);
      if (closing_) return;
      if (!read_request(&req, &verdict, &buf)) {
        closing_ = true;
        return;
      }
    }
    maybe_spawn_worker();
    execute(req, verdict, &buf);
    buf.trim_to(kRetainedBuffer);
  }
}

void Connection::maybe_spawn_worker() {
  if (waiting_readers_.load() != 0) return;
  std::lock_guard lock(workers_mu_);
  if (closing_ || nworkers_ >= limits_.max_threads) return;
  // Counted as waiting from now, so that other workers do not spawn more
  // while this one is starting.
  waiting_readers_.fetch_add(1);
  try {
    workers_.emplace_back([this] {
      set_thread_name("nbd-worker");
      worker_loop(true);
    });
    ++nworkers_;
  } catch (const std::system_error& e) {
    waiting_readers_.fetch_sub(1);
    spdlog::warn("nbd[{}]: cannot start another worker: {}", id_, e.what());
  }
}

void Connection::join_workers() {
  // Workers may still spawn others until they observe closing_, which every
  // one of them sets or sees before exiting; spawning checks closing_ under
  // workers_mu_, so once this loop finds the list empty it stays empty.
  for (;;) {
    std::thread t;
    {
      std::lock_guard lock(workers_mu_);
      if (workers_.empty()) return;
      t = std::move(workers_.back());
      workers_.pop_back();
    }
    t.join();
  }
}

bool Connection::read_request(Request* req, Verdict* verdict, AlignedBuffer* buf) {
  std::array<std::byte, kRequestSize> hdr;
  if (Status s = reader_.read_exact(hdr); !s.ok()) {
    if (reader_.at_eof()) {
      spdlog::debug("nbd[{}]: client closed the connection", id_);
    } else {
      spdlog::debug("nbd[{}]: reading request failed: {}", id_, s.message());
    }
    return false;
  }
  if (!parse_request(hdr.data(), req)) {
    spdlog::warn("nbd[{}]: bad request magic; dropping the connection", id_);
    return false;
  }
  if (req->type == kCmdDisc) {
    spdlog::debug("nbd[{}]: client sent NBD_CMD_DISC", id_);
    return false;
  }
  *verdict = validate_request(*req, exp_, session_);
  if (req->type != kCmdWrite) return true;

  // The payload is on the wire whatever the verdict; keep the stream framed.
  if (verdict->error == 0 && !buf->resize(req->length)) *verdict = {kEnomem, "out of memory"};
  // Reading the payload takes a while: long enough for the layers to load
  // the metadata this write will need, if they are told now.
  if (verdict->error == 0) volume_.will_write(req->offset, req->length);
  Status s = verdict->error == 0 ? reader_.read_exact(buf->span()) : reader_.skip(req->length);
  if (!s.ok()) {
    spdlog::debug("nbd[{}]: reading write payload failed: {}", id_, s.message());
    return false;
  }
  return true;
}

Status Connection::finish_fua(const Request& req, Status s) {
  if (s.ok() && (req.flags & kCmdFlagFua) && !exp_.caps.fua && exp_.caps.flush) return volume_.flush();
  return s;
}

void Connection::execute(const Request& req, const Verdict& verdict, AlignedBuffer* buf) {
  if (verdict.error != 0) {
    spdlog::debug("nbd[{}]: {} {}+{} rejected: {}", id_, command_name(req.type), req.offset, req.length,
                  verdict.reason);
    reply_error(req, verdict.error, verdict.reason);
    return;
  }
  Status s;
  switch (req.type) {
    case kCmdRead:
      if (!buf->resize(req.length)) {
        reply_error(req, kEnomem, "out of memory");
        return;
      }
      s = volume_.read(req.offset, buf->span());
      if (s.ok()) {
        reply_read(req, buf->span());
        return;
      }
      break;
    case kCmdWrite:
      s = finish_fua(req, volume_.write(req.offset, buf->span(), io_flags(req)));
      break;
    case kCmdFlush:
      s = volume_.flush();
      break;
    case kCmdTrim:
      s = finish_fua(req, volume_.trim(req.offset, req.length, io_flags(req)));
      break;
    case kCmdWriteZeroes:
      s = finish_fua(req, volume_.write_zeroes(req.offset, req.length, io_flags(req)));
      break;
    case kCmdCache:
      s = volume_.cache(req.offset, req.length);
      break;
    case kCmdBlockStatus:
      block_status(req);
      return;
    default:  // validate_request() lets no other command through
      s = Status::Error(EINVAL, "unknown command");
      break;
  }
  if (!s.ok()) {
    spdlog::debug("nbd[{}]: {} {}+{} failed: {}", id_, command_name(req.type), req.offset, req.length,
                  s.message());
  }
  reply_status(req, s);
}

void Connection::block_status(const Request& req) {
  std::vector<Extent> extents;
  Status s = volume_.block_status(req.offset, req.length, &extents);
  if (!s.ok()) {
    reply_status(req, s);
    return;
  }
  // Descriptors cover at most the requested range, adjacent runs with the
  // same flags are merged, and REQ_ONE keeps only the first.
  size_t limit = (req.flags & kCmdFlagReqOne) ? 1 : kMaxDescriptors;
  std::vector<std::pair<uint32_t, uint32_t>> out;  // (length, flags)
  uint64_t covered = 0;
  for (const Extent& e : extents) {
    if (covered >= req.length) break;
    if (e.length == 0) continue;
    auto len = static_cast<uint32_t>(std::min<uint64_t>(e.length, req.length - covered));
    uint32_t flags = e.flags & (kStateHole | kStateZero);
    if (!out.empty() && out.back().second == flags) {
      out.back().first += len;
    } else {
      if (out.size() == limit) break;
      out.emplace_back(len, flags);
    }
    covered += len;
  }
  // A layer must report at least one extent; if it did not, "allocated
  // data" is always a truthful answer.
  if (out.empty()) out.emplace_back(req.length, 0);

  WireWriter w;
  w.u32(kBaseAllocationId);
  for (auto [len, flags] : out) {
    w.u32(len);
    w.u32(flags);
  }
  reply_chunk(req.cookie, kReplyTypeBlockStatus, w.data());
}

void Connection::reply_status(const Request& req, const Status& s) {
  if (!s.ok()) {
    reply_error(req, to_nbd_error(s.code()), s.message());
    return;
  }
  if (session_.structured_replies) {
    reply_chunk(req.cookie, kReplyTypeNone, {});
    return;
  }
  std::array<std::byte, kSimpleReplySize> hdr;
  put_be32(hdr.data(), kSimpleReplyMagic);
  put_be32(hdr.data() + 4, 0);
  put_be64(hdr.data() + 8, req.cookie);
  iovec iov{hdr.data(), hdr.size()};
  send(&iov, 1);
}

void Connection::reply_error(const Request& req, uint32_t error, std::string_view message) {
  if (session_.structured_replies) {
    message = message.substr(0, kMaxMessage);
    WireWriter w;
    w.u32(error);
    w.u16(static_cast<uint16_t>(message.size()));
    w.bytes(message);
    reply_chunk(req.cookie, kReplyTypeError, w.data());
    return;
  }
  // A simple read error carries no data.
  std::array<std::byte, kSimpleReplySize> hdr;
  put_be32(hdr.data(), kSimpleReplyMagic);
  put_be32(hdr.data() + 4, error);
  put_be64(hdr.data() + 8, req.cookie);
  iovec iov{hdr.data(), hdr.size()};
  send(&iov, 1);
}

void Connection::reply_read(const Request& req, std::span<const std::byte> data) {
  if (session_.structured_replies) {
    // One OFFSET_DATA chunk, so NBD_CMD_FLAG_DF is always honoured.
    std::array<std::byte, kStructuredReplySize + 8> hdr;
    put_be32(hdr.data(), kStructuredReplyMagic);
    put_be16(hdr.data() + 4, kReplyFlagDone);
    put_be16(hdr.data() + 6, kReplyTypeOffsetData);
    put_be64(hdr.data() + 8, req.cookie);
    put_be32(hdr.data() + 16, static_cast<uint32_t>(8 + data.size()));
    put_be64(hdr.data() + 20, req.offset);
    iovec iov[2] = {{hdr.data(), hdr.size()}, {const_cast<std::byte*>(data.data()), data.size()}};
    send(iov, 2);
    return;
  }
  std::array<std::byte, kSimpleReplySize> hdr;
  put_be32(hdr.data(), kSimpleReplyMagic);
  put_be32(hdr.data() + 4, 0);
  put_be64(hdr.data() + 8, req.cookie);
  iovec iov[2] = {{hdr.data(), hdr.size()}, {const_cast<std::byte*>(data.data()), data.size()}};
  send(iov, 2);
}

void Connection::reply_chunk(uint64_t cookie, uint16_t type, std::span<const std::byte> payload) {
  std::array<std::byte, kStructuredReplySize> hdr;
  put_be32(hdr.data(), kStructuredReplyMagic);
  put_be16(hdr.data() + 4, kReplyFlagDone);
  put_be16(hdr.data() + 6, type);
  put_be64(hdr.data() + 8, cookie);
  put_be32(hdr.data() + 16, static_cast<uint32_t>(payload.size()));
  iovec iov[2] = {{hdr.data(), hdr.size()}, {const_cast<std::byte*>(payload.data()), payload.size()}};
  send(iov, payload.empty() ? 1 : 2);
}

void Connection::send(iovec* iov, size_t count) {
  std::lock_guard lock(write_mu_);
  if (broken_) return;
  Status s = transport_.send_all(iov, count);
  if (s.ok()) return;
  spdlog::debug("nbd[{}]: sending reply failed: {}", id_, s.message());
  broken_ = true;
  // Nobody will read the replies: stop reading requests too. The fd stays
  // open until run() has joined this worker.
  closing_ = true;
  ::shutdown(fd_, SHUT_RDWR);
}

}  // namespace bowstack::nbd
