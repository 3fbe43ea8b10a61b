#include <string>

#include <gtest/gtest.h>

#include "agent/agent.hpp"
#include "twin/twin.hpp"

namespace cairn::agent {
namespace {

using nlohmann::json;

// One module as Agent::module_json reports it, with `env_vars` variables of 40 characters and a
// createOptions of about `create_bytes` characters in 512-character chunks.
json module_report(int env_vars, std::size_t create_bytes) {
  json settings = {{"image", "myregistry.azurecr.io/modules/filter:1.0.3"}};
  std::string create = "{\"Cmd\":[\"" + std::string(create_bytes, 'x') + "\"]}";
  for (std::size_t i = 0, n = 0; i < create.size(); i += 512, ++n) {
    settings[n == 0 ? std::string("createOptions") : "createOptions" + std::to_string(n)] =
        create.substr(i, 512);
  }
  json env = json::object();
  for (int i = 0; i < env_vars; ++i) {
    env["SETTING_" + std::to_string(i)] = {{"value", std::string(40, 'v')}};
  }
  return {{"version", "1.0"},
          {"type", "docker"},
          {"status", "running"},
          {"restartPolicy", "always"},
          {"imagePullPolicy", "on-create"},
          {"runtimeStatus", "running"},
          {"exitCode", 0},
          {"statusDescription", "running"},
          {"lastStartTimeUtc", "2026-12-02T18:00:00.000Z"},
          {"lastExitTimeUtc", "1970-01-01T00:00:00.000Z"},
          {"restartCount", 0},
          {"lastRestartTimeUtc", "1970-01-01T00:00:00.000Z"},
          {"settings", settings},
          {"env", env}};
}

json document(int modules, int env_vars, std::size_t create_bytes) {
  json mods = json::object();
  for (int i = 0; i < modules; ++i) {
    mods["module" + std::to_string(i)] = module_report(env_vars, create_bytes);
  }
  return {{"schemaVersion", "1.0"},
          {"lastDesiredVersion", 3},
          {"lastDesiredStatus", {{"code", 200}, {"description", ""}}},
          {"runtime", {{"type", "docker"}, {"settings", {{"minDockerVersion", "v1.25"}}}}},
          {"systemModules", json::object()},
          {"modules", mods}};
}

TEST(ReportedFit, SmallDocumentsStayWhole) {
  auto doc = document(5, 2, 40);
  auto fitted = doc;
  EXPECT_EQ(fit_reported(fitted), "full");
  EXPECT_EQ(fitted, doc);
}

TEST(ReportedFit, FortyModulesExceedTheTwinLimitAndAreCompacted) {
  // 40 modules with four settings each and a 300-character createOptions: the measurement the
  // limit was written for.
  auto doc = document(40, 4, 300);
  const auto full = twin::dump_json(doc).size();
  EXPECT_GT(full, twin::kMaxSectionBytes) << full;
  auto fitted = doc;
  EXPECT_EQ(fit_reported(fitted), "compact");
  const auto compact = twin::dump_json(fitted).size();
  EXPECT_LE(compact, kMaxReportedBytes) << compact;
  ASSERT_EQ(fitted["modules"].size(), 40u);
  const auto& m = fitted["modules"]["module7"];
  EXPECT_EQ(m["runtimeStatus"], "running");
  EXPECT_EQ(m["settings"]["image"], doc["modules"]["module7"]["settings"]["image"]);
  EXPECT_FALSE(m.contains("env"));
  EXPECT_FALSE(m["settings"].contains("createOptions"));
  // The twin accepts it as one reported patch.
  twin::Twin t;
  EXPECT_TRUE(t.patch_reported(fitted)) << compact;
}

TEST(ReportedFit, VeryManyModulesKeepTheirStateOnly) {
  auto doc = document(200, 1, 40);
  auto fitted = doc;
  EXPECT_EQ(fit_reported(fitted), "minimal");
  EXPECT_LE(twin::dump_json(fitted).size(), kMaxReportedBytes);
  ASSERT_EQ(fitted["modules"].size(), 200u);
  EXPECT_EQ(fitted["modules"]["module199"], (json{{"version", "1.0"},
                                                  {"status", "running"},
                                                  {"runtimeStatus", "running"},
                                                  {"exitCode", 0},
                                                  {"restartCount", 0},
                                                  {"statusDescription", "running"}}));
  EXPECT_EQ(fitted["lastDesiredStatus"]["code"], 200);
}

}  // namespace
}  // namespace cairn::agent
