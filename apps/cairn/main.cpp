// cairn: the command line for a local cairnd, over its management socket (HOME/run/mgmt.sock).
#include <cstdlib>
#include <iostream>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "net/http.hpp"

namespace {

using namespace cairn;

struct Context {
  std::string home;
  std::string socket() const { return home + "/run/mgmt.sock"; }
};

// Sends a request and returns the JSON body, or prints the error and returns nullopt.
std::optional<nlohmann::json> call(const Context& ctx, const std::string& method,
                                   const std::string& target, const std::string& body = "") {
  auto r = net::unix_http_request(ctx.socket(), net::HttpRequest{method, target, body});
  if (!r) {
    std::cerr << "cairn: " << r.error().message << "\n";
    return std::nullopt;
  }
  auto j =
      r->body.empty() ? nlohmann::json::object() : nlohmann::json::parse(r->body, nullptr, false);
  if (r->status >= 300) {
    std::string msg =
        j.is_object() && j.contains("error") ? j["error"].get<std::string>() : r->body;
    std::cerr << "cairn: " << msg << " (HTTP " << r->status << ")\n";
    return std::nullopt;
  }
  if (j.is_discarded()) {
    std::cerr << "cairn: cairnd answered something that is not JSON\n";
    return std::nullopt;
  }
  return j;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"cairn — command line for the cairn edge daemon"};
  Context ctx;
  const char* env_home = std::getenv("CAIRN_HOME");
  ctx.home = env_home ? env_home : "/var/lib/cairn";
  app.add_option("--home", ctx.home, "cairnd's home directory (env CAIRN_HOME)")
      ->capture_default_str();
  app.set_version_flag("--version", std::string("cairn ") + CAIRN_VERSION);
  app.require_subcommand(1);

  auto* identity = app.add_subcommand("identity", "Module identities of this device");
  identity->require_subcommand(1);
  std::string module;
  auto* create = identity->add_subcommand(
      "create", "Create MODULE's identity (or show it) and print its connection string");
  create->add_option("MODULE", module, "Module name")->required();
  auto* token = identity->add_subcommand("token", "Print a SAS token for MODULE");
  token->add_option("MODULE", module, "Module name")->required();
  int ttl = 3600;
  token->add_option("--ttl", ttl, "Validity in seconds")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  auto* list = identity->add_subcommand("list", "List module identities");
  auto* remove = identity->add_subcommand("delete", "Delete MODULE's identity");
  remove->add_option("MODULE", module, "Module name")->required();
  auto* status =
      app.add_subcommand("status", "Print the hub's counters, endpoints and queue lengths as JSON");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int code = app.exit(e);
    return code == 0 ? 0 : 2;
  }

  if (create->parsed()) {
    auto j = call(ctx, "POST", "/identities", nlohmann::json{{"moduleId", module}}.dump());
    if (!j) return 1;
    std::cout << (*j)["connectionString"].get<std::string>() << "\n";
  } else if (token->parsed()) {
    auto j = call(ctx, "GET", "/identities/" + module + "/token?ttl=" + std::to_string(ttl));
    if (!j) return 1;
    std::cout << (*j)["token"].get<std::string>() << "\n";
  } else if (list->parsed()) {
    auto j = call(ctx, "GET", "/identities");
    if (!j) return 1;
    for (const auto& id : *j) std::cout << id["moduleId"].get<std::string>() << "\n";
  } else if (remove->parsed()) {
    if (!call(ctx, "DELETE", "/identities/" + module)) return 1;
  } else if (status->parsed()) {
    auto j = call(ctx, "GET", "/status");
    if (!j) return 1;
    std::cout << j->dump(2) << "\n";
  }
  return 0;
}
