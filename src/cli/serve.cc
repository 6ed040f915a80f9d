#include <fmt/format.h>
#include <signal.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <thread>

#include "cli/report.h"
#include "cli/systemd.h"
#include "cli/verbs.h"
#include "control/commands.h"
#include "control/control_server.h"
#include "core/device_tree.h"
#include "core/parse.h"
#include "core/table.h"
#include "core/target_registry.h"
#include "core/volume.h"
#include "nbd/server.h"
#include "targets/builtin.h"

namespace bowstack::cli {

namespace {

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

// The table to serve: --table FILE ('-': stdin), or the shorthand IMAGE
// --target ... compiled into one.
Result<TableNode> serve_table(const ServeOptions& opts, const TargetRegistry& registry) {
  if (!opts.table.empty()) {
    if (!opts.image.empty() || !opts.targets.empty() || !opts.create_size.empty()) {
      return Status::Error(EINVAL,
                           "--table describes the whole stack: give either --table or IMAGE "
                           "[--create] [--target ...], not both");
    }
    auto text = read_table_text(opts.table);
    if (!text.ok()) return text.status();
    auto t = parse_table_text(*text, registry);
    if (!t.ok())
      return Status::Error(t.status().code(), fmt::format("{}: {}", opts.table, t.status().context()));
    return t;
  }
  std::vector<TargetSpec> specs;
  for (const auto& text : opts.targets) {
    auto spec = parse_target_spec(text);
    if (!spec.ok()) return spec.status();
    specs.push_back(std::move(spec.value()));
  }
  const std::string image = opts.image.empty() ? kDefaultImage : opts.image;
  std::optional<uint64_t> create;
  if (!opts.create_size.empty()) {
    auto size = parse_size(opts.create_size, "--create size");
    if (!size.ok()) return size.status();
    if (*size == 0 || *size % 4096 != 0) {
      return Status::Error(EINVAL, "--create size must be a non-zero multiple of 4096 bytes");
    }
    create = *size;
  } else if (opts.image.empty() && ::access(image.c_str(), F_OK) != 0) {
    create = parse_size(kDefaultImageSize, "size").value();
  }
  return table_from_shorthand(image, create, opts.read_only, specs, registry);
}

// TLS errors: EINVAL ones are whole sentences (a bad line, GnuTLS's
// reason); others say what the system refused ("cannot read F: ...").
std::string tls_error(const Status& s) { return s.code() == EINVAL ? s.context() : s.message(); }

// The signals the main thread waits for: SIGTERM and SIGINT stop the server
// (draining first); SIGHUP, which daemons use to reload, never stops it.
sigset_t served_signals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGHUP);
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

  // Validate everything that needs no I/O before touching any file.
  TargetRegistry registry;
  register_builtin_targets(&registry);
  auto table = serve_table(opts, registry);
  if (!table.ok()) return fail(why(table.status()));
  std::vector<HostPort> listens;
  for (const auto& l : opts.listen) {
    auto hp = parse_listen(l);
    if (!hp.ok()) return fail(hp.status().context());
    listens.push_back(hp.value());
  }
  // Sockets passed by systemd (or systemd-socket-activate) replace the
  // default listener; --listen and --unix still add their own.
  std::vector<int> activated = inherited_listeners();
  if (listens.empty() && opts.unix_path.empty() && activated.empty()) {
    listens.push_back(parse_listen(kDefaultListen).value());
  }
  if (opts.threads == 0 || opts.threads > 1024) return fail("--threads must be between 1 and 1024");
  auto tls_mode = nbd::parse_tls_mode(opts.tls);
  if (!tls_mode.ok()) return fail(tls_mode.status().context());
  nbd::TlsOptions tls_opts{*tls_mode, opts.tls_certificates, opts.tls_psk, opts.tls_verify_peer};
  if (Status s = nbd::validate_tls_options(tls_opts); !s.ok()) return fail(s.context());
  // Certificates and keys are read before any image is opened, so that a
  // mistake there costs nothing.
  auto tls = nbd::TlsContext::create(tls_opts);
  if (!tls.ok()) return fail(tls_error(tls.status()));

  BuildOptions build;
  build.direct = opts.direct;
  std::vector<const TableNode*> to_create;
  for (const TableNode* leaf : file_leaves(table.value())) {
    if (leaf->create_size && ::access(leaf->path.c_str(), F_OK) != 0) to_create.push_back(leaf);
  }
  auto tree = DeviceTree::build(table.value(), registry, build);
  // Errors carry a complete sentence; strerror would only repeat "Invalid argument".
  if (!tree.ok()) {
    // A build error is a whole sentence, errno text included where it says anything.
    const std::string& what = tree.status().context();
    return fail(opts.table.empty() ? what : opts.table + ": " + what);
  }
  for (const TableNode* leaf : to_create) {
    spdlog::info("created image {} ({})", leaf->path, format_size(*leaf->create_size));
  }
  const TableNode* data = data_image(table.value());
  const std::string image = (data ? data : leaves(table.value()).front())->leaf_name();
  Volume volume(std::move(tree.value()));
  ControlEnv control_env{&registry, build};

