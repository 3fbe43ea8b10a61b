#include "agent/manifest.hpp"

#include <gtest/gtest.h>

namespace cairn::agent {
namespace {

using nlohmann::json;

json minimal() {
  return json::parse(R"({"modulesContent":{
 "$edgeAgent":{"properties.desired":{
   "schemaVersion":"1.1",
   "runtime":{"type":"docker","settings":{"minDockerVersion":"v1.25","loggingOptions":"",
     "registryCredentials":{"acr":{"address":"myacr.azurecr.io","username":"u","password":"p"}}}},
   "systemModules":{
     "edgeAgent":{"type":"docker","settings":{"image":"mcr.microsoft.com/azureiotedge-agent:1.5","createOptions":""}},
     "edgeHub":{"type":"docker","status":"running","restartPolicy":"always","startupOrder":0,
                "settings":{"image":"mcr.microsoft.com/azureiotedge-hub:1.5","createOptions":"{}"}}},
   "modules":{"m1":{"version":"1.0","type":"docker","status":"running","restartPolicy":"always",
                    "imagePullPolicy":"on-create","startupOrder":1,
                    "settings":{"image":"myacr.azurecr.io/m1:1.0","createOptions":"{\"Cmd\":[\"a\"]}"},
                    "env":{"LOG":{"value":"debug"},"N":{"value":3}}}}}},
 "$edgeHub":{"properties.desired":{
   "schemaVersion":"1.1",
   "routes":{"up":"FROM /messages/* INTO $upstream"},
   "storeAndForwardConfiguration":{"timeToLiveSecs":7200}}},
 "m1":{"properties.desired":{"threshold":30}}}})");
}

// Every problem in the outcome, as "PATH: MESSAGE" lines.
std::string problems(const json& doc) { return parse_manifest(doc).describe(); }

TEST(Manifest, ParsesTheDocumentedExample) {
  auto outcome = parse_manifest(minimal());
  ASSERT_TRUE(outcome.deployment) << outcome.describe();
  const auto& d = *outcome.deployment;
  EXPECT_EQ(d.schema_version, "1.1");
  ASSERT_EQ(d.modules.size(), 1u);
  const auto& m = d.modules[0];
  EXPECT_EQ(m.name, "m1");
  EXPECT_EQ(m.restart_policy, RestartPolicy::always);
  EXPECT_EQ(m.startup_order, 1u);
  EXPECT_EQ(m.create_options["Cmd"][0], "a");
  ASSERT_EQ(m.env.size(), 2u);
  EXPECT_EQ(m.env[0], (std::pair<std::string, std::string>{"LOG", "debug"}));
  EXPECT_EQ(m.env[1].second, "3");
  EXPECT_EQ(d.system_modules.size(), 2u);
  EXPECT_EQ(d.module_twins.at("m1")["threshold"], 30);
  ASSERT_TRUE(d.credential_for("myacr.azurecr.io/m1:1.0"));
  EXPECT_EQ(d.credential_for("myacr.azurecr.io/m1:1.0")->username, "u");
  EXPECT_FALSE(d.credential_for("other.io/m1:1.0"));
}

TEST(Manifest, AcceptsTheContentWrapperAndSchema10) {
  auto doc = minimal();
  doc["modulesContent"]["$edgeAgent"]["properties.desired"]["schemaVersion"] = "1.0";
  json wrapped = {{"content", doc}};
  auto outcome = parse_manifest(wrapped);
  EXPECT_TRUE(outcome.deployment) << outcome.describe();
}

TEST(Manifest, DefaultsFollowIoTEdge) {
  auto doc = minimal();
  auto& m1 = doc["modulesContent"]["$edgeAgent"]["properties.desired"]["modules"]["m1"];
  m1.erase("restartPolicy");
  m1.erase("startupOrder");
  m1.erase("status");
  m1.erase("imagePullPolicy");
  auto outcome = parse_manifest(doc);
  ASSERT_TRUE(outcome.deployment) << outcome.describe();
  const auto& m = outcome.deployment->modules[0];
  EXPECT_EQ(m.restart_policy, RestartPolicy::on_unhealthy);
  EXPECT_EQ(m.startup_order, kDefaultStartupOrder);
  EXPECT_EQ(m.status, DesiredStatus::running);
  EXPECT_EQ(m.pull_policy, ImagePullPolicy::on_create);
}

TEST(Manifest, JoinsChunkedCreateOptionsInOrder) {
  json big = {{"Cmd", json::array()}};
  for (int i = 0; i < 200; ++i) big["Cmd"].push_back("argument-" + std::to_string(i));
  auto text = big.dump();
  auto chunks = chunk_create_options(text);
  ASSERT_GT(chunks.size(), 2u);
  EXPECT_TRUE(chunks.contains("createOptions01"));
  for (const auto& [k, v] : chunks.items()) EXPECT_LE(v.get<std::string>().size(), 512u);
  EXPECT_EQ(join_create_options(chunks), text);

  auto doc = minimal();
  auto& settings =
      doc["modulesContent"]["$edgeAgent"]["properties.desired"]["modules"]["m1"]["settings"];
  settings.erase("createOptions");
  for (const auto& [k, v] : chunks.items()) settings[k] = v;
  auto outcome = parse_manifest(doc);
  ASSERT_TRUE(outcome.deployment) << outcome.describe();
  EXPECT_EQ(outcome.deployment->modules[0].create_options, big);
}

TEST(Manifest, EmptyAndNullCreateOptionsMeanNone) {
  for (const char* text : {"", "null"}) {
    auto doc = minimal();
    doc["modulesContent"]["$edgeAgent"]["properties.desired"]["modules"]["m1"]["settings"]
       ["createOptions"] = text;
    auto outcome = parse_manifest(doc);
    ASSERT_TRUE(outcome.deployment) << outcome.describe();
    EXPECT_EQ(outcome.deployment->modules[0].create_options, json::object());
  }
}

