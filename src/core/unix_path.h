// Claiming the path of a Unix socket a server is about to bind (the NBD
// socket, the control socket).
#pragma once

#include <string>

#include "core/status.h"

namespace bowstack {

// OK when `path` is free to bind: absent, or a socket nobody listens on
// (left by a server that died; it is removed and a warning names it).
// EADDRINUSE when a server listens on it, EEXIST when it is not a socket.
// `what` names the socket in messages ("control socket").
Status claim_unix_socket_path(const std::string& path, const std::string& what);

}  // namespace bowstack
