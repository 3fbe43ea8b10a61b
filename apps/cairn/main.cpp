// cairn: the command line for a local cairnd, over its management socket (HOME/run/mgmt.sock),
// and for a cairn-cloud, over its REST API with a service connection string (--cloud).
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <optional>
#include <sstream>
#include <thread>
#include <vector>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "core/crypto.hpp"
#include "modelpkg/fetch.hpp"
#include "modelpkg/pack.hpp"
#include "modelpkg/signing.hpp"
#include "net/http.hpp"
#include "net/http_session.hpp"
#include "net/service_client.hpp"

namespace {

using namespace cairn;

struct Context {
  std::string home;
  std::string socket() const { return home + "/run/mgmt.sock"; }
};

// The error text of a JSON error body ({"error"} from cairnd, {"message"} or IoT Hub's
// {"Message"}), or the body itself.
std::string error_text(const nlohmann::json& j, const std::string& body) {
  if (j.is_object()) {
    for (const char* key : {"error", "message", "Message"}) {
      if (j.contains(key) && j[key].is_string()) return j[key].get<std::string>();
    }
  }
  return body;
}

std::optional<nlohmann::json> answer(const Result<net::HttpResponse>& r) {
  if (!r) {
    std::cerr << "cairn: " << r.error().message << "\n";
    return std::nullopt;
  }
  auto j =
      r->body.empty() ? nlohmann::json::object() : nlohmann::json::parse(r->body, nullptr, false);
  if (r->status >= 300) {
    std::cerr << "cairn: " << error_text(j, r->body) << " (HTTP " << r->status << ")\n";
    return std::nullopt;
  }
  if (j.is_discarded()) {
    std::cerr << "cairn: the server answered something that is not JSON\n";
    return std::nullopt;
  }
  return j;
}

// Sends a request to cairnd and returns the JSON body, or prints the error and returns nullopt.
std::optional<nlohmann::json> call(const Context& ctx, const std::string& method,
                                   const std::string& target, const std::string& body = "") {
  net::HttpRequest request;
  request.method = method;
  request.target = target;
  request.body = body;
  return answer(net::unix_http_request(ctx.socket(), request));
}

// `cairn cloud model push`: packs FILE into a temporary directory, uploads the chunks the
// cloud's model store lacks over one kept connection, then commits the index (the store adds
// deltas from earlier versions). With `sign_key`, the index the store committed (it rewrites
// it: stored sizes, deltas) is read back, checked to describe the file that was packed, signed
// here and its signature stored beside it: the private key never leaves the publisher.
// Prints one line of JSON; returns the exit code.
int push_model(const net::ServiceClient& service, const std::string& file, const std::string& name,
               const std::string& version, const std::string& sign_key, bool quiet) {
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::path tmp = fs::temp_directory_path(ec) /
                 ("cairn-push-" + crypto::sha256_hex(crypto::random_bytes(8)).substr(0, 12));
  if (ec || !fs::create_directories(tmp, ec)) {
    std::cerr << "cairn: cannot create a temporary directory (set TMPDIR): " << ec.message()
              << "\n";
    return 1;
  }
  struct Cleanup {
    fs::path dir;
    ~Cleanup() {
      std::error_code ignored;
      fs::remove_all(dir, ignored);
    }
  } cleanup{tmp};
  if (!quiet) std::cerr << "cairn: packing " << file << "\n";
  modelpkg::PackOptions options;
  options.name = name;
  options.version = version;
  options.out_dir = tmp.string();
  options.delta_versions = 0;  // the store makes deltas: it holds the earlier versions
  auto packed = modelpkg::pack_model(file, options);
  if (!packed) {
    std::cerr << "cairn: " << packed.error().message << "\n";
    return packed.error().code == errc::invalid_argument ? 2 : 1;
  }
  if (!sign_key.empty()) {
    // A key that cannot sign is found out before anything is uploaded.
    if (auto probe = modelpkg::sign_bytes(sign_key, name); !probe) {
      std::cerr << "cairn: " << probe.error().message << "\n";
      return 2;
    }
  }
  net::HttpSession session(service.server, 600);
  auto send = [&](std::string method, std::string target, std::string body,
                  std::string content_type,
                  std::string if_match = {}) -> std::optional<nlohmann::json> {
    auto token = service.token();
    if (!token) {
      std::cerr << "cairn: " << token.error().message << "\n";
      return std::nullopt;
    }
    net::HttpRequest r{std::move(method), std::move(target), std::move(body)};
    r.headers = {{"Authorization", *token}, {"Content-Type", std::move(content_type)}};
    if (!if_match.empty()) r.headers.emplace_back("If-Match", std::move(if_match));
    return answer(session.request(r));
  };
  // The store checks the index and names the chunks it lacks.
  std::ifstream index_in(packed->index_path, std::ios::binary);
  std::stringstream cidx;
  cidx << index_in.rdbuf();
  const std::string version_path =
      "/cairn/models/" + crypto::url_encode(name) + "/versions/" + crypto::url_encode(version);
  auto wanted = send("POST", version_path + "/missing", cidx.str(), "application/octet-stream");
  if (!wanted) return 1;
  std::vector<std::string> missing;
  for (const auto& h : (*wanted)["missing"]) missing.push_back(h.get<std::string>());
  std::uint64_t uploaded = 0;
  for (std::size_t i = 0; i < missing.size(); ++i) {
    std::ifstream in(tmp / modelpkg::chunk_path(missing[i]), std::ios::binary);
    std::stringstream bytes;
    bytes << in.rdbuf();
    if (!in) {
      std::cerr << "cairn: cannot read the packed chunk " << missing[i] << "\n";
      return 1;
    }
    uploaded += bytes.str().size();
    if (!send("PUT", "/cairn/models/chunks/" + missing[i], bytes.str(),
              "application/octet-stream")) {
      return 1;
    }
    if (!quiet) {
      std::cerr << "\rcairn: uploaded " << i + 1 << "/" << missing.size() << " chunks, " << uploaded
                << " B" << std::flush;
    }
  }
  if (!quiet && !missing.empty()) std::cerr << "\n";
  if (!quiet) std::cerr << "cairn: committing " << name << " version " << version << "\n";
  auto j = send("PUT", version_path, cidx.str(), "application/octet-stream");
  if (!j) return 1;
  if (!sign_key.empty()) {
    if (!quiet) std::cerr << "cairn: signing the stored index\n";
    net::HttpRequest get{"GET", "/" + j->value("index", std::string()), ""};
    auto stored = session.request(get);
    if (!stored || stored->status != 200) {
      std::cerr << "cairn: cannot read back the stored index to sign it: "
                << (stored ? "HTTP " + std::to_string(stored->status) : stored.error().message)
                << "\n";
      return 1;
    }
    auto committed = modelpkg::decode_index(stored->body);
    auto pushed = modelpkg::decode_index(cidx.str());
    auto hashes = [](const modelpkg::ModelIndex& idx) {
      std::vector<std::string> out;
      for (const auto& c : idx.chunks) out.push_back(c.hash);
      return out;
    };
    // Only what was packed is signed: same file (size, SHA-256) from the same chunks.
    if (!committed || !pushed || committed->name != name || committed->version != version ||
        committed->sha256 != pushed->sha256 || committed->size != pushed->size ||
        hashes(*committed) != hashes(*pushed)) {
      std::cerr << "cairn: the stored index of " << name << " version " << version
                << " does not describe the pushed file: not signed\n";
      return 1;
    }
    auto signature = modelpkg::sign_bytes(sign_key, stored->body);
    if (!signature) {
      std::cerr << "cairn: " << signature.error().message << "\n";
      return 1;
    }
    // Names the bytes signed: if the version was removed and pushed again meanwhile, the
    // store refuses (412) rather than put this signature beside another index.
    if (!send("PUT", version_path + "/signature", *signature, "text/plain",
              "\"" + crypto::sha256_hex(stored->body) + "\"")) {
      return 1;
    }
    (*j)["signed"] = true;
  }
  const auto& server = service.server;
  (*j)["chunksUploaded"] = missing.size();
  (*j)["bytesUploaded"] = uploaded;
  (*j)["url"] = "https://" + server.host + ":" + std::to_string(server.port) + "/" +
                j->value("index", std::string());
  std::cout << j->dump() << "\n";
  return 0;
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
  auto* deadletters = app.add_subcommand(
      "deadletters", "List messages set aside as undeliverable (endpoint, reason, time) as JSON");

  auto* twin = app.add_subcommand("twin", "Module twins cached on this device");
  twin->require_subcommand(1);
  std::string patch;
  auto* twin_get = twin->add_subcommand("get", "Print MODULE's twin (desired and reported)");
  twin_get->add_option("MODULE", module, "Module name")->required();
  auto* twin_desired = twin->add_subcommand(
      "update-desired", "Apply a desired-properties merge patch (devices without a cloud)");
  twin_desired->add_option("MODULE", module, "Module name")->required();
  twin_desired->add_option("PATCH", patch, "JSON merge patch, e.g. '{\"rate\":5}'")->required();

  auto* method = app.add_subcommand("method", "Invoke a direct method on a connected module");
  std::string method_name, payload = "null";
  int response_timeout = 30, connect_timeout = 0;
  method->add_option("MODULE", module, "Module name")->required();
  method->add_option("METHOD", method_name, "Method name")->required();
  method->add_option("PAYLOAD", payload, "JSON payload")->capture_default_str();
  method->add_option("--timeout", response_timeout, "Seconds to wait for the answer (5..300)")
      ->capture_default_str();
  method
      ->add_option("--connect-timeout", connect_timeout,
                   "Seconds to wait for the module to connect (0..300)")
      ->capture_default_str();

  auto* deploy = app.add_subcommand(
      "deploy", "Deploy an IoT Edge manifest: all or nothing; every problem is printed");
  std::string deploy_file;
  deploy->add_option("FILE", deploy_file, "Deployment manifest (JSON)")->required();
  auto* modules_list =
      app.add_subcommand("list", "List deployed modules (name, status, description, version)");
  bool list_json = false;
  modules_list->add_flag("--json", list_json, "Print the modules as JSON");
  auto* logs = app.add_subcommand("logs", "Print a module's output");
  std::string logs_module, logs_tail = "all", logs_since;
  bool logs_follow = false;
  logs->add_option("MODULE", logs_module, "Module name")->required();
  logs->add_option("--tail", logs_tail, "Last N lines, or 'all'")->capture_default_str();
  logs->add_option(
      "--since", logs_since,
      "Only output written since: seconds ago ('90'), or Unix seconds ('@1700000000')");
  logs->add_flag("-f,--follow", logs_follow, "Keep printing new output until interrupted");
  auto* restart = app.add_subcommand("restart", "Stop and start a module");
  std::string restart_module;
  restart->add_option("MODULE", restart_module, "Module name")->required();

  auto* check = app.add_subcommand(
      "check",
      "Check the store, certificates, the cloud link and the module runtime (engine reachable, "
      "images present, modules healthy); exit 1 if something is wrong");
  bool check_json = false;
  check->add_flag("--json", check_json, "Print the checks as JSON");

  std::string cloud_connection, cloud_ca;
  std::uint16_t cloud_port = 443;
  auto* cloud =
      app.add_subcommand("cloud", "Talk to a cairn-cloud with a service connection string");
  cloud->add_option("--connection-string", cloud_connection,
                    "HostName=...;SharedAccessKeyName=...;SharedAccessKey=... (env CAIRN_CLOUD)");
  cloud->add_option("--ca", cloud_ca, "PEM file that verifies the cloud's certificate");
  cloud->add_option("--port", cloud_port, "REST port")->capture_default_str();
  cloud->require_subcommand(1);
  auto* devices = cloud->add_subcommand("devices", "List device identities");
  std::string device_id;
  auto* device_create = cloud->add_subcommand("device-create", "Create a device identity");
  device_create->add_option("DEVICE", device_id, "Device id")->required();
  bool edge = false;
  device_create->add_flag("--edge", edge, "The device runs cairnd (an edge device)");
  // Revocation: each closes the identity's live connections at once.
  std::string identity_id;
  auto* cloud_delete = cloud->add_subcommand(
      "delete", "Delete DEVICE (with its modules) or DEVICE/MODULE; its connections are closed");
  cloud_delete->add_option("ID", identity_id, "DEVICE or DEVICE/MODULE")->required();
  auto* cloud_disable = cloud->add_subcommand(
      "disable", "Disable DEVICE: it and its modules are disconnected and refused");
  cloud_disable->add_option("DEVICE", identity_id, "Device id")->required();
  auto* cloud_enable = cloud->add_subcommand("enable", "Enable a disabled DEVICE again");
  cloud_enable->add_option("DEVICE", identity_id, "Device id")->required();
  std::string which_key = "primary";
  auto* cloud_regenerate = cloud->add_subcommand(
      "regenerate-key",
      "New primary or secondary key (or swap them) for DEVICE or DEVICE/MODULE; connections "
      "made with the old keys are closed");
  cloud_regenerate->add_option("ID", identity_id, "DEVICE or DEVICE/MODULE")->required();
  cloud_regenerate->add_option("--key", which_key, "primary, secondary or swap")
      ->capture_default_str();
  std::string twin_id;
  auto* cloud_twin = cloud->add_subcommand("twin", "Print the twin of DEVICE or DEVICE/MODULE");
  cloud_twin->add_option("ID", twin_id, "DEVICE or DEVICE/MODULE")->required();
  auto* cloud_desired = cloud->add_subcommand(
      "twin-update", "Merge a patch into the desired properties of DEVICE or DEVICE/MODULE");
  cloud_desired->add_option("ID", twin_id, "DEVICE or DEVICE/MODULE")->required();
  cloud_desired->add_option("PATCH", patch, "JSON merge patch, e.g. '{\"rate\":5}'")->required();
  auto* cloud_method =
      cloud->add_subcommand("method", "Invoke a direct method on a device or module");
  cloud_method->add_option("ID", twin_id, "DEVICE or DEVICE/MODULE")->required();
  cloud_method->add_option("METHOD", method_name, "Method name")->required();
  cloud_method->add_option("PAYLOAD", payload, "JSON payload")->capture_default_str();
  cloud_method->add_option("--timeout", response_timeout, "Seconds to wait for the answer")
      ->capture_default_str();
  auto* messages = cloud->add_subcommand("messages", "Device-to-cloud messages the cloud stored");
  messages->require_subcommand(1);
  auto* tail = messages->add_subcommand("tail", "Print stored messages as JSON lines");
  int limit = 100;
  bool follow = false;
  tail->add_option("--device", device_id, "Only this device");
  tail->add_option("--limit", limit, "At most this many (newest last)")->capture_default_str();
  tail->add_flag("-f,--follow", follow, "Keep printing new messages");

  auto* cloud_model = cloud->add_subcommand("model", "The cloud's model store");
  cloud_model->require_subcommand(1);
  std::string push_file, push_name, push_version;
  bool push_quiet = false, models_json = false;
  auto* model_push = cloud_model->add_subcommand(
      "push", "Store FILE as a model version; only chunks the store lacks are uploaded");
  model_push->add_option("FILE", push_file, "Model file (ONNX, TFLite or any file)")->required();
  model_push->add_option("--name", push_name, "Model name")->required();
  model_push->add_option("--version", push_version, "Version label")->required();
  std::string push_key;
  model_push->add_option("--sign-key", push_key,
                         "PEM Ed25519 private key: sign the index the store committed (devices "
                         "with the public key then accept it)");
  model_push->add_flag("-q,--quiet", push_quiet, "No progress output");
  auto* model_list = cloud_model->add_subcommand("list", "List the stored model versions");
  model_list->add_flag("--json", models_json, "Print the store's listing as JSON");
  std::string delete_name, delete_version;
  auto* model_delete = cloud_model->add_subcommand(
      "delete", "Remove a stored model version, and the chunks and deltas no other version uses");
  model_delete->add_option("--name", delete_name, "Model name")->required();
  model_delete->add_option("--version", delete_version, "Version label")->required();

  // Model packaging and fetching (src/modelpkg; formats in docs/modelpkg.md).
  std::string model_file, model_name, model_version, model_out, model_key, model_store;
  auto* model = app.add_subcommand("model", "Pack a model for incremental delivery, or fetch one");
  model->require_subcommand(1);
  std::size_t delta_versions = 3;
  auto* model_pack = model->add_subcommand(
      "pack", "Write FILE's chunks, deltas from earlier versions and index into --out DIR");
  model_pack->add_option("FILE", model_file, "Model file (ONNX, TFLite or any file)")->required();
  model_pack->add_option("--name", model_name, "Model name")->required();
  model_pack->add_option("--version", model_version, "Version label")->required();
  model_pack->add_option("--out", model_out, "Publish directory")->required();
  model_pack->add_option("--sign-key", model_key, "PEM Ed25519 private key: sign the index");
  model_pack
      ->add_option("--delta-versions", delta_versions, "Earlier versions to write deltas from")
      ->capture_default_str();
  std::string index_url;
  modelpkg::FetchOptions fetch_options;
  bool insecure = false, no_deltas = false, quiet = false;
  auto* model_fetch = model->add_subcommand(
      "fetch", "Download the model INDEX_URL describes, reusing what --store holds");
  model_fetch->add_option("INDEX_URL", index_url, "http(s) URL of NAME-VERSION.cidx")->required();
  model_fetch->add_option("--out", model_out, "Model file to write (atomically)")->required();
  model_fetch->add_option("--store", model_store, "Chunk store (default: HOME/chunks)");
  model_fetch->add_option("--public-key", fetch_options.public_key,
                          "PEM Ed25519 public key: refuse unsigned or wrongly signed indexes");
  model_fetch->add_option("--ca", fetch_options.ca_file, "PEM CA bundle for https URLs");
  model_fetch->add_flag("--insecure", insecure, "Do not verify the TLS certificate (tests only)");
  model_fetch->add_option("--parallel", fetch_options.parallel, "Requests in flight")
      ->capture_default_str();
  model_fetch
      ->add_option("--store-max-bytes", fetch_options.store_max_bytes, "Chunk store cap (0: none)")
      ->capture_default_str();
  model_fetch->add_flag("--no-deltas", no_deltas, "Download chunks only");
  bool no_keep_alive = false;
  model_fetch->add_flag("--no-keep-alive", no_keep_alive,
                        "A new connection per request (for comparison)");
  model_fetch->add_flag("-q,--quiet", quiet, "No progress line");
  std::string private_key_path, public_key_path;
  auto* model_keygen =
      model->add_subcommand("keygen", "Write a new Ed25519 key pair for signing model indexes");
  model_keygen->add_option("--private", private_key_path, "Private key file (PEM)")->required();
  model_keygen->add_option("--public", public_key_path, "Public key file (PEM)")->required();

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int code = app.exit(e);
    return code == 0 ? 0 : 2;
  }