TEST(Manifest, ReportsEveryProblemWithItsPath) {
  auto doc = minimal();
  auto& desired = doc["modulesContent"]["$edgeAgent"]["properties.desired"];
  desired["schemaVersion"] = "1.2";
  auto& m1 = desired["modules"]["m1"];
  m1["restartPolicy"] = "sometimes";
  m1["status"] = "paused";
  m1["startupOrder"] = -1;
  m1["imagePullPolicy"] = "always";
  m1["settings"]["createOptions"] = "{not json";
  m1["env"]["BAD.NAME"] = {{"value", "x"}};
  m1["env"]["NOVALUE"] = "x";
  desired["modules"]["bad name"] = m1;
  desired["runtime"]["settings"]["registryCredentials"]["r"] = {{"address", "a b"},
                                                                {"username", "u"}};
  auto text = problems(doc);
  const std::string a = "modulesContent.$edgeAgent.properties.desired";
  for (const std::string& expected : {
           a + ".schemaVersion: '1.2' is not supported",
           a + ".modules.m1.restartPolicy: 'sometimes'",
           a + ".modules.m1.status: 'paused'",
           a + ".modules.m1.startupOrder: must be an integer",
           a + ".modules.m1.imagePullPolicy: 'always'",
           a + ".modules.m1.settings.createOptions: is not valid JSON",
           a + ".modules.m1.env.BAD.NAME: is not a valid variable name",
           a + ".modules.m1.env.NOVALUE: must be {\"value\"",
           a + ".modules.bad name: module names may only hold",
           a + ".runtime.settings.registryCredentials.r.password: required",
           a + ".runtime.settings.registryCredentials.r.address: must not contain whitespace",
       }) {
    EXPECT_NE(text.find(expected), std::string::npos) << "missing: " << expected << "\nin:\n"
                                                      << text;
  }
  EXPECT_FALSE(parse_manifest(doc).deployment);
}

TEST(Manifest, RejectsMissingSections) {
  EXPECT_NE(problems(json::parse(R"({"modulesContent":{}})")).find("$edgeAgent: required"),
            std::string::npos);
  EXPECT_NE(problems(json::parse(R"([1,2])")).find("expected {\"modulesContent\""),
            std::string::npos);
  auto doc = minimal();
  doc["modulesContent"]["$edgeAgent"]["properties.desired"]["modules"]["m1"].erase("settings");
  doc["modulesContent"]["$edgeAgent"]["properties.desired"]["systemModules"].erase("edgeHub");
  auto text = problems(doc);
  EXPECT_NE(text.find("modules.m1.settings: required"), std::string::npos) << text;
  EXPECT_NE(text.find("systemModules.edgeHub: required"), std::string::npos) << text;
}

TEST(Manifest, SchemaVersions) {
  for (const char* ok : {"1.0", "1.1", "1.1.0", "1.0.5"}) {
    auto doc = minimal();
    doc["modulesContent"]["$edgeAgent"]["properties.desired"]["schemaVersion"] = ok;
    EXPECT_TRUE(parse_manifest(doc).deployment) << ok;
  }
  for (const char* bad : {"1.2", "2.0", "1.1.1", "one", ""}) {
    auto doc = minimal();
    doc["modulesContent"]["$edgeAgent"]["properties.desired"]["schemaVersion"] = bad;
    EXPECT_FALSE(parse_manifest(doc).deployment) << bad;
  }
}

TEST(Manifest, EdgeHubProblemsComeFromTheValidator) {
  auto outcome = parse_manifest(minimal(), [](const json& d) -> std::string {
    return d.contains("routes") ? "route 'up': bad" : "";
  });
  EXPECT_FALSE(outcome.deployment);
  EXPECT_EQ(outcome.describe(), "modulesContent.$edgeHub.properties.desired: route 'up': bad");
}

TEST(Manifest, FortyModulesDeploy) {
  auto doc = minimal();
  auto& modules = doc["modulesContent"]["$edgeAgent"]["properties.desired"]["modules"];
  for (int i = 0; i < 40; ++i) {
    modules["module" + std::to_string(i)] = modules["m1"];
  }
  auto outcome = parse_manifest(doc);
  ASSERT_TRUE(outcome.deployment) << outcome.describe();
  EXPECT_EQ(outcome.deployment->modules.size(), 41u);
  EXPECT_GT(doc.dump().size(), 8192u);
}

TEST(Manifest, ConfigHashChangesWithWhatNeedsARecreate) {
  auto d = *parse_manifest(minimal()).deployment;
  auto m = d.modules[0];
  auto base = config_hash(m);
  auto changed = m;
  changed.env.emplace_back("X", "1");
  EXPECT_NE(config_hash(changed), base);
  changed = m;
  changed.image = "myacr.azurecr.io/m1:1.1";
  EXPECT_NE(config_hash(changed), base);
  changed = m;
  changed.restart_policy = RestartPolicy::never;  // applied without a recreate
  EXPECT_EQ(config_hash(changed), base);
}

TEST(Manifest, TwinsFormStripsVersionMetadata) {
  auto doc = minimal();
  auto agent = doc["modulesContent"]["$edgeAgent"]["properties.desired"];
  auto hub = doc["modulesContent"]["$edgeHub"]["properties.desired"];
  agent["$version"] = 4;
  hub["$metadata"] = json::object();
  auto outcome = parse_twins(agent, hub);
  ASSERT_TRUE(outcome.deployment) << outcome.describe();
  EXPECT_FALSE(outcome.deployment->edgehub_desired.contains("$metadata"));
}

}  // namespace
}  // namespace cairn::agent
