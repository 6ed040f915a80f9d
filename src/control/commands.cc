#include "control/commands.h"

namespace bowstack {

namespace {
nlohmann::json fail(const std::string& what) { return {{"ok", false}, {"error", what}}; }
}  // namespace

nlohmann::json handle_control_request(Volume& volume, const nlohmann::json& request) {
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
  return fail("unknown command '" + cmd + "' (valid: status, message, suspend, resume)");
}

}  // namespace bowstack
