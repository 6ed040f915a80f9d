#include <fmt/format.h>
#include <signal.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>

#include <algorithm>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <thread>

#include "cli/verbs.h"
#include "control/commands.h"
#include "control/control_server.h"
#include "core/file_device.h"
#include "core/parse.h"
#include "core/target_registry.h"
#include "core/volume.h"
#include "nbd/server.h"
#include "targets/builtin.h"

namespace bowstack::cli {

namespace {

int fail(const std::string& what) {
  std::fprintf(stderr, "bowstack: %s\n", what.c_str());
  return 1;
}

struct HostPort {
  std::string host;
  uint16_t port = 0;
};

Result<HostPort> parse_listen(const std::string& text) {
  size_t colon = text.rfind(':');
  if (colon == std::string::npos || colon + 1 == text.size()) {
    return Status::Error(EINVAL, "--listen '" + text + "': expected HOST:PORT");
  }
  HostPort hp;
  hp.host = text.substr(0, colon);
  if (hp.host.size() >= 2 && hp.host.front() == '[' && hp.host.back() == ']') {
    hp.host = hp.host.substr(1, hp.host.size() - 2);
  }
  if (hp.host.empty()) return Status::Error(EINVAL, "--listen '" + text + "': empty host");
  unsigned long port = 0;
  for (size_t i = colon + 1; i < text.size(); ++i) {
    if (text[i] < '0' || text[i] > '9' ||
        (port = port * 10 + static_cast<unsigned long>(text[i] - '0')) > 65535) {
      return Status::Error(EINVAL, "--listen '" + text + "': port must be a number from 0 to 65535");
    }
  }
  hp.port = static_cast<uint16_t>(port);
  return hp;
}

// Opens the image, creating it when asked (or when serving the default image).
Result<std::shared_ptr<FileDevice>> open_image(const ServeOptions& opts, std::string* image) {
  *image = opts.image.empty() ? kDefaultImage : opts.image;
  std::string create = opts.create_size;
  if (create.empty() && opts.image.empty()) create = kDefaultImageSize;
  struct stat st {};
  bool exists = ::stat(image->c_str(), &st) == 0;
  if (!create.empty()) {
    auto size = parse_size(create, "--create size");
    if (!size.ok()) return size.status();
    if (*size == 0 || *size % 4096 != 0) {
      return Status::Error(EINVAL, "--create size must be a non-zero multiple of 4096 bytes");
    }
    if (exists) {
      if (S_ISREG(st.st_mode) && static_cast<uint64_t>(st.st_size) != *size && !opts.create_size.empty()) {
        return Status::Error(EEXIST,
                             fmt::format("image '{}' exists with size {}, not the {} asked by --create; "
                                         "refusing to resize it",
                                         *image, st.st_size, *size));
      }
    } else {
      if (Status s = FileDevice::create(*image, *size); !s.ok()) return s;
      spdlog::info("created image {} ({})", *image, format_size(*size));
    }
  }
  return FileDevice::open(*image, FileDeviceOptions{opts.read_only, opts.direct});
}

sigset_t stop_signals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  return set;
}

}  // namespace

unsigned default_serve_threads() {
  const unsigned cpus = std::max(1u, std::thread::hardware_concurrency());
  return std::clamp(2 * cpus, 4u, 16u);
}

