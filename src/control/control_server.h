// The control socket: a Unix stream socket (mode 0600) speaking JSON lines.
// Each request is one JSON object on one line; each gets exactly one JSON
// object line back. The protocol is in docs/control.md.
//
// Thread-safety: start()/stop() from one thread; the handler is called from
// per-client threads, concurrently.
// Lifetime: stop() (or the destructor) joins every thread and unlinks the
// socket path.
#pragma once

#include <atomic>
#include <functional>
#include <list>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <thread>

#include "core/status.h"

namespace bowstack {

class ControlServer {
 public:
  using Handler = std::function<nlohmann::json(const nlohmann::json& request)>;

  // Binds `path`. Refuses (with a one-line reason) a live server's socket or
  // a path that is not a socket; replaces a stale socket that nobody
  // listens on (left by a server that died). A client idle for
  // `idle_timeout_ms` (0: kDefaultIdleTimeoutMs) is told so and dropped.
  static Result<std::unique_ptr<ControlServer>> open(const std::string& path, Handler handler,
                                                     int idle_timeout_ms = 0);
  static constexpr int kDefaultIdleTimeoutMs = 30000;
  ~ControlServer();

  void start();
  void stop();
  const std::string& path() const { return path_; }

 private:
  ControlServer(std::string path, int listen_fd, int wake_fd, Handler handler, int idle_timeout_ms);
  void accept_loop();
  void serve_client(int fd);

  static constexpr size_t kMaxLine = 1u << 20;
  static constexpr int kMaxClients = 16;

  const std::string path_;
  const int listen_fd_;
  const int wake_fd_;  // eventfd that interrupts poll() on stop
  const Handler handler_;
  const int idle_timeout_ms_;
  std::thread accept_thread_;
  std::atomic<bool> stopping_{false};
  std::mutex mu_;
  std::list<std::pair<int, std::thread>> clients_;  // guarded by mu_
  std::atomic<int> active_clients_{0};
};

// The reply to one request line (without its '\n'), or nullopt for a blank
// line, which gets no reply. Malformed JSON, a request that is not an object
// with a string "cmd", and an exception from the handler all become
// {"ok":false,"error":...}. Strings in the reply that are not UTF-8 have
// their invalid bytes replaced by U+FFFD. Never throws. This is what a
// control client's connection runs for each line it sends.
std::optional<std::string> answer_control_line(std::string_view line, const ControlServer::Handler& handler);

// Sends one request to the control socket at `path` and returns the reply.
// Errors: the socket is absent or nobody listens, the reply is not JSON, or
// no reply within `timeout_ms`.
Result<nlohmann::json> control_request(const std::string& path, const nlohmann::json& request,
                                       int timeout_ms = 30000);

}  // namespace bowstack