  // Signals are taken synchronously by this thread only; every other thread
  // inherits the blocked mask.
  sigset_t signals = served_signals();
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  ::signal(SIGPIPE, SIG_IGN);

  nbd::ServerOptions nopts;
  nopts.export_name = opts.export_name;
  nopts.description = "bowstack " + image;
  nopts.read_only = opts.read_only || volume.capabilities().read_only;
  nopts.max_threads_per_connection = opts.threads;
  if (*tls_mode != nbd::TlsMode::kOff) nopts.tls = tls.value();
  nbd::Server server(volume, nopts);
  // The URI schemes clients may use: nbds only when TLS is required.
  std::vector<std::string_view> schemes;
  if (*tls_mode != nbd::TlsMode::kRequire) schemes.push_back("nbd");
  if (*tls_mode != nbd::TlsMode::kOff) schemes.push_back("nbds");
  std::vector<std::string> endpoints;
  for (const auto& hp : listens) {
    if (Status s = server.listen_tcp(hp.host, hp.port); !s.ok()) return fail(s.message());
    bool v6 = hp.host.find(':') != std::string::npos;
    for (std::string_view scheme : schemes) {
      endpoints.push_back(
          fmt::format("{}://{}{}{}:{}", scheme, v6 ? "[" : "", hp.host, v6 ? "]" : "", server.tcp_port()));
    }
  }
  auto add_unix_endpoints = [&](const std::string& path) {
    for (std::string_view scheme : schemes)
      endpoints.push_back(fmt::format("{}+unix:///?socket={}", scheme, path));
  };
  if (!opts.unix_path.empty()) {
    if (Status s = server.listen_unix(opts.unix_path); !s.ok()) return fail(s.message());
    add_unix_endpoints(opts.unix_path);
  }
  for (int fd : activated) {
    auto listener = server.adopt_listener(fd);
    if (!listener.ok()) return fail("socket activation: " + listener.status().message());
    if (listener->starts_with('/')) {
      add_unix_endpoints(*listener);
    } else {
      for (std::string_view scheme : schemes) endpoints.push_back(fmt::format("{}://{}", scheme, *listener));
    }
  }

  auto control = ControlServer::open(
      opts.control,
      [&](const nlohmann::json& request) {
        nlohmann::json reply = handle_control_request(volume, request, control_env);
        if (reply.value("ok", false) && request.value("cmd", "") == "status") {
          reply["image"] = image;
          reply["export_name"] = opts.export_name;
          reply["endpoints"] = endpoints;
          reply["tls"] = std::string(nbd::tls_mode_name(*tls_mode));
          reply["connections"] = server.active_connections();
          reply["connections_total"] = server.total_connections();
        }
        return reply;
      },
      static_cast<int>(opts.control_idle_timeout * 1000));
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
  spdlog::info("table: {}", table.value().to_json().dump());
  notify_service_manager(fmt::format("READY=1\nSTATUS=serving {} on {}", image, where));
  if (*tls_mode != nbd::TlsMode::kOff) {
    spdlog::info("TLS {}: {}", nbd::tls_mode_name(*tls_mode), tls.value()->current()->summary());
  }

  int sig = 0;
  for (;;) {
    sigwait(&signals, &sig);
    if (sig != SIGHUP) break;
    // Logs go to stderr (nothing to reopen). TLS material is read again:
    // new handshakes use it, connected clients keep their sessions, and a
    // bad file keeps the old material in use.
    if (*tls_mode == nbd::TlsMode::kOff) {
      spdlog::info("SIGHUP: nothing to reload; still serving");
    } else if (Status s = tls.value()->reload(); s.ok()) {
      spdlog::info("SIGHUP: TLS credentials reloaded: {}", tls.value()->current()->summary());
    } else {
      spdlog::error("SIGHUP: reloading TLS credentials failed, the old ones stay in use: {}", tls_error(s));
    }
  }
  notify_service_manager("STOPPING=1");
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

int run_targets(bool json) {
  TargetRegistry registry;
  register_builtin_targets(&registry);
  if (json) {
    nlohmann::json all = nlohmann::json::array();
    for (const TargetInfo* t : registry.all()) all.push_back(t->to_json());
    std::printf("%s\n", all.dump(2).c_str());
    return 0;
  }
  for (const TargetInfo* t : registry.all()) {
    std::printf("%s: %s\n", t->name.c_str(), t->summary.c_str());
    std::printf("  params:\n");
    for (const auto& p : t->params) std::printf("    %-18s %s\n", p.key.c_str(), p.help.c_str());
    std::printf("  slots:\n");
    for (const auto& sl : t->slots) {
      std::printf("    %-18s %s%s\n", sl.name.c_str(), sl.help.c_str(),
                  sl.shorthand_key.empty()
                      ? ""
                      : fmt::format(" (--target {}:{}=PATH|none)", t->name, sl.shorthand_key).c_str());
    }
  }
  return 0;
}

}  // namespace bowstack::cli
