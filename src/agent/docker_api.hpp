// DockerClient: a blocking client of the Docker Engine API (v1.41 paths and field names) over a
// unix socket, for the agent's docker runtime; plus the pure functions around it that the
// runtime and the tests share: the container-create body built from a module's createOptions,
// the normalised comparison of desired settings against what the engine reports, and the
// parsers of the engine's streams (JSON progress/event streams, multiplexed logs).
//
// Engines: Docker (moby), and Podman's Docker-compatible service (`podman system service`),
// which is what the tests run against. Podman 4.3 differs in ways this file absorbs:
//  - a failed image pull is HTTP 200 with {"error": ...} inside the JSON progress stream, so
//    pull_image reads the stream to its end and fails on any error object in it;
//  - inspect echoes settings back normalised (ulimit names "RLIMIT_NOFILE", log options
//    dropped, bind flags "rprivate,rbind" added, default ulimits and exposed ports added), so
//    desired settings are compared through create_options_drift(), never with ==;
//  - `/containers/{id}/update` does not exist: nothing here uses it (a changed setting means
//    recreate, as IoT Edge does).
//
// Thread-safety: a DockerClient holds only its options; every call opens its own connection, so
// calls from several threads are safe, but each blocks its caller (seconds; a pull: minutes).
// Never call from an io_context thread. watch_events blocks until its `stop` says so.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/result.hpp"

