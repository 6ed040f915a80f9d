#include "control/control_server.h"

#include <poll.h>
#include <spdlog/spdlog.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <cstring>

#include "core/thread_name.h"
#include "core/unix_path.h"

namespace bowstack {

namespace {

Result<sockaddr_un> unix_address(const std::string& path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof(addr.sun_path)) {
    return Status::Error(ENAMETOOLONG, "control socket path '" + path + "' is empty or too long");
  }
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  return addr;
}

bool send_all(int fd, const std::string& data) {
  size_t done = 0;
  while (done < data.size()) {
    ssize_t n = ::send(fd, data.data() + done, data.size() - done, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    done += static_cast<size_t>(n);
  }
  return true;
}

nlohmann::json error_reply(const std::string& what) { return {{"ok", false}, {"error", what}}; }

}  // namespace

Result<std::unique_ptr<ControlServer>> ControlServer::open(const std::string& path, Handler handler,
                                                           int idle_timeout_ms) {
  auto addr = unix_address(path);
  if (!addr.ok()) return addr.status();
  if (Status s = claim_unix_socket_path(path, "control socket"); !s.ok()) return s;
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return Status::Error(errno, "control socket");
  // Create the socket with mode 0600 from the start: no window where others could connect.
  mode_t old = ::umask(0177);
  int rc = ::bind(fd, reinterpret_cast<sockaddr*>(&addr.value()), sizeof(sockaddr_un));
  int bind_errno = errno;
  ::umask(old);
  if (rc != 0 || ::listen(fd, 16) != 0) {
    Status s = Status::Error(rc != 0 ? bind_errno : errno, "cannot listen on control socket '" + path + "'");
    ::close(fd);
    return s;
  }
  int wake = ::eventfd(0, EFD_CLOEXEC);
  if (wake < 0) {
    ::close(fd);
    ::unlink(path.c_str());
    return Status::Error(errno, "eventfd");
  }
  return std::unique_ptr<ControlServer>(
      new ControlServer(path, fd, wake, std::move(handler), idle_timeout_ms));
}

ControlServer::ControlServer(std::string path, int listen_fd, int wake_fd, Handler handler,
                             int idle_timeout_ms)
    : path_(std::move(path)),
      listen_fd_(listen_fd),
      wake_fd_(wake_fd),
      handler_(std::move(handler)),
      idle_timeout_ms_(idle_timeout_ms > 0 ? idle_timeout_ms : kDefaultIdleTimeoutMs) {}

ControlServer::~ControlServer() {
  stop();
  ::close(listen_fd_);
  ::close(wake_fd_);
}

void ControlServer::start() {
  accept_thread_ = std::thread([this] {
    set_thread_name("ctl-accept");
    accept_loop();
  });
}

void ControlServer::stop() {
  if (stopping_.exchange(true)) return;
  uint64_t one = 1;
  [[maybe_unused]] ssize_t n = ::write(wake_fd_, &one, sizeof one);
  if (accept_thread_.joinable()) accept_thread_.join();
  std::list<std::pair<int, std::thread>> clients;
  {
    std::lock_guard lock(mu_);
    for (auto& [fd, t] : clients_) ::shutdown(fd, SHUT_RDWR);
    clients.swap(clients_);
  }
  for (auto& [fd, t] : clients) {
    if (t.joinable()) t.join();
  }
  ::unlink(path_.c_str());
}

void ControlServer::accept_loop() {
  while (!stopping_.load()) {
    pollfd fds[2] = {{listen_fd_, POLLIN, 0}, {wake_fd_, POLLIN, 0}};
    if (::poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      spdlog::error("control socket poll: {}", std::strerror(errno));
      return;
    }
    if (fds[1].revents) return;
    if (!(fds[0].revents & POLLIN)) continue;
    int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) continue;
    if (active_clients_.load() >= kMaxClients) {
      send_all(fd, error_reply("too many control clients").dump() + "\n");
      ::close(fd);
      continue;
    }
    std::lock_guard lock(mu_);
    // Reap finished client threads so the list stays bounded.
    for (auto it = clients_.begin(); it != clients_.end();) {
      if (it->first < 0) {
        it->second.join();
        it = clients_.erase(it);
      } else {
        ++it;
      }
    }
    ++active_clients_;
    clients_.emplace_back(fd, std::thread());
    auto* entry = &clients_.back();
    entry->second = std::thread([this, fd, entry] {
      set_thread_name("ctl-client");
      serve_client(fd);
      std::lock_guard inner(mu_);
      ::close(fd);
      entry->first = -1;
      --active_clients_;
    });
  }
}

