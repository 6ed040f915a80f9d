// answer_control_line: the per-line work of a control connection.
#include "control/control_server.h"

#include <gtest/gtest.h>

#include <stdexcept>

namespace bowstack {
namespace {

nlohmann::json answer(std::string_view line, const ControlServer::Handler& handler) {
  std::optional<std::string> reply = answer_control_line(line, handler);
  EXPECT_TRUE(reply.has_value());
  if (!reply) return {};
  EXPECT_EQ(reply->find('\n'), std::string::npos);
  return nlohmann::json::parse(*reply);
}

const ControlServer::Handler kEcho = [](const nlohmann::json& request) {
  return nlohmann::json{{"ok", true}, {"cmd", request["cmd"]}};
};

TEST(ControlLineTest, BlankLinesGetNoReply) {
  EXPECT_FALSE(answer_control_line("", kEcho).has_value());
  EXPECT_FALSE(answer_control_line(" \t\r", kEcho).has_value());
}

TEST(ControlLineTest, MalformedRequestsGetErrors) {
  for (std::string_view line : {"{", "[1]", "\"status\"", "{}", "{\"cmd\":5}", "{\"cmd\":\"\xff\"}"}) {
    nlohmann::json r = answer(line, kEcho);
    EXPECT_FALSE(r.value("ok", true)) << line;
    EXPECT_TRUE(r["error"].is_string()) << line;
  }
  EXPECT_TRUE(answer(R"({"cmd":"status"})", kEcho).value("ok", false));
}

TEST(ControlLineTest, HandlerExceptionsBecomeErrors) {
  nlohmann::json r = answer(
      R"({"cmd":"x"})", [](const nlohmann::json&) -> nlohmann::json { throw std::runtime_error("boom"); });
  EXPECT_FALSE(r.value("ok", true));
  EXPECT_EQ(r["error"], "internal error: boom");
}

// Found while writing the control fuzzer: a reply holding bytes that are not
// UTF-8 (the status reply carries the image path, which may be any bytes)
// made json::dump throw outside the handler's try, which ended the server.
TEST(ControlLineTest, RepliesWithInvalidUtf8AreStillSent) {
  nlohmann::json r = answer(R"({"cmd":"status"})", [](const nlohmann::json&) {
    return nlohmann::json{{"ok", true}, {"image", "disk-\xff\xfe.img"}};
  });
  EXPECT_TRUE(r.value("ok", false));
  EXPECT_EQ(r["image"], "disk-\xef\xbf\xbd\xef\xbf\xbd.img");
}

}  // namespace
}  // namespace bowstack
