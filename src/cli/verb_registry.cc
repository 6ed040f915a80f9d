#include "cli/verb_registry.h"

namespace bowstack::cli {

namespace {
std::vector<TargetVerbs>& registry() {
  static std::vector<TargetVerbs> verbs;
  return verbs;
}
}  // namespace

const std::vector<TargetVerbs>& target_verbs() { return registry(); }

VerbRegistration::VerbRegistration(std::string target, AddVerbs add) {
  registry().push_back({std::move(target), std::move(add)});
}

void add_client_options(CLI::App* verb, ClientOptions* opts) {
  verb->add_option("--control", opts->control, "control socket of the running server")->capture_default_str();
  verb->add_flag("--json", opts->json, "print the reply as JSON");
}

}  // namespace bowstack::cli