void ControlServer::serve_client(int fd) {
  std::string buffer;
  char chunk[4096];
  while (!stopping_.load()) {
    size_t nl;
    while ((nl = buffer.find('\n')) != std::string::npos) {
      std::string line = buffer.substr(0, nl);
      buffer.erase(0, nl + 1);
      std::optional<std::string> reply = answer_control_line(line, handler_);
      if (reply && !send_all(fd, *reply + "\n")) return;
    }
    if (buffer.size() > kMaxLine) {
      send_all(fd, error_reply("request line too long").dump() + "\n");
      return;
    }
    // An idle client is dropped, so that a handful of forgotten
    // connections cannot hold every slot (kMaxClients) for ever.
    pollfd p{fd, POLLIN, 0};
    const int ready = ::poll(&p, 1, idle_timeout_ms_);
    if (ready < 0 && errno == EINTR) continue;
    if (ready == 0) {
      send_all(fd, error_reply("idle for too long; closing").dump() + "\n");
      return;
    }
    if (ready < 0) return;
    ssize_t n = ::recv(fd, chunk, sizeof chunk, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;
    buffer.append(chunk, static_cast<size_t>(n));
  }
}

std::optional<std::string> answer_control_line(std::string_view line, const ControlServer::Handler& handler) {
  if (line.find_first_not_of(" \t\r") == std::string_view::npos) return std::nullopt;
  nlohmann::json reply;
  nlohmann::json request = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
  if (request.is_discarded()) {
    reply = error_reply("malformed JSON request");
  } else if (!request.is_object() || !request.contains("cmd") || !request["cmd"].is_string()) {
    reply = error_reply("a request must be a JSON object with a string field \"cmd\"");
  } else {
    try {
      reply = handler(request);
    } catch (const std::exception& e) {  // a handler bug must not take the socket down
      reply = error_reply(std::string("internal error: ") + e.what());
    }
  }
  // Replacing invalid UTF-8 (with U+FFFD) rather than throwing: a handler
  // may put bytes that are not UTF-8 in a reply (an image path is any
  // bytes), and an exception here would end the server.
  return reply.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

Result<nlohmann::json> control_request(const std::string& path, const nlohmann::json& request,
                                       int timeout_ms) {
  auto addr = unix_address(path);
  if (!addr.ok()) return addr.status();
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return Status::Error(errno, "socket");
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr.value()), sizeof(sockaddr_un)) != 0) {
    Status s =
        Status::Error(errno, "cannot connect to control socket '" + path + "' (is bowstack serve running?)");
    ::close(fd);
    return s;
  }
  // A server that refuses the connection (too many clients) writes why and
  // closes: the send may fail, but the reason is there to read.
  const bool sent = send_all(fd, request.dump() + "\n");
  std::string buffer;
  char chunk[4096];
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (buffer.find('\n') == std::string::npos) {
    auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    pollfd p{fd, POLLIN, 0};
    if (left.count() <= 0 || ::poll(&p, 1, static_cast<int>(left.count())) == 0) {
      ::close(fd);
      return Status::Error(ETIMEDOUT, "no reply from control socket '" + path + "'");
    }
    ssize_t n = ::recv(fd, chunk, sizeof chunk, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      ::close(fd);
      if (!sent) return Status::Error(EIO, "cannot send to control socket '" + path + "'");
      return Status::Error(EIO, "control socket '" + path + "' closed without a reply");
    }
    buffer.append(chunk, static_cast<size_t>(n));
  }
  ::close(fd);
  nlohmann::json reply = nlohmann::json::parse(buffer.substr(0, buffer.find('\n')), nullptr, false);
  if (reply.is_discarded() || !reply.is_object())
    return Status::Error(EPROTO, "malformed reply from control socket");
  return reply;
}

}  // namespace bowstack
