// The two systemd protocols a daemon speaks (libsystemd): socket activation
// (LISTEN_FDS/LISTEN_PID, as systemd and systemd-socket-activate pass
// listening sockets) and readiness notification (NOTIFY_SOCKET).
// Both do nothing when the variables are absent, so they are always called.
#pragma once

#include <string_view>
#include <vector>

namespace bowstack::cli {

// The listening sockets passed to this process, in order; each is then
// owned by the caller. Unsets LISTEN_FDS/LISTEN_PID/LISTEN_FDNAMES so that
// children do not see them. Call once, early.
std::vector<int> inherited_listeners();

// Sends state ("READY=1", "STOPPING=1", "STATUS=...") to the service
// manager, if there is one; errors are ignored (logged at debug level).
void notify_service_manager(std::string_view state);

}  // namespace bowstack::cli