int run_serve(const ServeOptions& opts) {
  spdlog::set_default_logger(spdlog::stderr_color_mt("bowstack"));
  spdlog::set_pattern("bowstack: %^%l%$: %v");
  spdlog::set_level(spdlog::level::from_str(opts.log_level));

  // Validate everything that needs no I/O before touching the image.
  TargetRegistry registry;
  register_builtin_targets(&registry);
  std::vector<TargetSpec> specs;
  for (const auto& text : opts.targets) {
    auto spec = parse_target_spec(text);
    if (!spec.ok()) return fail(spec.status().context());
    if (Status s = registry.check(spec.value()); !s.ok()) return fail(s.context());
    specs.push_back(std::move(spec.value()));
  }
  std::vector<HostPort> listens;
  for (const auto& l : opts.listen) {
    auto hp = parse_listen(l);
    if (!hp.ok()) return fail(hp.status().context());
    listens.push_back(hp.value());
  }
  if (listens.empty() && opts.unix_path.empty()) listens.push_back(parse_listen(kDefaultListen).value());
  if (opts.threads == 0 || opts.threads > 1024) return fail("--threads must be between 1 and 1024");

  std::string image;
  auto base = open_image(opts, &image);
  if (!base.ok()) return fail(base.status().message());
  auto top = registry.build(base.value(), specs);
  // Target errors carry a complete sentence; strerror would only repeat "Invalid argument".
  if (!top.ok())
    return fail(top.status().context().empty() ? top.status().message() : top.status().context());
  Volume volume(top.value());

  // Signals are taken synchronously by this thread only; every other thread
  // inherits the blocked mask.
  sigset_t signals = stop_signals();
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  ::signal(SIGPIPE, SIG_IGN);

  nbd::ServerOptions nopts;
  nopts.export_name = opts.export_name;
  nopts.description = "bowstack " + image;
  nopts.read_only = opts.read_only;
  nopts.max_threads_per_connection = opts.threads;
  nbd::Server server(volume, nopts);
  std::vector<std::string> endpoints;
  for (const auto& hp : listens) {
    if (Status s = server.listen_tcp(hp.host, hp.port); !s.ok()) return fail(s.message());
    bool v6 = hp.host.find(':') != std::string::npos;
    endpoints.push_back(
        fmt::format("nbd://{}{}{}:{}", v6 ? "[" : "", hp.host, v6 ? "]" : "", server.tcp_port()));
  }
  if (!opts.unix_path.empty()) {
    if (Status s = server.listen_unix(opts.unix_path); !s.ok()) return fail(s.message());
    endpoints.push_back(fmt::format("nbd+unix:///?socket={}", opts.unix_path));
  }

  auto control = ControlServer::open(opts.control, [&](const nlohmann::json& request) {
    nlohmann::json reply = handle_control_request(volume, request);
    if (reply.value("ok", false) && request.value("cmd", "") == "status") {
      reply["image"] = image;
      reply["export_name"] = opts.export_name;
      reply["endpoints"] = endpoints;
      reply["connections"] = server.active_connections();
      reply["connections_total"] = server.total_connections();
    }
    return reply;
  });
  if (!control.ok()) {
    server.stop();
    return fail(control.status().message());
  }

  server.start();
  (*control)->start();
  std::string where;
  for (const auto& e : endpoints) where += (where.empty() ? "" : ", ") + e;
  spdlog::info("serving {} ({}) on {}; control socket {}", image, format_size(volume.geometry().size), where,
               opts.control);

  int sig = 0;
  sigwait(&signals, &sig);
  spdlog::info("{}: draining in-flight requests", sig == SIGTERM ? "SIGTERM" : "SIGINT");
  // Requests held by a suspend are in flight too: let them finish rather than hang the drain.
  volume.resume();
  server.stop();
  Status flushed = volume.capabilities().flush ? volume.flush() : Status::Ok();
  (*control)->stop();
  if (!flushed.ok()) {
    spdlog::error("final flush failed: {}", flushed.message());
    return 1;
  }
  spdlog::info("stopped cleanly");
  return 0;
}

int run_targets() {
  TargetRegistry registry;
  register_builtin_targets(&registry);
  for (const TargetInfo* t : registry.all()) {
    std::printf("%s: %s\n", t->name.c_str(), t->summary.c_str());
    for (const auto& p : t->params) std::printf("    %-18s %s\n", p.key.c_str(), p.help.c_str());
  }
  return 0;
}

}  // namespace bowstack::cli
