#include "cli/systemd.h"

#include <spdlog/spdlog.h>
#include <systemd/sd-daemon.h>

#include <cstring>
#include <string>

namespace bowstack::cli {

std::vector<int> inherited_listeners() {
  std::vector<int> fds;
  int n = sd_listen_fds(1);
  if (n < 0) {
    spdlog::warn("socket activation: {}", std::strerror(-n));
    return fds;
  }
  for (int i = 0; i < n; ++i) fds.push_back(SD_LISTEN_FDS_START + i);
  return fds;
}

void notify_service_manager(std::string_view state) {
  std::string s(state);
  int rc = sd_notify(0, s.c_str());
  if (rc < 0) spdlog::debug("sd_notify({}): {}", s, std::strerror(-rc));
}

}  // namespace bowstack::cli
