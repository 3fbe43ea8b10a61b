// The Docker API client's pure parts: image names, the create body, normalised drift, and the
// engine's stream formats. The client against a real engine is tested in docker_live_test.cpp.
#include "agent/docker_api.hpp"

#include <gtest/gtest.h>

#include "core/crypto.hpp"

namespace cairn::agent {
namespace {

using nlohmann::json;

TEST(DockerImageName, DefaultsTagLikeIotEdge) {
  EXPECT_EQ(normalize_image_name("busybox"), "busybox:latest");
  EXPECT_EQ(normalize_image_name("busybox:1.36"), "busybox:1.36");
  EXPECT_EQ(normalize_image_name("127.0.0.1:5000/a/b"), "127.0.0.1:5000/a/b:latest");
  EXPECT_EQ(normalize_image_name("127.0.0.1:5000/a/b:2"), "127.0.0.1:5000/a/b:2");
  EXPECT_EQ(normalize_image_name("reg.io/a@sha256:abcd"), "reg.io/a@sha256:abcd");
}

TEST(DockerImageName, RegistryHost) {
  EXPECT_EQ(image_registry("busybox"), "docker.io");
  EXPECT_EQ(image_registry("library/busybox:1"), "docker.io");
  EXPECT_EQ(image_registry("myacr.azurecr.io/m:1"), "myacr.azurecr.io");
  EXPECT_EQ(image_registry("127.0.0.1:5000/x/y:1"), "127.0.0.1:5000");
  EXPECT_EQ(image_registry("localhost/x"), "localhost");
}

TEST(DockerImageName, SplitsForImagesCreate) {
  EXPECT_EQ(split_image_reference("127.0.0.1:5000/a/b"),
            std::make_pair(std::string("127.0.0.1:5000/a/b"), std::string("latest")));
  EXPECT_EQ(split_image_reference("r.io/a:7"),
            std::make_pair(std::string("r.io/a"), std::string("7")));
  EXPECT_EQ(split_image_reference("r.io/a@sha256:00"),
            std::make_pair(std::string("r.io/a"), std::string("sha256:00")));
}

TEST(DockerRegistryAuth, IsBase64UrlOfTheDockerShape) {
  std::string header = registry_auth_header({"127.0.0.1:5000", "u?>", "p~~~"});
  EXPECT_EQ(header.find_first_of("+/"), std::string::npos);
  std::string standard = header;
  for (char& c : standard) {
    if (c == '-') c = '+';
    if (c == '_') c = '/';
  }
  auto decoded = crypto::base64_decode(standard);
  ASSERT_TRUE(decoded.ok());
  auto j = json::parse(*decoded);
  EXPECT_EQ(j["username"], "u?>");
  EXPECT_EQ(j["password"], "p~~~");
  EXPECT_EQ(j["serveraddress"], "127.0.0.1:5000");
}

ContainerAdditions additions() {
  ContainerAdditions a;
  a.image = "127.0.0.1:5000/m:1";
  a.env = {{"TEMP", "manifest"}, {"IOTEDGE_MODULEID", "filter"}, {"TEMP", "later-duplicate"}};
  a.labels = {{"net.cairn.owner", "home-1"}};
  a.binds = {"/home/mnt/filter.sock:/var/run/iotedge/workload.sock"};
  return a;
}

TEST(MergeCreateOptions, AddsWhatTheAgentNeeds) {
  auto body = merge_create_options(json(), additions());
  ASSERT_TRUE(body.ok()) << body.error().to_string();
  EXPECT_EQ((*body)["Image"], "127.0.0.1:5000/m:1");
  EXPECT_EQ((*body)["Env"], json::array({"TEMP=manifest", "IOTEDGE_MODULEID=filter"}));
  EXPECT_EQ((*body)["Labels"]["net.cairn.owner"], "home-1");
  EXPECT_EQ((*body)["HostConfig"]["Binds"],
            json::array({"/home/mnt/filter.sock:/var/run/iotedge/workload.sock"}));
  EXPECT_EQ((*body)["HostConfig"]["RestartPolicy"]["Name"], "no");
}

TEST(MergeCreateOptions, KeepsUserSettingsAndLetsTheAgentWinOnClashes) {
  json user = json::parse(R"({
    "Env": ["TEMP=user", "USER_ONLY=1", "IOTEDGE_MODULEID=spoofed"],
    "Labels": {"app": "x", "net.cairn.owner": "spoofed"},
    "Cmd": ["sh", "-c", "true"],
    "HostConfig": {
      "Binds": ["/data:/data:ro", "/evil.sock:/var/run/iotedge/workload.sock"],
      "PortBindings": {"80/tcp": [{"HostPort": "8080"}]},
      "RestartPolicy": {"Name": "always"}
    }
  })");
  auto body = merge_create_options(user, additions());
  ASSERT_TRUE(body.ok()) << body.error().to_string();
  EXPECT_EQ((*body)["Env"],
            json::array({"TEMP=manifest", "IOTEDGE_MODULEID=filter", "USER_ONLY=1"}));
  EXPECT_EQ((*body)["Labels"]["app"], "x");
  EXPECT_EQ((*body)["Labels"]["net.cairn.owner"], "home-1");
  EXPECT_EQ((*body)["Cmd"], json::array({"sh", "-c", "true"}));
  EXPECT_EQ(
      (*body)["HostConfig"]["Binds"],
      json::array({"/data:/data:ro", "/home/mnt/filter.sock:/var/run/iotedge/workload.sock"}));
  EXPECT_EQ((*body)["HostConfig"]["PortBindings"]["80/tcp"][0]["HostPort"], "8080");
  EXPECT_EQ((*body)["HostConfig"]["RestartPolicy"]["Name"], "no");
}

TEST(MergeCreateOptions, RejectsWrongTypes) {
  for (const char* bad : {R"([])", R"({"Env": "A=1"})", R"({"Env": [1]})", R"({"Labels": []})",
                          R"({"HostConfig": []})", R"({"HostConfig": {"Binds": "x:y"}})",
                          R"({"HostConfig": {"Binds": [7]}})"}) {
    auto body = merge_create_options(json::parse(bad), additions());
    ASSERT_FALSE(body.ok()) << bad;
    EXPECT_EQ(body.error().code, errc::invalid_argument) << bad;
  }
}

// What Podman 4.3 echoes back for a container created from the body above (trimmed).
json podman_inspect() {
  return json::parse(R"({
    "Config": {
      "Image": "127.0.0.1:5000/m:1",
      "Env": ["PATH=/bin", "TEMP=manifest", "IOTEDGE_MODULEID=filter", "USER_ONLY=1",
              "container=podman", "HOSTNAME=abc"],
      "Labels": {"app": "x", "net.cairn.owner": "home-1", "io.podman.extra": "1"},
      "Cmd": ["sh", "-c", "true"],
      "ExposedPorts": {"80/tcp": {}}
    },
    "HostConfig": {
      "Binds": ["/data:/data:ro,rprivate,rbind",
                "/home/mnt/filter.sock:/var/run/iotedge/workload.sock:rw,rprivate,rbind"],
      "PortBindings": {"80/tcp": [{"HostIp": "", "HostPort": "8080"}]},
      "RestartPolicy": {"Name": "", "MaximumRetryCount": 0},
      "Ulimits": [{"Name": "RLIMIT_NOFILE", "Soft": 1024, "Hard": 2048},
                  {"Name": "RLIMIT_NPROC", "Soft": 4096, "Hard": 4096}],
      "LogConfig": {"Type": "k8s-file", "Config": null},
      "Memory": 0
    }
  })");
}

