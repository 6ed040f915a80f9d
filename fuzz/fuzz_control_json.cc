// fuzz_control_json: the input is what one client sends to the control
// socket, split into lines as the server splits it (so several requests can
// walk a target through its states: checkpoint, commit, suspend...). Each
// line goes through answer_control_line, the function a control connection
// runs per line, with the production handler, handle_control_request, on a
// Volume whose stack is bow over a small memory device.
//
// Checks: nothing throws; every non-blank line gets exactly one reply, which
// is one line of valid JSON, an object with a boolean "ok", and a string
// "error" when "ok" is false; input that is not a JSON object with a string
// "cmd" always gets ok:false.
#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "control/commands.h"
#include "control/control_server.h"
#include "core/memory_device.h"
#include "core/volume.h"
#include "fuzz_util.h"
#include "targets/bow/bow_target.h"

namespace bowstack::fuzz {
namespace {

constexpr size_t kMaxInput = 64 << 10;
constexpr size_t kMaxLines = 16;
constexpr uint64_t kDeviceSize = 128 << 10;

void check_reply(std::string_view line, const std::string& reply) {
  FUZZ_CHECK(reply.find('\n') == std::string::npos);
  nlohmann::json r = nlohmann::json::parse(reply, nullptr, /*allow_exceptions=*/false);
  FUZZ_CHECK_MSG(!r.is_discarded() && r.is_object(), reply);
  FUZZ_CHECK_MSG(r.contains("ok") && r["ok"].is_boolean(), reply);
  if (!r["ok"].get<bool>()) FUZZ_CHECK_MSG(r.contains("error") && r["error"].is_string(), reply);
  nlohmann::json req = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
  if (req.is_discarded() || !req.is_object() || !req.contains("cmd") || !req["cmd"].is_string()) {
    FUZZ_CHECK_MSG(!r["ok"].get<bool>(), reply);
  }
}

}  // namespace
}  // namespace bowstack::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace bowstack;
  using namespace bowstack::fuzz;
  if (size > kMaxInput) return 0;
  // One device for all runs, zeroed for each (cheaper than a fresh one).
  static const auto mem = std::make_shared<MemoryDevice>(kDeviceSize);
  FUZZ_CHECK(mem->write_zeroes(0, kDeviceSize, 0).ok());
  auto bow = bow::BowTarget::open(mem, bow::BowOptions{.block_size = 4096});
  FUZZ_CHECK(bow.ok());
  // Free space, so that "checkpoint" can succeed.
  FUZZ_CHECK((*bow)->trim(kDeviceSize / 2, kDeviceSize / 2, 0).ok());
  Volume volume(bow.value());
  const ControlServer::Handler handler = [&](const nlohmann::json& request) {
    return handle_control_request(volume, request);
  };

  std::string_view input(reinterpret_cast<const char*>(data), size);
  for (size_t n = 0; n < kMaxLines && !input.empty(); ++n) {
    const size_t nl = input.find('\n');
    std::string_view line = input.substr(0, nl);
    input = nl == std::string_view::npos ? std::string_view() : input.substr(nl + 1);
    std::optional<std::string> reply;
    try {
      reply = answer_control_line(line, handler);
    } catch (const std::exception& e) {
      FUZZ_CHECK_MSG(false, std::string("exception escaped: ") + e.what());
    }
    const bool blank = line.find_first_not_of(" \t\r") == std::string_view::npos;
    FUZZ_CHECK(reply.has_value() == !blank);
    if (reply) check_reply(line, *reply);
  }
  return 0;
}
