// One client connection: the handshake, then the transmission phase.
//
// Threading (the nbdkit model; no hand-off between threads on the hot path):
// up to max_threads workers per connection, each looping
//   lock read_mu_ -> read one request and its payload -> unlock
//   -> execute it against the Volume
//   -> lock write_mu_ -> send the whole reply with one sendmsg -> unlock.
// Replies therefore leave in completion order, matched by cookie. The thread
// that calls run() is the first worker; a worker that has just taken a
// request while no other worker is waiting for read_mu_ spawns one more
// (up to the limit), so a slow request never stalls the requests behind it.
//
// Ending: EOF, a socket error, NBD_CMD_DISC, a bad request magic or
// shutdown_read() all set closing_; no worker reads another request after
// that, every request already read is still executed and answered (unless
// sending fails), then run() joins the workers and closes the socket.
#pragma once

#include <atomic>
#include <cstdint>
#include <mutex>
#include <span>
#include <string_view>
#include <thread>
#include <vector>

#include "core/status.h"
#include "core/volume.h"
#include "nbd/aligned_buffer.h"
#include "nbd/export_info.h"
#include "nbd/request.h"
#include "nbd/session.h"
#include "nbd/socket_io.h"
#include "nbd/tls_credentials.h"

namespace bowstack::nbd {

class Connection {
 public:
  struct Limits {
    unsigned max_threads = 16;
    int handshake_timeout_ms = 30000;  // <= 0: none
  };

  // Takes ownership of fd. The Volume, ExportInfo and TLS context (null: TLS
  // off) must outlive run().
  Connection(int fd, uint64_t id, Volume& volume, const ExportInfo& exp, Limits limits,
             const TlsContext* tls = nullptr);
  ~Connection();
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  // Serves the connection to its end; returns after every worker has been
  // joined and the socket closed. Call once.
  void run();

  // Thread-safe, callable at any time until destruction, idempotent.
  // Stops reading requests; those already read are still answered.
  void shutdown_read();
  // Also breaks sending, for a client that no longer reads its replies.
  void abort();

  uint64_t id() const { return id_; }

 private:
  void worker_loop(bool pre_counted);
  void maybe_spawn_worker();
  void join_workers();
  // REQUIRES: read_mu_ held. False: stop reading (EOF, error, DISC, bad magic).
  bool read_request(Request* req, Verdict* verdict, AlignedBuffer* buf);
  void execute(const Request& req, const Verdict& verdict, AlignedBuffer* buf);
  void block_status(const Request& req);
  // Completes kFua with a flush on a volume that cannot honour it itself.
  Status finish_fua(const Request& req, Status s);

  void reply_status(const Request& req, const Status& s);
  void reply_error(const Request& req, uint32_t error, std::string_view message);
  void reply_read(const Request& req, std::span<const std::byte> data);
  void reply_chunk(uint64_t cookie, uint16_t type, std::span<const std::byte> payload);
  // Sends header + payload as one message; on failure marks the connection
  // broken and wakes any blocked reader.
  void send(iovec* iov, size_t count);

  const int fd_;
  const uint64_t id_;
  Volume& volume_;
  const ExportInfo& exp_;
  const Limits limits_;
  const TlsContext* const tls_;
  Session session_;  // written by the handshake, read-only once workers exist

  std::atomic<bool> closing_{false};  // no more requests will be read

  std::mutex fd_mu_;  // guards closed_: the fd is never shut down after close
  bool closed_ = false;

  // Plain or TLS once the handshake has run; then receiving is guarded by
  // read_mu_ and sending by write_mu_.
  Transport transport_;

  std::mutex read_mu_;  // guards reader_ and so the framing of the request stream
  BufferedReader reader_;

  std::mutex write_mu_;  // guards sends on transport_ (whole replies) and broken_
  bool broken_ = false;

  std::atomic<unsigned> waiting_readers_{0};  // workers waiting for read_mu_
  std::mutex workers_mu_;                     // guards workers_ and nworkers_
  std::vector<std::thread> workers_;          // spawned workers, joined by run()
  unsigned nworkers_ = 1;                     // including run()'s own thread
};

}  // namespace bowstack::nbd
