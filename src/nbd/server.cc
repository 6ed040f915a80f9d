#include "nbd/server.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstring>
#include <system_error>

#include "core/thread_name.h"
#include "core/unix_path.h"
#include "nbd/connection.h"

namespace bowstack::nbd {

namespace {

std::string host_port(const std::string& host, uint16_t port) {
  bool v6 = host.find(':') != std::string::npos;
  return fmt::format("{}{}{}:{}", v6 ? "[" : "", host, v6 ? "]" : "", port);
}

}  // namespace

Server::Server(Volume& volume, ServerOptions opts)
    : volume_(volume),
      opts_(std::move(opts)),
      export_(make_export_info(volume.geometry(), volume.capabilities(), opts_.export_name, opts_.description,
                               opts_.read_only)) {}

Server::~Server() { stop(); }

Status Server::listen_tcp(const std::string& host, uint16_t port) {
  std::string h = host;
  if (h.size() >= 2 && h.front() == '[' && h.back() == ']') h = h.substr(1, h.size() - 2);
  std::string where = host_port(h, port);

  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* res = nullptr;
  std::string service = std::to_string(port);
  if (int rc = ::getaddrinfo(h.empty() ? nullptr : h.c_str(), service.c_str(), &hints, &res); rc != 0) {
    return Status::Error(EINVAL, fmt::format("cannot resolve {}: {}", where, ::gai_strerror(rc)));
  }
  int fd = -1;
  int err = EADDRNOTAVAIL;
  for (addrinfo* ai = res; ai != nullptr && fd < 0; ai = ai->ai_next) {
    fd = ::socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, ai->ai_protocol);
    if (fd < 0) {
      err = errno;
      continue;
    }
    int one = 1;
    (void)::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (::bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 || ::listen(fd, SOMAXCONN) != 0) {
      err = errno;
      ::close(fd);
      fd = -1;
    }
  }
  ::freeaddrinfo(res);
  if (fd < 0) {
    if (err == EADDRINUSE) return Status::Error(err, fmt::format("address {} is already in use", where));
    return Status::Error(err, fmt::format("cannot listen on {}", where));
  }

  sockaddr_storage addr{};
  socklen_t len = sizeof addr;
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0) {
    if (addr.ss_family == AF_INET) {
      tcp_port_ = ntohs(reinterpret_cast<sockaddr_in*>(&addr)->sin_port);
    } else if (addr.ss_family == AF_INET6) {
      tcp_port_ = ntohs(reinterpret_cast<sockaddr_in6*>(&addr)->sin6_port);
    }
  }
  listen_fds_.push_back(fd);
  spdlog::debug("nbd: listening on {}", host_port(h, tcp_port_));
  return Status::Ok();
}

uint16_t Server::tcp_port() const { return tcp_port_; }

Status Server::listen_unix(const std::string& path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof addr.sun_path) {
    return Status::Error(ENAMETOOLONG, fmt::format("bad unix socket path '{}'", path));
  }
  if (Status s = claim_unix_socket_path(path, "NBD socket"); !s.ok()) return s;
  std::memcpy(addr.sun_path, path.data(), path.size());

  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return Status::Error(errno, "socket");
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    int err = errno;
    ::close(fd);
    return Status::Error(err, fmt::format("cannot bind {}", path));
  }
  if (::listen(fd, SOMAXCONN) != 0) {
    int err = errno;
    ::close(fd);
    ::unlink(path.c_str());
    return Status::Error(err, fmt::format("cannot listen on {}", path));
  }
  listen_fds_.push_back(fd);
  unix_paths_.push_back(path);
  spdlog::debug("nbd: listening on {}", path);
  return Status::Ok();
}

Result<std::string> Server::adopt_listener(int fd) {
  int listening = 0, type = 0;
  socklen_t len = sizeof listening;
  if (::getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) != 0) {
    int err = errno;
    ::close(fd);
    return Status::Error(err, fmt::format("inherited fd {} is not a socket", fd));
  }
  len = sizeof type;
  if (!listening || ::getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) != 0 || type != SOCK_STREAM) {
    ::close(fd);
    return Status::Error(EINVAL, fmt::format("inherited fd {} is not a listening stream socket", fd));
  }
  // accept_loop() relies on non-blocking listeners (a connection that
  // vanishes between poll and accept must not block it).
  int flags = ::fcntl(fd, F_GETFL);
  (void)::fcntl(fd, F_SETFL, (flags < 0 ? 0 : flags) | O_NONBLOCK);
  (void)::fcntl(fd, F_SETFD, FD_CLOEXEC);

  std::string where = fmt::format("fd {}", fd);
  sockaddr_storage addr{};
  len = sizeof addr;
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0) {
    char host[INET6_ADDRSTRLEN] = "";
    if (addr.ss_family == AF_INET) {
      auto* in = reinterpret_cast<sockaddr_in*>(&addr);
      ::inet_ntop(AF_INET, &in->sin_addr, host, sizeof host);
      tcp_port_ = ntohs(in->sin_port);
      where = host_port(host, tcp_port_);
    } else if (addr.ss_family == AF_INET6) {
      auto* in6 = reinterpret_cast<sockaddr_in6*>(&addr);
      ::inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof host);
      tcp_port_ = ntohs(in6->sin6_port);
      where = host_port(host, tcp_port_);
    } else if (addr.ss_family == AF_UNIX) {
      auto* un = reinterpret_cast<sockaddr_un*>(&addr);
      size_t n = len > offsetof(sockaddr_un, sun_path) ? len - offsetof(sockaddr_un, sun_path) : 0;
      where = std::string(un->sun_path, ::strnlen(un->sun_path, n));
    }
  }
  listen_fds_.push_back(fd);
  spdlog::debug("nbd: listening on inherited {}", where);
  return where;
}