namespace cairn::agent {

struct DockerOptions {
  // The engine's socket: Docker's default, or a Podman service's (unix:// prefix allowed).
  std::string socket_path = "/var/run/docker.sock";
  // Path prefix of every call. 1.41 is Docker 20.10's API, which Podman 4 serves too; newer
  // engines still accept it.
  std::string api_version = "1.41";
  // Bound on each ordinary call (inspect, create, start, remove, list, logs). Engines answer
  // these in milliseconds unless overloaded; 30 s tells a hung engine from a busy one.
  int request_timeout_secs = 30;
  // Bound on one image pull, and on silence inside its progress stream. Large images over slow
  // links take minutes; a pull blocks the agent thread for at most this long.
  int pull_timeout_secs = 600;
  // The most log bytes one logs() call returns (the newest are kept). Container logs are
  // unbounded on the engine's side; this bounds what the agent holds in memory.
  std::size_t max_log_bytes = 4 * 1024 * 1024;
  // One JSON object in a progress or event stream larger than this is an error: real objects
  // are a few hundred bytes; this stops a broken engine from growing a buffer forever.
  std::size_t max_stream_object_bytes = 1024 * 1024;
};

// Registry credentials as the manifest's registryCredentials give them.
struct DockerAuth {
  std::string address;  // "myacr.azurecr.io", "127.0.0.1:5000"
  std::string username;
  std::string password;
};

struct DockerVersion {
  std::string version;      // engine version, "20.10.24" or Podman's "4.3.1"
  std::string api_version;  // highest API version it serves, "1.41"
  std::string os;
  std::string arch;
  bool podman = false;  // a Podman engine (its Components name it)
};

struct ImageInfo {
  std::string id;  // "sha256:..."
  std::vector<std::string> repo_tags;
};

// The parts of /containers/{id}/json the agent uses, plus the whole document.
struct ContainerInfo {
  std::string id;
  std::string name;      // without Docker's leading '/'
  std::string image;     // Config.Image: the name it was created from
  std::string image_id;  // Image: "sha256:..."
  std::string status;    // State.Status: created, running, paused, restarting, exited, dead...
  bool running = false;
  int exit_code = 0;
  std::int64_t pid = 0;
  std::int64_t started_at_ms = 0;   // 0: never started
  std::int64_t finished_at_ms = 0;  // 0: has not exited
  bool oom_killed = false;
  std::string error;  // State.Error
  std::map<std::string, std::string> labels;
  nlohmann::json raw;  // the whole inspect document
};

// One entry of /containers/json.
struct ContainerSummary {
  std::string id;
  std::string name;  // first of Names, without '/'
  std::string image;
  std::string state;  // "running", "exited", ...
  std::map<std::string, std::string> labels;
};

// A container event from /events (Type "container").
struct DockerEvent {
  std::string action;            // "create", "start", "die", "stop", "kill", "destroy", ...
  std::string id;                // container id
  std::string name;              // container name, when the engine sends it (Actor.Attributes.name)
  std::optional<int> exit_code;  // "die" events: Actor.Attributes.exitCode
  std::int64_t time_ns = 0;      // timeNano (or time * 1e9)
  std::map<std::string, std::string> attributes;  // labels and name/image, as sent
};

struct DockerLogOptions {
  std::optional<std::size_t> tail;  // last N lines; none = all
  std::int64_t since_secs = 0;      // Unix seconds; 0 = from the start
  bool timestamps = false;          // the engine prefixes each line with its RFC 3339 time
};

// ---- pure functions (no I/O) -------------------------------------------------------------

// "busybox" -> "busybox:latest"; "reg:5000/a/b" -> "reg:5000/a/b:latest"; digests and explicit
// tags are kept. IoT Edge defaults the tag the same way.
std::string normalize_image_name(std::string_view image);
// The registry host of an image name, as Docker decides it: the first path component when it
// has a '.' or ':' or is "localhost", else "docker.io".
std::string image_registry(std::string_view image);
// Splits a normalised name into what /images/create takes: fromImage and tag (or digest).
std::pair<std::string, std::string> split_image_reference(std::string_view image);
// The X-Registry-Auth header value: base64url of {"username","password","serveraddress"}.
std::string registry_auth_header(const DockerAuth& auth);

// What the agent adds to a module's createOptions.
struct ContainerAdditions {
  std::string image;
  // The module's whole environment (manifest env, then the IoT Edge set). These win over an Env
  // entry of createOptions with the same name: a module cannot override its identity. The
  // first occurrence of a name wins within this list.
  std::vector<std::pair<std::string, std::string>> env;
  // Added to createOptions' Labels; these win on a clash (they find the container again).
  std::map<std::string, std::string> labels;
  // Added to HostConfig.Binds ("host:container[:options]"); a createOptions bind to the same
  // container path is replaced.
  std::vector<std::string> binds;
};

// The ContainerCreate body: `create_options` (a JSON object, or null for none) with the
// additions merged in, and HostConfig.RestartPolicy forced to "no" (the agent restarts
// modules, never the engine). errc::invalid_argument when create_options is not an object or
// a field the merge touches has the wrong type ("Env" not an array of strings...).
Result<nlohmann::json> merge_create_options(const nlohmann::json& create_options,
                                            const ContainerAdditions& additions);

// Compares a desired ContainerCreate body with an inspect document through a normalised form;
// returns one line per difference ("HostConfig.Binds: want [...], engine has [...]"), empty
// when the container matches. Rules: Env, Labels, Ulimits and ExposedPorts must be contained
// in what the engine reports (engines add defaults); Binds compare without propagation flags;
// ulimit names without "RLIMIT_" and case; port bindings with "0.0.0.0" as no host IP;
// LogConfig.Config only for keys the engine echoes; a field the engine does not report at all
// cannot be compared and is skipped. Top-level fields are looked up under Config, HostConfig
// fields under HostConfig; NetworkingConfig is not compared.
std::vector<std::string> create_options_drift(const nlohmann::json& desired,
                                              const nlohmann::json& inspect);

// Splits a stream of concatenated JSON values (an event stream, pull progress) into values,
// across arbitrary chunk boundaries. Whitespace between values is skipped.
class JsonStreamSplitter {
 public:
  explicit JsonStreamSplitter(std::size_t max_object_bytes = 1024 * 1024)
      : max_(max_object_bytes) {}
  // Feeds bytes; calls `on_value` for each complete value, in order. An error (malformed
  // JSON, a value over the size limit) is sticky: the stream is unusable after it.
  Status feed(std::string_view bytes, const std::function<void(nlohmann::json)>& on_value);
  // Bytes of an unfinished value held back (an incomplete stream end shows here).
  std::size_t pending() const { return buffer_.size(); }

