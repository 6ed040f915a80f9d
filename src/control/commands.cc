#include "control/commands.h"

#include "core/table.h"

namespace bowstack {

namespace {
nlohmann::json fail(const std::string& what) { return {{"ok", false}, {"error", what}}; }
}  // namespace

nlohmann::json handle_control_request(Volume& volume, const nlohmann::json& request, const ControlEnv& env) {
  if (!request.is_object() || !request.contains("cmd") || !request["cmd"].is_string()) {
    return fail("a request must be a JSON object with a string field \"cmd\"");
  }
  const std::string cmd = request["cmd"].get<std::string>();
  if (cmd == "status") {
    nlohmann::json reply = volume.status();
    reply["ok"] = true;
    return reply;
  }
  if (cmd == "message") {
    if (!request.contains("text") || !request["text"].is_string() ||
        request["text"].get<std::string>().empty()) {
      return fail("message needs a non-empty string field \"text\"");
    }
    std::string layer;
    if (request.contains("target")) {
      if (!request["target"].is_string()) return fail("\"target\" must be a string (a layer kind)");
      layer = request["target"].get<std::string>();
    }
    auto r = volume.message(request["text"].get<std::string>(), layer);
    if (!r.ok()) return fail(r.status().message());
    return {{"ok", true}, {"reply", r.value()}};
  }
  if (cmd == "suspend") {
    if (Status st = volume.suspend(); !st.ok()) {
      return {
          {"ok", false}, {"suspended", true}, {"error", "suspended, but the flush failed: " + st.message()}};
    }
    return {{"ok", true}, {"suspended", true}};
  }
  if (cmd == "resume") {
    volume.resume();
    return {{"ok", true}, {"suspended", false}};
  }
  if (cmd == "table") {
    nlohmann::json table = volume.table();
    if (table.is_null()) return fail("this server has no table");
    return {{"ok", true}, {"table", std::move(table)}};
  }
  if (cmd == "reload") {
    if (!env.registry) return fail("this server cannot reload");
    if (!request.contains("table")) return fail("reload needs a field \"table\" (a table, docs/tables.md)");
    bool noflush = false;
    if (request.contains("noflush")) {
      if (!request["noflush"].is_boolean()) return fail("\"noflush\" must be true or false");
      noflush = request["noflush"].get<bool>();
    }
    auto table = parse_table(request["table"], *env.registry);
    if (!table.ok()) return fail(table.status().context());
    auto report = volume.reload(table.value(), *env.registry, env.build, ReloadOptions{noflush});
    if (!report.ok())
      return fail(report.status().context().empty() ? report.status().message() : report.status().context());
    return {{"ok", true},
            {"held_us", report->held_us},
            {"kept_nodes", report->kept_nodes},
            {"built_nodes", report->built_nodes},
            {"dropped_nodes", report->dropped_nodes}};
  }
  return fail("unknown command '" + cmd + "' (valid: status, message, suspend, resume, table, reload)");
}

}  // namespace bowstack
