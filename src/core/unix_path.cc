#include "core/unix_path.h"

#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace bowstack {

Status claim_unix_socket_path(const std::string& path, const std::string& what) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) return Status::Ok();
  if (!S_ISSOCK(st.st_mode)) {
    return Status::Error(EEXIST, what + " path '" + path + "' exists and is not a socket");
  }
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof(addr.sun_path)) {
    return Status::Error(ENAMETOOLONG, what + " path '" + path + "' is too long");
  }
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  const int probe = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (probe < 0) return Status::Error(errno, what);
  const bool live = ::connect(probe, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
  ::close(probe);
  if (live) return Status::Error(EADDRINUSE, what + " '" + path + "' is in use by a running server");
  // Nobody listens: a server died without removing it. Which server owns
  // the image is the image lock's job, not the socket's.
  if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
    return Status::Error(errno, "cannot remove the stale " + what + " '" + path + "'");
  }
  spdlog::warn("replaced the stale {} {} (no server was listening on it)", what, path);
  return Status::Ok();
}

}  // namespace bowstack