 private:
  std::size_t max_;
  std::string buffer_;
  std::size_t scanned_ = 0;  // how far into buffer_ the scanner got
  int depth_ = 0;
  bool in_string_ = false;
  bool escaped_ = false;
  bool started_ = false;  // inside a value
  std::optional<Error> failed_;
};

// A container event from one /events object; nullopt for other types (image, volume...) or
// an object without an id.
std::optional<DockerEvent> parse_docker_event(const nlohmann::json& event);

// One frame of a container's log stream.
struct LogFrame {
  int stream = 1;  // 0 stdin, 1 stdout, 2 stderr
  std::string text;
};
// Decodes the engine's multiplexed log format (8-byte header: stream, 0, 0, 0, big-endian
// uint32 length; then the payload). A container with a TTY sends raw text instead: a stream
// that does not start with a valid header is returned as one stdout frame. A truncated last
// frame is errc::corruption.
Result<std::vector<LogFrame>> demux_log_stream(std::string_view bytes);

// Engine errors mapped to cairn codes: 404 not_found, 409 already_exists, 401 unauthorized,
// 403 forbidden, 400 invalid_argument, 304 (already in that state) is not an error, others
// unavailable (5xx) or io_error. `body` is the engine's {"message": ...}.
Error docker_error(int status, std::string_view body, std::string_view what);

// ---- the client ---------------------------------------------------------------------------

class DockerClient {
 public:
  explicit DockerClient(DockerOptions options);

  const DockerOptions& options() const { return options_; }

  // GET /_ping: the engine answers at all.
  Status ping();
  // GET /version.
  Result<DockerVersion> version();

  // POST /images/create, reading the progress stream to its end. `auth`, when given, goes in
  // X-Registry-Auth. errc::unauthorized when the registry refuses the credentials (or wants
  // some), errc::not_found for an unknown image, errc::unavailable when the registry or engine
  // is unreachable; the message carries the engine's words. `stop`, polled while waiting, ends
  // the pull with errc::cancelled when it returns true (the engine may finish it on its own).
  Status pull_image(const std::string& image, const std::optional<DockerAuth>& auth,
                    const std::function<bool()>& stop = {});
  // GET /images/{name}/json; errc::not_found when the engine does not have it.
  Result<ImageInfo> inspect_image(const std::string& image);

  // POST /containers/create?name=NAME with `body` (see merge_create_options). Returns the id.
  // errc::already_exists for a taken name, errc::not_found for a missing image.
  Result<std::string> create_container(const std::string& name, const nlohmann::json& body);
  // POST /containers/{id}/start; starting a running container succeeds.
  Status start_container(const std::string& id);
  // POST /containers/{id}/stop?t=GRACE; stopping a stopped container succeeds.
  Status stop_container(const std::string& id, std::chrono::seconds grace);
  // DELETE /containers/{id}?force=..&v=true (anonymous volumes go with it).
  Status remove_container(const std::string& id, bool force);
  // GET /containers/{id}/json (id or name).
  Result<ContainerInfo> inspect_container(const std::string& id);
  // GET /containers/json?all=true&filters={"label":[...]}; each label "key" or "key=value".
  Result<std::vector<ContainerSummary>> list_containers(const std::vector<std::string>& labels);
  // GET /containers/{id}/logs (stdout and stderr, not followed), demultiplexed and joined in
  // order; at most options().max_log_bytes, the newest kept.
  Result<std::string> logs(const std::string& id, const DockerLogOptions& log_options);

  // GET /events for containers with all of `labels`, since `since_secs` (0: from now), calling
  // `on_event` for each; returns when `stop()` becomes true (polled every ~200 ms; a success),
  // when on_event returns false (a success), or with an error when the stream breaks.
  Status watch_events(const std::vector<std::string>& labels, std::int64_t since_secs,
                      const std::function<bool(const DockerEvent&)>& on_event,
                      const std::function<bool()>& stop);

 private:
  std::string path(std::string_view rest) const;
  DockerOptions options_;
};

}  // namespace cairn::agent
