// The NBD server: listening sockets, the accept loop and the set of live
// connections, all serving one export backed by one Volume.
//
// Protocol: fixed newstyle handshake only; simple and structured replies;
// the base:allocation metadata context; optional TLS (STARTTLS). See connection.h for the threading
// model of a connection and handshake.h for the options understood.
//
// Thread-safety: listen_*() and start() are meant for one setup thread;
// every other method may be called from any thread, concurrently.
// Lifetime: the Volume must outlive the Server (or at least its stop()).
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "core/status.h"
#include "core/volume.h"
#include "nbd/export_info.h"
#include "nbd/tls_credentials.h"

namespace bowstack::nbd {

struct ServerOptions {
  std::string export_name = "bowstack";  // "" from the client also selects it
  std::string description;               // NBD_INFO_DESCRIPTION if non-empty
  bool read_only = false;                // export READ_ONLY; WRITE/TRIM/WRITE_ZEROES -> EPERM
  unsigned max_threads_per_connection = 16;
  unsigned max_connections = 256;  // beyond: accept and close immediately
  // A handshake that makes no progress for this long is dropped (0: never).
  unsigned handshake_timeout_ms = 30000;
  // stop() waits this long for in-flight replies before cutting the
  // connections of clients that do not read them.
  unsigned drain_timeout_ms = 30000;
  // TLS mode and credentials (null: off). Whoever holds it may reload()
  // the credentials at any time; new handshakes then use them.
  std::shared_ptr<TlsContext> tls;
};

class Connection;

class Server {
 public:
  Server(Volume& volume, ServerOptions opts);
  ~Server();  // stop() if still running
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // REQUIRES (listen_*): start() not called yet.
  // Binds and listens (SO_REUSEADDR). Port 0 picks an ephemeral port. May be
  // called more than once; tcp_port() reports the latest.
  Status listen_tcp(const std::string& host, uint16_t port);
  uint16_t tcp_port() const;
  // Fails if path exists. stop() unlinks it.
  Status listen_unix(const std::string& path);
  // A listening socket made by someone else (systemd socket activation);
  // takes ownership of fd, closes it on failure. Fails (ENOTSOCK, EINVAL)
  // unless fd is a listening stream socket. Returns where it listens:
  // "HOST:PORT" ([HOST] for IPv6) or the Unix socket path, which stop()
  // leaves in place since its owner made it.
  Result<std::string> adopt_listener(int fd);

  // Starts accepting on every listener; returns immediately.
  void start();
  // Serves one already-connected socket; takes ownership of fd.
  void serve_fd(int fd);
  // Stops accepting, stops every connection from reading new requests,
  // waits until every in-flight request has been answered, closes the
  // connections and joins all threads. Idempotent.
  void stop();

  size_t active_connections() const;
  uint64_t total_connections() const;

 private:
  struct Entry {
    std::shared_ptr<Connection> conn;
    std::thread thread;
    bool done = false;  // guarded by mu_; run() has returned
  };

  void accept_loop();
  // REQUIRES: mu_ held. Moves finished entries to *finished for joining
  // outside the lock.
  void collect_finished_locked(std::list<Entry>* finished);
  static void join_all(std::list<Entry>* entries);
  size_t active_locked() const;

  Volume& volume_;
  const ServerOptions opts_;
  const ExportInfo export_;

  std::mutex stop_mu_;  // serialises stop()

  mutable std::mutex mu_;
  std::condition_variable cv_;  // signalled when a connection finishes
  bool stopping_ = false;       // guarded by mu_
  std::list<Entry> conns_;      // guarded by mu_
  uint64_t total_ = 0;          // guarded by mu_

  // Set up before start(), torn down by stop().
  std::vector<int> listen_fds_;
  std::atomic<uint16_t> tcp_port_{0};
  std::vector<std::string> unix_paths_;
  int wake_fds_[2] = {-1, -1};  // pipe; written by stop() to end accept_loop()
  std::thread accept_thread_;
};

}  // namespace bowstack::nbd