void Server::start() {
  {
    std::lock_guard lock(mu_);
    if (stopping_ || accept_thread_.joinable() || listen_fds_.empty()) return;
  }
  if (::pipe2(wake_fds_, O_CLOEXEC) != 0) {
    spdlog::error("nbd: cannot create wake-up pipe: {}", std::strerror(errno));
    return;
  }
  accept_thread_ = std::thread([this] {
    set_thread_name("nbd-accept");
    accept_loop();
  });
}

void Server::accept_loop() {
  std::vector<pollfd> pfds;
  for (int fd : listen_fds_) pfds.push_back({fd, POLLIN, 0});
  pfds.push_back({wake_fds_[0], POLLIN, 0});
  for (;;) {
    int r = ::poll(pfds.data(), pfds.size(), -1);
    if (r < 0) {
      if (errno == EINTR) continue;
      spdlog::error("nbd: poll on listeners failed: {}", std::strerror(errno));
      return;
    }
    if (pfds.back().revents != 0) return;
    bool out_of_fds = false;
    for (size_t i = 0; i + 1 < pfds.size(); ++i) {
      if (pfds[i].revents == 0) continue;
      int fd = ::accept4(pfds[i].fd, nullptr, nullptr, SOCK_CLOEXEC);
      if (fd >= 0) {
        serve_fd(fd);
      } else if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
        spdlog::warn("nbd: accept failed: {}", std::strerror(errno));
        out_of_fds = true;
      }
      // EAGAIN, ECONNABORTED, EINTR and the like: the next poll sorts it out.
    }
    if (out_of_fds) {
      // The pending connection keeps the listener readable; wait a little
      // (or for stop()) instead of spinning.
      pollfd wake{wake_fds_[0], POLLIN, 0};
      if (::poll(&wake, 1, 100) > 0) return;
    }
  }
}

size_t Server::active_locked() const {
  return static_cast<size_t>(
      std::count_if(conns_.begin(), conns_.end(), [](const Entry& e) { return !e.done; }));
}

void Server::collect_finished_locked(std::list<Entry>* finished) {
  for (auto it = conns_.begin(); it != conns_.end();) {
    auto next = std::next(it);
    if (it->done) finished->splice(finished->end(), conns_, it);
    it = next;
  }
}

void Server::join_all(std::list<Entry>* entries) {
  for (Entry& e : *entries) {
    if (e.thread.joinable()) e.thread.join();
  }
  entries->clear();
}

void Server::serve_fd(int fd) {
  if (fd < 0) return;
  std::list<Entry> finished;
  {
    std::lock_guard lock(mu_);
    collect_finished_locked(&finished);
    if (stopping_) {
      ::close(fd);
    } else if (active_locked() >= opts_.max_connections) {
      spdlog::warn("nbd: {} connections already; refusing another", opts_.max_connections);
      ::close(fd);
    } else {
      Connection::Limits limits;
      limits.max_threads = std::max(1u, opts_.max_threads_per_connection);
      limits.handshake_timeout_ms = static_cast<int>(opts_.handshake_timeout_ms);
      uint64_t id = ++total_;
      auto conn = std::make_shared<Connection>(fd, id, volume_, export_, limits, opts_.tls.get());
      spdlog::debug("nbd[{}]: new connection", id);
      Connection* raw = conn.get();
      auto it = conns_.insert(conns_.end(), Entry{std::move(conn), {}, false});
      try {
        it->thread = std::thread([this, raw, it] {
          set_thread_name("nbd-conn");
          raw->run();
          {
            std::lock_guard done_lock(mu_);
            it->done = true;
          }
          cv_.notify_all();
        });
      } catch (const std::system_error& e) {
        spdlog::warn("nbd: cannot start a connection thread: {}", e.what());
        conns_.erase(it);  // the Connection closes fd
      }
    }
  }
  join_all(&finished);
}

void Server::stop() {
  std::lock_guard stop_lock(stop_mu_);
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  if (accept_thread_.joinable()) {
    char c = 1;
    while (::write(wake_fds_[1], &c, 1) < 0 && errno == EINTR) {
    }
    accept_thread_.join();
  }
  for (int& fd : wake_fds_) {
    if (fd >= 0) ::close(fd);
    fd = -1;
  }
  for (int fd : listen_fds_) ::close(fd);
  listen_fds_.clear();
  for (const auto& path : unix_paths_) ::unlink(path.c_str());
  unix_paths_.clear();

  std::list<Entry> all;
  {
    std::unique_lock lock(mu_);
    for (Entry& e : conns_) {
      if (!e.done) e.conn->shutdown_read();
    }
    auto drained = [this] { return active_locked() == 0; };
    auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(opts_.drain_timeout_ms);
    if (!cv_.wait_until(lock, deadline, drained)) {
      spdlog::warn("nbd: {} connection(s) still busy after {} ms; cutting them off", active_locked(),
                   opts_.drain_timeout_ms);
      for (Entry& e : conns_) {
        if (!e.done) e.conn->abort();
      }
      cv_.wait(lock, drained);
    }
    all.splice(all.end(), conns_);
  }
  join_all(&all);
}

size_t Server::active_connections() const {
  std::lock_guard lock(mu_);
  return active_locked();
}

uint64_t Server::total_connections() const {
  std::lock_guard lock(mu_);
  return total_;
}

}  // namespace bowstack::nbd