  if (model_pack->parsed()) {
    modelpkg::PackOptions options;
    options.name = model_name;
    options.version = model_version;
    options.out_dir = model_out;
    options.signing_key = model_key;
    options.delta_versions = delta_versions;
    auto r = modelpkg::pack_model(model_file, options);
    if (!r) {
      std::cerr << "cairn: " << r.error().message << "\n";
      return r.error().code == errc::invalid_argument ? 2 : 1;
    }
    std::cout << nlohmann::json{{"index", r->index_path},
                                {"index_bytes", r->index_bytes},
                                {"format", r->format},
                                {"tensors", r->tensors},
                                {"size", r->index.size},
                                {"sha256", r->index.sha256},
                                {"chunks", r->chunks},
                                {"chunks_written", r->chunks_written},
                                {"chunk_bytes", r->chunk_bytes},
                                {"deltas", r->deltas_written},
                                {"delta_bytes", r->delta_bytes},
                                {"index_deltas", r->index_deltas_written},
                                {"index_delta_bytes", r->index_delta_bytes}}
                     .dump()
              << "\n";
    return 0;
  }
  if (model_fetch->parsed()) {
    fetch_options.verify_tls = !insecure;
    fetch_options.use_deltas = !no_deltas;
    fetch_options.keep_alive = !no_keep_alive;
    if (model_store.empty()) model_store = ctx.home + "/chunks";
    auto last_print = std::chrono::steady_clock::time_point{};
    auto progress = [&](const modelpkg::FetchProgress& p) {
      if (quiet) return;
      auto now = std::chrono::steady_clock::now();
      if (p.pieces_done != p.pieces_total && now - last_print < std::chrono::milliseconds(200)) {
        return;
      }
      last_print = now;
      std::cerr << "\rcairn: model " << p.pieces_done << "/" << p.pieces_total << " pieces, needed "
                << p.needed << " B, reused " << p.reused << " B, downloaded " << p.downloaded
                << " B" << std::flush;
    };
    auto r = modelpkg::fetch_model(index_url, model_out, model_store, fetch_options, progress);
    if (!quiet) std::cerr << "\n";
    if (!r) {
      std::cerr << "cairn: " << r.error().message << "\n";
      return r.error().code == errc::invalid_argument ? 2 : 1;
    }
    std::cout << r->to_json() << "\n";
    return 0;
  }
  if (model_keygen->parsed()) {
    if (auto s = modelpkg::generate_signing_key(private_key_path, public_key_path); !s) {
      std::cerr << "cairn: " << s.error().message << "\n";
      return 1;
    }
    return 0;
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
  } else if (deadletters->parsed()) {
    auto j = call(ctx, "GET", "/deadletters");
    if (!j) return 1;
    std::cout << j->dump(2) << "\n";
  } else if (twin_get->parsed()) {
    auto j = call(ctx, "GET", "/twins/" + crypto::url_encode(module));
    if (!j) return 1;
    std::cout << j->dump(2) << "\n";
  } else if (twin_desired->parsed()) {
    auto j = call(ctx, "PATCH", "/twins/" + crypto::url_encode(module) + "/desired", patch);
    if (!j) return 1;
    std::cout << j->dump() << "\n";
  } else if (method->parsed()) {
    auto body = nlohmann::json::parse(payload, nullptr, false);
    if (body.is_discarded()) {
      std::cerr << "cairn: PAYLOAD is not JSON (strings need quotes: '\"text\"')\n";
      return 2;
    }
    nlohmann::json request{{"methodName", method_name},
                           {"payload", body},
                           {"responseTimeoutInSeconds", response_timeout},
                           {"connectTimeoutInSeconds", connect_timeout}};
    auto j = call(ctx, "POST", "/methods/" + crypto::url_encode(module), request.dump());
    if (!j) return 1;
    std::cout << j->dump() << "\n";
    return (*j)["status"].is_number_integer() && (*j)["status"].get<int>() < 300 ? 0 : 1;
  } else if (deploy->parsed()) {
    std::ifstream in(deploy_file);
    if (!in) {
      std::cerr << "cairn: " << deploy_file << ": cannot open\n";
      return 1;
    }
    std::stringstream text;
    text << in.rdbuf();
    net::HttpRequest request{"POST", "/deployment", text.str()};
    auto r = net::unix_http_request(ctx.socket(), request, 120);
    if (!r) {
      std::cerr << "cairn: " << r.error().message << "\n";
      return 1;
    }
    auto j = nlohmann::json::parse(r->body, nullptr, false);
    if (r->status == 400 && j.is_object() && j.contains("problems")) {
      std::cerr << "cairn: " << deploy_file << " was not deployed (nothing changed):\n";
      for (const auto& p : j["problems"]) {
        std::cerr << "  " << p.value("path", "") << ": " << p.value("message", "") << "\n";
      }
      return 1;
    }
    if (!answer(r)) return 1;
    std::cout << "deployed " << deploy_file << "\n";
  } else if (modules_list->parsed()) {
    auto j = call(ctx, "GET", "/modules");
    if (!j) return 1;
    if (list_json) {
      std::cout << (*j)["modules"].dump(2) << "\n";
      return 0;
    }
    std::printf("%-24s %-10s %-50s %s\n", "NAME", "STATUS", "DESCRIPTION", "VERSION");
    for (const auto& m : (*j)["modules"]) {
      std::printf("%-24s %-10s %-50s %s\n", m.value("name", "").c_str(),
                  m.value("runtimeStatus", "").c_str(), m.value("statusDescription", "").c_str(),
                  m.value("version", "").c_str());
    }
  } else if (logs->parsed()) {
    std::int64_t since = 0;
    if (!logs_since.empty()) {
      try {
        since = logs_since[0] == '@'
                    ? std::stoll(logs_since.substr(1))
                    : static_cast<std::int64_t>(std::time(nullptr)) - std::stoll(logs_since);
      } catch (const std::exception&) {
        std::cerr << "cairn: --since takes seconds ago or @UNIX_SECONDS\n";
        return 2;
      }
    }
    std::string target = "/modules/" + crypto::url_encode(logs_module) +
                         "/logs?tail=" + crypto::url_encode(logs_tail);
    if (since > 0) target += "&since=" + std::to_string(since);
    net::HttpRequest request{"GET", target, ""};
    auto r = net::unix_http_request(ctx.socket(), request);
    if (!r || r->status >= 300) return answer(r) ? 0 : 1;
    std::cout << r->body << std::flush;
    // Follow: poll for the output written since, printing only what is new.
    std::size_t printed = r->body.size();
    std::string last = r->body;
    while (logs_follow) {
      std::this_thread::sleep_for(std::chrono::milliseconds(500));
      auto next = net::unix_http_request(ctx.socket(), net::HttpRequest{"GET", target, ""});
      if (!next || next->status >= 300) return answer(next) ? 0 : 1;
      const auto& body = next->body;
      if (body.size() >= printed && body.compare(0, printed, last, 0, printed) == 0) {
        std::cout << body.substr(printed) << std::flush;
      } else {
        std::cout << body << std::flush;  // rotated or tail window moved: print it again
      }
      printed = body.size();
      last = body;
    }
  } else if (restart->parsed()) {
    if (!call(ctx, "POST", "/modules/" + crypto::url_encode(restart_module) + "/restart")) return 1;
    std::cout << "restarted " << restart_module << "\n";
  } else if (check->parsed()) {
    auto j = call(ctx, "GET", "/check");
    if (!j) return 1;
    // The runtime (the agent's checks): engines reachable, images present, modules healthy.
    if (auto runtime = call(ctx, "GET", "/runtime/check")) {
      for (const auto& c : (*runtime)["checks"]) {
        if (c.value("status", "") == "error") (*j)["healthy"] = false;
        (*j)["checks"].push_back(c);
      }
    } else {
      (*j)["healthy"] = false;
    }
    if (check_json) {
      std::cout << j->dump(2) << "\n";
    } else {
      for (const auto& c : (*j)["checks"]) {
        const auto level = c["status"].get<std::string>();
        std::cout << (level == "ok"        ? "  ok    "
                      : level == "warning" ? "  warn  "
                                           : "  FAIL  ")
                  << c["id"].get<std::string>() << ": " << c["message"].get<std::string>() << "\n";
      }
    }
    return (*j)["healthy"].get<bool>() ? 0 : 1;
  } else if (cloud->parsed()) {
    if (cloud_connection.empty()) {
      const char* env = std::getenv("CAIRN_CLOUD");
      if (env) cloud_connection = env;
    }
    auto service = net::ServiceClient::from_connection_string(cloud_connection);
    if (!service) {
      std::cerr << "cairn: --connection-string (or CAIRN_CLOUD): " << service.error().message
                << "\n";
      return 2;
    }
    service->server.ca_file = cloud_ca;
    service->server.port = cloud_port;
    auto cloud_call = [&](std::string verb, std::string target, std::string body = {}) {
      return answer(service->request(std::move(verb), std::move(target), std::move(body)));
    };
    if (model_push->parsed()) {
      return push_model(*service, push_file, push_name, push_version, push_key, push_quiet);
    } else if (model_delete->parsed()) {
      auto j = cloud_call("DELETE", "/cairn/models/" + crypto::url_encode(delete_name) +
                                        "/versions/" + crypto::url_encode(delete_version));
      if (!j) return 1;
      std::cout << j->dump() << "\n";
    } else if (model_list->parsed()) {
      auto j = cloud_call("GET", "/cairn/models");
      if (!j) return 1;
      if (models_json) {
        std::cout << j->dump(2) << "\n";
        return 0;
      }
      for (const auto& m : (*j)["models"]) {
        std::cout << m["name"].get<std::string>() << "\t" << m["version"].get<std::string>() << "\t"
                  << m["size"] << "\thttps://" << service->server.host << ":"
                  << service->server.port << "/" << m["index"].get<std::string>() << "\n";
      }
    } else if (devices->parsed()) {
      auto j = cloud_call("GET", "/devices?api-version=2021-04-12");
      if (!j) return 1;
      for (const auto& d : *j) {
        std::cout << d["deviceId"].get<std::string>() << "\t"
                  << d.value("connectionState", std::string()) << "\n";
      }
    } else if (device_create->parsed()) {
      nlohmann::json body{{"deviceId", device_id}, {"capabilities", {{"iotEdge", edge}}}};
      auto j =
          cloud_call("PUT", "/devices/" + crypto::url_encode(device_id) + "?api-version=2021-04-12",
                     body.dump());
      if (!j) return 1;
      std::cout << j->dump(2) << "\n";
    } else if (cloud_delete->parsed() || cloud_regenerate->parsed()) {
      // "d/m" → /devices/d/modules/m; "d" → /devices/d
      auto slash = identity_id.find('/');
      std::string path = "/devices/" + crypto::url_encode(identity_id.substr(0, slash));
      if (slash != std::string::npos) {
        path += "/modules/" + crypto::url_encode(identity_id.substr(slash + 1));
      }
      if (cloud_delete->parsed()) {
        if (!cloud_call("DELETE", path + "?api-version=2021-04-12")) return 1;
        std::cout << "deleted " << identity_id << "\n";
        return 0;
      }
      auto j = cloud_call("POST", "/cairn" + path + "/regenerateKey",
                          nlohmann::json{{"key", which_key}}.dump());
      if (!j) return 1;
      std::cout << j->dump(2) << "\n";
    } else if (cloud_disable->parsed() || cloud_enable->parsed()) {
      // If-Match "*": an update of whatever version is stored; keys and the rest are kept.
      net::HttpRequest request;
      request.method = "PUT";
      request.target = "/devices/" + crypto::url_encode(identity_id) + "?api-version=2021-04-12";
      request.body = nlohmann::json{{"deviceId", identity_id},
                                    {"status", cloud_disable->parsed() ? "disabled" : "enabled"}}
                         .dump();
      auto service_token = service->token();
      if (!service_token) {
        std::cerr << "cairn: " << service_token.error().message << "\n";
        return 1;
      }
      request.headers = {{"Authorization", *service_token}, {"If-Match", "*"}};
      auto j = answer(net::http_request(service->server, request));
      if (!j) return 1;
      std::cout << j->dump(2) << "\n";
    } else if (cloud_twin->parsed() || cloud_desired->parsed() || cloud_method->parsed()) {
      // "d/m" → /twins/d/modules/m; "d" → /twins/d
      auto slash = twin_id.find('/');
      std::string path = "/twins/" + crypto::url_encode(twin_id.substr(0, slash));
      if (slash != std::string::npos) {
        path += "/modules/" + crypto::url_encode(twin_id.substr(slash + 1));
      }
      std::optional<nlohmann::json> j;
      if (cloud_twin->parsed()) {
        j = cloud_call("GET", path + "?api-version=2021-04-12");
      } else if (cloud_desired->parsed()) {
        auto desired = nlohmann::json::parse(patch, nullptr, false);
        if (desired.is_discarded()) {
          std::cerr << "cairn: PATCH is not JSON\n";
          return 2;
        }
        j = cloud_call("PATCH", path + "?api-version=2021-04-12",
                       nlohmann::json{{"properties", {{"desired", desired}}}}.dump());
      } else {
        auto body = nlohmann::json::parse(payload, nullptr, false);
        if (body.is_discarded()) {
          std::cerr << "cairn: PAYLOAD is not JSON (strings need quotes: '\"text\"')\n";
          return 2;
        }
        j = cloud_call("POST", path + "/methods?api-version=2021-04-12",
                       nlohmann::json{{"methodName", method_name},
                                      {"payload", body},
                                      {"responseTimeoutInSeconds", response_timeout}}
                           .dump());
      }
      if (!j) return 1;
      std::cout << j->dump(2) << "\n";
    } else if (tail->parsed()) {
      std::string after;
      for (;;) {
        std::string target = "/cairn/messages?limit=" + std::to_string(limit);
        if (!device_id.empty()) target += "&deviceId=" + crypto::url_encode(device_id);
        if (!after.empty()) target += "&after=" + after;
        auto j = cloud_call("GET", target);
        if (!j) return 1;
        const auto& batch = j->is_array() ? *j : (*j)["messages"];
        for (const auto& m : batch) {
          std::cout << m.dump() << "\n";
          // The cursor: GET /cairn/messages?after=SEQ returns what was stored after it.
          if (auto seq = m.find("seq"); seq != m.end() && seq->is_number_integer()) {
            after = seq->dump();
          }
        }
        std::cout.flush();
        if (!follow) break;
        std::this_thread::sleep_for(std::chrono::seconds(1));
      }
    }
  }
  return 0;
}