TEST(CreateOptionsDrift, NormalisedEchoIsNoDrift) {
  json desired = json::parse(R"({
    "Image": "127.0.0.1:5000/m:1",
    "Env": ["TEMP=manifest", "IOTEDGE_MODULEID=filter", "USER_ONLY=1"],
    "Labels": {"app": "x", "net.cairn.owner": "home-1"},
    "Cmd": ["sh", "-c", "true"],
    "ExposedPorts": {"80/tcp": {}},
    "HostConfig": {
      "Binds": ["/data:/data:ro", "/home/mnt/filter.sock:/var/run/iotedge/workload.sock"],
      "PortBindings": {"80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8080"}]},
      "RestartPolicy": {"Name": "no"},
      "Ulimits": [{"Name": "nofile", "Soft": 1024, "Hard": 2048}],
      "LogConfig": {"Type": "k8s-file", "Config": {"max-size": "10m"}},
      "Memory": 0
    },
    "NetworkingConfig": {"EndpointsConfig": {"azure-iot-edge": {}}}
  })");
  auto drift = create_options_drift(desired, podman_inspect());
  EXPECT_TRUE(drift.empty()) << ::testing::PrintToString(drift);
}

TEST(CreateOptionsDrift, RealChangesAreReportedByPath) {
  struct Case {
    const char* desired;
    const char* path;
  };
  for (const auto& c : {
           Case{R"({"Env": ["TEMP=other"]})", "Env"},
           Case{R"({"Labels": {"app": "y"}})", "Labels"},
           Case{R"({"Image": "127.0.0.1:5000/m:2"})", "Image"},
           Case{R"({"Cmd": ["sh"]})", "Cmd"},
           Case{R"({"HostConfig": {"Binds": ["/data:/data"]}})", "HostConfig.Binds"},
           Case{R"({"HostConfig": {"PortBindings": {"80/tcp": [{"HostPort": "9090"}]}}})",
                "HostConfig.PortBindings"},
           Case{R"({"HostConfig": {"Ulimits": [{"Name": "nofile", "Soft": 1, "Hard": 2}]}})",
                "HostConfig.Ulimits"},
           Case{R"({"HostConfig": {"RestartPolicy": {"Name": "always"}}})",
                "HostConfig.RestartPolicy"},
           Case{R"({"HostConfig": {"LogConfig": {"Type": "json-file"}}})", "HostConfig.LogConfig"},
       }) {
    auto drift = create_options_drift(json::parse(c.desired), podman_inspect());
    ASSERT_EQ(drift.size(), 1u) << c.desired << ::testing::PrintToString(drift);
    EXPECT_EQ(drift[0].rfind(std::string(c.path) + ":", 0), 0u) << drift[0];
  }
}

TEST(CreateOptionsDrift, FieldsTheEngineDoesNotReportAreSkipped) {
  auto drift =
      create_options_drift(json::parse(R"({"HostConfig": {"CpusetCpus": "0"}})"), podman_inspect());
  EXPECT_TRUE(drift.empty());
}

TEST(JsonStreamSplitter, SplitsAcrossArbitraryChunks) {
  std::string stream =
      R"({"status":"Pulling"} {"a":{"b":"}{\"\\"}}
[1,2]{"error":"x"})";
  for (std::size_t chunk = 1; chunk <= stream.size(); ++chunk) {
    JsonStreamSplitter splitter;
    std::vector<json> values;
    for (std::size_t i = 0; i < stream.size(); i += chunk) {
      ASSERT_TRUE(splitter
                      .feed(std::string_view(stream).substr(i, chunk),
                            [&](json v) { values.push_back(std::move(v)); })
                      .ok());
    }
    ASSERT_EQ(values.size(), 4u) << "chunk " << chunk;
    EXPECT_EQ(values[1]["a"]["b"], "}{\"\\");
    EXPECT_EQ(values[3]["error"], "x");
    EXPECT_EQ(splitter.pending(), 0u);
  }
}

TEST(JsonStreamSplitter, MalformedAndOversizedAreStickyErrors) {
  JsonStreamSplitter splitter;
  auto ignore = [](json) {};
  EXPECT_EQ(splitter.feed("nope", ignore).error().code, errc::invalid_argument);
  EXPECT_FALSE(splitter.feed("{}", ignore).ok());

  JsonStreamSplitter small(16);
  EXPECT_EQ(small.feed(R"({"a":"0123456789abcdef)", ignore).error().code, errc::limit_exceeded);

  JsonStreamSplitter broken;
  EXPECT_EQ(broken.feed(R"({"a":1,})", ignore).error().code, errc::invalid_argument);
}

TEST(DockerEvent, ParsesDieWithExitCode) {
  auto e = parse_docker_event(json::parse(R"({
    "status": "die", "id": "abc", "Type": "container", "Action": "die",
    "Actor": {"ID": "abc", "Attributes": {"exitCode": "3", "name": "m1", "net.cairn.owner": "h"}},
    "time": 1700000000, "timeNano": 1700000000123456789})"));
  ASSERT_TRUE(e.has_value());
  EXPECT_EQ(e->action, "die");
  EXPECT_EQ(e->id, "abc");
  EXPECT_EQ(e->name, "m1");
  EXPECT_EQ(e->exit_code, 3);
  EXPECT_EQ(e->time_ns, 1700000000123456789);
  EXPECT_EQ(e->attributes["net.cairn.owner"], "h");
}

TEST(DockerEvent, IgnoresOtherTypesAndIdlessEvents) {
  EXPECT_FALSE(parse_docker_event(json::parse(R"({"Type":"image","Action":"pull",
                                                 "Actor":{"ID":"busybox"}})")));
  EXPECT_FALSE(parse_docker_event(json::parse(R"({"Type":"container","Action":"die"})")));
  EXPECT_FALSE(parse_docker_event(json::array()));
  auto e = parse_docker_event(json::parse(R"({"Type":"container","Action":"health_status: healthy",
                                            "Actor":{"ID":"x","Attributes":{"exitCode":"z"}}})"));
  ASSERT_TRUE(e);
  EXPECT_EQ(e->action, "health_status");
  EXPECT_FALSE(e->exit_code);
}

std::string frame(int stream, const std::string& payload) {
  std::string out(8, '\0');
  out[0] = static_cast<char>(stream);
  auto n = static_cast<std::uint32_t>(payload.size());
  out[4] = static_cast<char>(n >> 24);
  out[5] = static_cast<char>((n >> 16) & 0xff);
  out[6] = static_cast<char>((n >> 8) & 0xff);
  out[7] = static_cast<char>(n & 0xff);
  return out + payload;
}

TEST(LogStream, DemultiplexesFrames) {
  std::string big(70000, 'x');
  auto frames =
      demux_log_stream(frame(1, "out1\n") + frame(1, "out2\n") + frame(2, "err\n") + frame(1, big));
  ASSERT_TRUE(frames.ok()) << frames.error().to_string();
  ASSERT_EQ(frames->size(), 3u);
  EXPECT_EQ((*frames)[0].stream, 1);
  EXPECT_EQ((*frames)[0].text, "out1\nout2\n");
  EXPECT_EQ((*frames)[1].stream, 2);
  EXPECT_EQ((*frames)[1].text, "err\n");
  EXPECT_EQ((*frames)[2].text.size(), big.size());
}

TEST(LogStream, RawTextFromTtyContainers) {
  auto frames = demux_log_stream("hello from a tty\n");
  ASSERT_TRUE(frames.ok());
  ASSERT_EQ(frames->size(), 1u);
  EXPECT_EQ((*frames)[0].text, "hello from a tty\n");
}

TEST(LogStream, TruncatedFrameIsCorruption) {
  auto whole = frame(1, "0123456789");
  for (std::size_t cut : {9u, 12u, 17u}) {
    auto frames = demux_log_stream(std::string_view(whole + whole).substr(0, whole.size() + cut));
    ASSERT_FALSE(frames.ok()) << cut;
    EXPECT_EQ(frames.error().code, errc::corruption);
  }
}

TEST(DockerError, MapsStatusesAndKeepsTheEngineWords) {
  auto e = docker_error(409, R"({"message":"name \"m1\" is in use"})", "creating container m1");
  EXPECT_EQ(e.code, errc::already_exists);
  EXPECT_NE(e.message.find("is in use"), std::string::npos);
  EXPECT_EQ(docker_error(404, "{}", "x").code, errc::not_found);
  EXPECT_EQ(docker_error(401, "", "x").code, errc::unauthorized);
  EXPECT_EQ(docker_error(500, "boom", "x").code, errc::unavailable);
  EXPECT_NE(docker_error(500, "boom", "x").message.find("boom"), std::string::npos);
}

}  // namespace
}  // namespace cairn::agent
