#include "infer/rest_api.hpp"

#include <algorithm>
#include <charconv>

#include <fmt/format.h>

#include "core/log.hpp"
#include "infer/json_envelope.hpp"

namespace cairn::infer {

namespace {

constexpr std::string_view kLog = "infer";

net::HttpResponse json_response(int status, const nlohmann::json& body) {
  net::HttpResponse r;
  r.status = status;
  r.body = body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  return r;
}

net::HttpResponse error_response(int status, const std::string& message) {
  return json_response(status, {{"error", message}});
}

// The one mapping from cairn errors to HTTP statuses for this API.
int http_status(errc code) {
  switch (code) {
    case errc::invalid_argument:
      return 400;
    case errc::not_found:
      return 404;
    case errc::limit_exceeded:
      return 429;
    case errc::unavailable:
      return 503;
    case errc::timeout:
      return 504;
    default:
      return 500;
  }
}

net::HttpResponse error_response(const Error& e) {
  return error_response(http_status(e.code), e.message);
}

std::vector<std::string> split_path(const std::string& path) {
  std::vector<std::string> parts;
  std::size_t pos = 1;
  while (pos <= path.size()) {
    auto next = path.find('/', pos);
    if (next == std::string::npos) next = path.size();
    if (next > pos) parts.push_back(path.substr(pos, next - pos));
    pos = next + 1;
  }
  return parts;
}

// A tensor's data: an array the envelope kept as text (read straight into the tensor and, when
// read in full, marked as checked JSON), or a JSON value.
Status read_tensor(const nlohmann::json& data, JsonEnvelope* envelope, bool infer_shape,
                   Tensor& t) {
  if (envelope) {
    if (auto text = envelope->kept_text(data)) {
      CAIRN_TRY(tensor_from_json_text(*text, infer_shape, t));
      envelope->mark_read(data);
      return {};
    }
  }
  return tensor_from_json(data, infer_shape, t);
}

// Ends the decoding of an envelope: a body that is not JSON in full is refused as such, whatever
// the decoder made of the parts it read.
template <class T>
Result<T> checked(Result<T> decoded, const JsonEnvelope& envelope) {
  CAIRN_TRY(envelope.check_unread());
  return decoded;
}

const char* platform_of(std::string_view engine) {
  return engine == "armnn-tflite" ? "tflite" : "onnxruntime_onnx";
}

nlohmann::json metadata(const ModelInfo& info, const VersionInfo& v) {
  nlohmann::json in = nlohmann::json::array();
  for (const auto& t : v.inputs) in.push_back(to_json(t));
  nlohmann::json out = nlohmann::json::array();
  for (const auto& t : v.outputs) out.push_back(to_json(t));
  nlohmann::json versions = nlohmann::json::array();
  for (const auto& x : info.versions) versions.push_back(x.version);
  return {{"name", info.name},
          {"versions", versions},
          {"platform", platform_of(v.engine)},
          {"inputs", in},
          {"outputs", out}};
}

const VersionInfo* pick_version(const ModelInfo& info, const std::string& version) {
  for (const auto& v : info.versions) {
    if (version.empty() ? v.serving : v.version == version) return &v;
  }
  return nullptr;
}

// A request body as the decoder sees it. A request run inline is decoded from the HTTP
// request's own body, which outlives the run; one queued for a worker takes that body, in
// own() when the manager queues it (SubmitOptions::before_queue): a move, not a copy of
// megabytes under the model's lock.
struct Shared {
  std::string_view body;
  std::string owned;
  std::string* source = nullptr;  // the HTTP request's body, which `body` views
  // body[0, binary_offset) is the JSON part, the binary tensors follow (the whole body without
  // the binary extension). Parsed in place: a body may be megabytes of JSON.
  std::size_t binary_offset = 0;

  void own() {
    if (body.data() == owned.data()) return;
    if (source) {
      owned = std::move(*source);
      source = nullptr;
    } else {
      owned.assign(body);
    }
    body = owned;
  }
  void own(std::string text) {
    owned = std::move(text);
    body = owned;
  }
};

// A routed message's body: a v2 request's "data" arrays, or every array member of a /score
// body, stay text. "inputs" (what makes a body a v2 request) and "outputs" are the envelope.
bool keep_message_tensors(std::size_t depth, std::string_view key) {
  return keep_v2_tensor_data(depth, key) || (depth == 1 && key != "inputs" && key != "outputs");
}

// A raw record for an input mapping: a JSON document in full (records are small).
bool keep_nothing(std::size_t, std::string_view) { return false; }

// Decodes a v2 inference request. Returns the tensors and fills `outputs_wanted`.
struct OutputChoice {
  std::vector<std::string> names;  // empty: every output
  std::vector<bool> binary;        // per name
  bool all_binary = false;
};

Result<InferRequest> decode_v2_json(const nlohmann::json& j, JsonEnvelope* envelope,
                                    const Shared& s, OutputChoice& choice, std::string& id) {
  auto bad = [](const std::string& m) { return make_error(errc::invalid_argument, m); };
  if (!j.is_object()) return bad("the request must be a JSON object");
  if (j.contains("id") && j["id"].is_string()) id = j["id"].get<std::string>();
  if (j.contains("parameters") && j["parameters"].is_object()) {
    choice.all_binary = j["parameters"].value("binary_data_output", false);
  }
  if (!j.contains("inputs") || !j["inputs"].is_array()) {
    return bad("\"inputs\" must be an array of tensors");
  }
  InferRequest req;
  std::size_t offset = s.binary_offset;
  for (const auto& in : j["inputs"]) {
    if (!in.is_object()) return bad("each input must be an object");
    Tensor t;
    if (!in.contains("name") || !in["name"].is_string()) return bad("an input has no \"name\"");
    t.name = in["name"].get<std::string>();
    if (!in.contains("datatype") || !in["datatype"].is_string()) {
      return bad("input '" + t.name + "' has no \"datatype\"");
    }
    auto dtype = parse_datatype(in["datatype"].get<std::string>());
    if (!dtype) {
      return bad("input '" + t.name + "': unknown datatype '" + in["datatype"].get<std::string>() +
                 "'");
    }
    t.dtype = *dtype;
    if (!in.contains("shape") || !in["shape"].is_array()) {
      return bad("input '" + t.name + "' has no \"shape\"");
    }
    for (const auto& d : in["shape"]) {
      if (!d.is_number_integer() || d.get<std::int64_t>() < 0) {
        return bad("input '" + t.name + "': shape dimensions must be integers >= 0");
      }
      t.shape.push_back(d.get<std::int64_t>());
    }
    const auto count = t.element_count();
    if (!count) return bad("input '" + t.name + "': shape too large");
    std::optional<std::size_t> binary_size;
    if (in.contains("parameters") && in["parameters"].is_object() &&
        in["parameters"].contains("binary_data_size")) {
      const auto& b = in["parameters"]["binary_data_size"];
      if (!b.is_number_unsigned()) return bad("input '" + t.name + "': bad binary_data_size");
      binary_size = b.get<std::size_t>();
    }
    if (binary_size) {
      if (*binary_size > s.body.size() - offset) {
        return bad("input '" + t.name + "': binary_data_size " + std::to_string(*binary_size) +
                   " runs past the end of the body");
      }
      std::string_view raw(s.body.data() + offset, *binary_size);
      offset += *binary_size;
      if (t.dtype == DataType::kBytes) {
        auto strings = bytes_from_binary(raw, *count);
        if (!strings) return bad("input '" + t.name + "': " + strings.error().message);
        t.strings = std::move(*strings);
      } else {
        t.data.assign(raw);
      }
      CAIRN_TRY(t.check_consistent());
    } else {
      if (!in.contains("data")) return bad("input '" + t.name + "' has no \"data\"");
      CAIRN_TRY(read_tensor(in["data"], envelope, false, t));
    }
    req.inputs.push_back(std::move(t));
  }
  if (offset != s.body.size()) {
    return bad("the body has " + std::to_string(s.body.size() - offset) +
               " bytes beyond the tensors its header describes");
  }
  if (j.contains("outputs")) {
    if (!j["outputs"].is_array()) return bad("\"outputs\" must be an array");
    for (const auto& o : j["outputs"]) {
      if (!o.is_object() || !o.contains("name") || !o["name"].is_string()) {
        return bad("each requested output needs a \"name\"");
      }
      choice.names.push_back(o["name"].get<std::string>());
      bool binary = choice.all_binary;
      if (o.contains("parameters") && o["parameters"].is_object()) {
        binary = o["parameters"].value("binary_data", binary);
      }
      choice.binary.push_back(binary);
    }
  }
  return req;
}

Result<InferRequest> decode_v2(const Shared& s, std::size_t max_depth, OutputChoice& choice,
                               std::string& id) {
  auto envelope = JsonEnvelope::parse(std::string_view(s.body).substr(0, s.binary_offset),
                                      max_depth, keep_v2_tensor_data);
  if (!envelope) return envelope.error();
  return checked(decode_v2_json(envelope->doc(), &*envelope, s, choice, id), *envelope);
}

// A JSON string as the rest of the API writes one (invalid UTF-8 replaced).
void append_json_string(std::string& out, const std::string& s) {
  out += nlohmann::json(s).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

// Written as text, not through a JSON document: a JSON output may hold hundreds of thousands
// of numbers. Members come in the (sorted) order nlohmann writes them everywhere else.
net::HttpResponse encode_v2(const InferResult& result, const OutputChoice& choice,
                            const std::string& id) {
  std::string body = "{";
  if (!id.empty()) {
    body += "\"id\":";
    append_json_string(body, id);
    body += ',';
  }
  body += "\"model_name\":";
  append_json_string(body, result.model);
  body += ",\"model_version\":";
  append_json_string(body, result.version);
  body += ",\"outputs\":[";
  // Binary outputs follow the JSON header, in order; BYTES ones need their wire form made.
  std::vector<std::string_view> binary;
  std::vector<std::string> made;
  made.reserve(result.outputs.size() + choice.names.size());
  auto emit = [&](const Tensor& t, bool as_binary) {
    if (body.back() != '[') body += ',';
    body += '{';
    if (!as_binary) {
      body += "\"data\":";
      append_tensor_json(body, t, false);
      body += ',';
    }
    body += "\"datatype\":\"";
    body += to_string(t.dtype);
    body += "\",\"name\":";
    append_json_string(body, t.name);
    if (as_binary) {
      if (t.dtype == DataType::kBytes) {
        made.push_back(bytes_to_binary(t.strings));
        binary.emplace_back(made.back());
      } else {
        binary.emplace_back(t.data);  // appended once, below: an output may be megabytes
      }
      body += ",\"parameters\":{\"binary_data_size\":" + std::to_string(binary.back().size()) + "}";
    }
    body += ",\"shape\":" + shape_text(t.shape) + "}";
  };
  if (choice.names.empty()) {
    for (const auto& t : result.outputs) emit(t, choice.all_binary);
  } else {
    for (std::size_t i = 0; i < choice.names.size(); ++i) {
      const Tensor* found = nullptr;
      for (const auto& t : result.outputs) {
        if (t.name == choice.names[i]) found = &t;
      }
      if (!found) return error_response(400, "the model has no output '" + choice.names[i] + "'");
      emit(*found, choice.binary[i]);
    }
  }
  body += "]}";
  net::HttpResponse response;
  if (!binary.empty()) {
    response.headers.emplace_back("Inference-Header-Content-Length", std::to_string(body.size()));
    response.content_type = "application/octet-stream";
    std::size_t total = body.size();
    for (auto part : binary) total += part.size();
    body.reserve(total);
    for (auto part : binary) body += part;
  }
  response.body = std::move(body);
  return response;
}

Result<InferRequest> decode_score(const nlohmann::json& j, JsonEnvelope* envelope,
                                  const std::vector<TensorInfo>& sig) {
  auto bad = [](const std::string& m) { return make_error(errc::invalid_argument, m); };
  if (!j.is_object()) return bad("the body must be a JSON object: {\"data\": ...} or named inputs");
  InferRequest req;
  if (j.contains("data")) {
    bool named_data = false;
    for (const auto& s : sig) named_data = named_data || s.name == "data";
    if (!named_data) {
      if (sig.size() != 1) {
        return bad("\"data\" works for models with one input; this one takes " +
                   std::to_string(sig.size()) + ": name them");
      }
      Tensor t;
      t.name = sig[0].name;
      t.dtype = sig[0].dtype;
      CAIRN_TRY(read_tensor(j["data"], envelope, true, t));
      req.inputs.push_back(std::move(t));
      return req;
    }
  }
  for (const auto& [key, value] : j.items()) {
    const TensorInfo* info = nullptr;
    for (const auto& s : sig) {
      if (s.name == key) info = &s;
    }
    if (!info) return bad("the model has no input '" + key + "'");
    Tensor t;
    t.name = key;
    t.dtype = info->dtype;
    CAIRN_TRY(read_tensor(value, envelope, true, t));
    req.inputs.push_back(std::move(t));
  }
  return req;
}

// {"<output>": <nested array>, ...}, written as text like encode_v2's, names sorted.
std::string encode_score(const InferResult& result) {
  std::vector<const Tensor*> outputs;
  for (const auto& t : result.outputs) outputs.push_back(&t);
  std::stable_sort(outputs.begin(), outputs.end(),
                   [](const Tensor* a, const Tensor* b) { return a->name < b->name; });
  std::string body = "{";
  for (const Tensor* t : outputs) {
    if (body.size() > 1) body += ',';
    append_json_string(body, t->name);
    body += ':';
    append_tensor_json(body, *t, true);
  }
  return body + "}";
}

}  // namespace

void score_json_request(ModelManager& models, std::string body, const std::string& model,
                        const std::string& version, std::size_t max_json_depth, ScoreDone done) {
  // What the decoder learns on the worker, for the encoder: which form the body had.
  struct Call {
    Shared shared;
    OutputChoice choice;
    std::string id;
    bool v2 = false;
  };
  auto call = std::make_shared<Call>();
  call->shared.own(std::move(body));
  // The same envelope parser, with the same strict checks, as the REST JSON routes: the
  // tensors are read from the text, and a body that is not JSON in full is refused, saying
  // where.
  auto decode = [call, max_json_depth](const std::vector<TensorInfo>& sig,
                                       const InputMapping* mapping) -> Result<InferRequest> {
    const std::string_view text = call->shared.body;
    auto envelope = JsonEnvelope::parse(text, max_json_depth, keep_message_tensors);
    if (!envelope) return envelope.error();
    const nlohmann::json& doc = envelope->doc();
    const bool v2 = doc.is_object() && doc.contains("inputs");
    if (mapping && !(v2 && doc["inputs"].is_array())) {
      // A raw record (a sensor reading): the model's input mapping makes the tensors, from
      // the record's values, arrays included.
      auto record = JsonEnvelope::parse(text, max_json_depth, keep_nothing);
      if (!record) return record.error();
      auto tensors = mapping->map(record->doc());
      if (!tensors) return tensors.error();
      return InferRequest{std::move(*tensors)};
    }
    if (v2) {
      call->v2 = true;
      call->shared.binary_offset = text.size();  // JSON tensors only
      auto req = decode_v2_json(doc, &*envelope, call->shared, call->choice, call->id);
      // A message answer is one JSON document: binary outputs are not available.
      call->choice.all_binary = false;
      call->choice.binary.assign(call->choice.binary.size(), false);
      return checked(std::move(req), *envelope);
    }
    return checked(decode_score(doc, &*envelope, sig), *envelope);
  };
  auto on_result = [call, done](Result<InferResult> result) {
    if (!result) {
      const auto response = error_response(result.error());
      return done(ScoreAnswer{response.status, response.body, {}, {}});
    }
    if (call->v2) {
      auto response = encode_v2(*result, call->choice, call->id);
      return done(
          ScoreAnswer{response.status, std::move(response.body), result->model, result->version});
    }
    done(ScoreAnswer{200, encode_score(*result), result->model, result->version});
  };
  SubmitOptions options;
  options.queued_bytes = call->shared.body.size();
  auto status = models.submit(model, version, std::move(decode), on_result, std::move(options));
  if (!status) {
    const auto response = error_response(status.error());
    done(ScoreAnswer{response.status, response.body, {}, {}});
  }
}

std::size_t json_depth(std::string_view text, std::size_t limit) {
  std::size_t depth = 0;
  std::size_t deepest = 0;
  bool in_string = false;
  bool escaped = false;
  for (char c : text) {
    if (in_string) {
      if (escaped) {
        escaped = false;
      } else if (c == '\\') {
        escaped = true;
      } else if (c == '"') {
        in_string = false;
      }
      continue;
    }
    if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > deepest) deepest = depth;
      if (deepest > limit) return deepest;
    } else if ((c == ']' || c == '}') && depth > 0) {
      --depth;
    }
  }
  return deepest;
}

RestApi::RestApi(ModelManager& models, RestOptions options)
    : models_(models), options_(std::move(options)) {
  if (options_.max_inline_runs > 0 && options_.wake_http_thread) {
    options_.max_inline_runs = 1;  // the watch follows one run at a time
    watch_ =
        std::make_unique<InlineRunWatch>(options_.wake_http_thread, options_.inline_watch_period);
  }
}

RestApi::~RestApi() = default;

void RestApi::count(int status) {
  std::lock_guard lock(counts_mu_);
  ++responses_by_status_[status];
}

std::string RestApi::metrics_text() const {
  std::string out = models_.prometheus_text();
  out += "# HELP cairn_infer_http_responses_total HTTP responses by status code.\n";
  out += "# TYPE cairn_infer_http_responses_total counter\n";
  {
    std::lock_guard lock(counts_mu_);
    for (const auto& [code, n] : responses_by_status_) {
      out += fmt::format("cairn_infer_http_responses_total{{code=\"{}\"}} {}\n", code, n);
    }
  }
  if (watch_) {
    out +=
        "# HELP cairn_infer_inline_handovers_total Inline runs that lasted long enough for "
        "another HTTP thread to be woken to take over the I/O.\n";
    out += "# TYPE cairn_infer_inline_handovers_total counter\n";
    out += fmt::format("cairn_infer_inline_handovers_total {}\n", watch_->wakes());
  }
  return out;
}

void RestApi::handle(net::HttpRequest& request, net::HttpRespond respond_raw) {
  // Every answer is counted by status, whichever thread sends it.
  auto respond = [this, r = std::move(respond_raw)](net::HttpResponse response) {
    count(response.status);
    r(std::move(response));
  };
  const std::string path = net::http_path(request.target);
  const auto parts = split_path(path);
  const bool get = request.method == "GET" || request.method == "HEAD";
  const bool post = request.method == "POST";
  try {
    if (parts.size() == 1 && parts[0] == "metrics" && get) {
      net::HttpResponse r;
      r.body = metrics_text();
      r.content_type = "text/plain; version=0.0.4";
      return respond(std::move(r));
    }
    if (parts.size() == 1 && parts[0] == "status" && get) {
      return respond(json_response(200, models_.reported()));
    }
    if (!parts.empty() && parts[0] == "score") {
      if (!post) return respond(error_response(405, "use POST"));
      if (parts.size() > 2) return respond(error_response(404, "no such route: " + path));
      return score(request, parts.size() == 2 ? parts[1] : std::string(), std::move(respond));
    }
    if (parts.empty() || parts[0] != "v2") {
      return respond(error_response(404, "no such route: " + path));
    }
    if (parts.size() == 1 && get) {
      return respond(
          json_response(200, {{"name", "cairn-infer"},
                              {"version", options_.server_version},
                              {"extensions", {"binary_tensor_data", "model_repository"}}}));
    }
    if (parts.size() == 3 && parts[1] == "health" && get) {
      if (parts[2] == "live") return respond(json_response(200, {{"live", true}}));
      if (parts[2] == "ready") {
        const bool ready = models_.ready();
        return respond(json_response(ready ? 200 : 503, {{"ready", ready}}));
      }
    }
    if (parts.size() == 3 && parts[1] == "repository" && parts[2] == "index" && (get || post)) {
      auto index = nlohmann::json::array();
      for (const auto& m : models_.list()) {
        const std::string state = m.serving_version.empty()
                                      ? (m.status == "failed" ? "UNAVAILABLE" : "LOADING")
                                      : "READY";
        nlohmann::json e{{"name", m.name}, {"version", m.serving_version}, {"state", state}};
        if (!m.error.empty()) e["reason"] = m.error;
        index.push_back(std::move(e));
      }
      return respond(json_response(200, index));
    }
    if (parts.size() >= 3 && parts[1] == "models") {
      const std::string& name = parts[2];
      std::size_t next = 3;
      std::string version;
      if (parts.size() >= 5 && parts[3] == "versions") {
        version = parts[4];
        next = 5;
      }
      const std::string action = parts.size() > next ? parts[next] : "";
      if (parts.size() > next + 1 || (action != "" && action != "ready" && action != "infer")) {
        return respond(error_response(404, "no such route: " + path));
      }
      if (action == "infer") {
        if (!post) return respond(error_response(405, "use POST"));
        return infer_v2(request, name, version, std::move(respond));
      }
      if (!get) return respond(error_response(405, "use GET"));
      auto info = models_.find(name);
      if (!info) return respond(error_response(404, "unknown model '" + name + "'"));
      const VersionInfo* v = pick_version(*info, version);
      if (action == "ready") {
        if (!v && !version.empty()) {
          return respond(
              error_response(404, "model '" + name + "' has no version '" + version + "'"));
        }
        return respond(json_response(v ? 200 : 503, {{"name", name}, {"ready", v != nullptr}}));
      }
      if (!v) {
        if (!version.empty()) {
          return respond(
              error_response(404, "model '" + name + "' has no version '" + version + "'"));
        }
        return respond(error_response(503, "model '" + name + "' is not loaded: " + info->status +
                                               (info->error.empty() ? "" : ": " + info->error)));
      }
      return respond(json_response(200, metadata(*info, *v)));
    }
    return respond(error_response(404, "no such route: " + request.method + " " + path));
  } catch (const std::exception& e) {
    // A bug, not the client's fault; the server keeps serving.
    log::error(kLog, "request {} {} failed: {}", request.method, path, e.what());
    return respond(error_response(500, std::string("internal error: ") + e.what()));
  }
}

void RestApi::infer_v2(net::HttpRequest& request, const std::string& model,
                       const std::string& version, net::HttpRespond respond) {
  auto shared = std::make_shared<Shared>();
  shared->body = request.body;  // taken only if queued (submit_options below)
  shared->source = &request.body;
  const std::string header_length = request.header("Inference-Header-Content-Length");
  if (!header_length.empty()) {
    std::size_t n = 0;
    auto [p, ec] =
        std::from_chars(header_length.data(), header_length.data() + header_length.size(), n);
    if (ec != std::errc() || p != header_length.data() + header_length.size() ||
        n > shared->body.size()) {
      return respond(error_response(400,
                                    "Inference-Header-Content-Length must be a number no "
                                    "larger than the body"));
    }
    if (n > options_.max_inference_header_bytes) {
      return respond(error_response(413, "the JSON header is larger than " +
                                             std::to_string(options_.max_inference_header_bytes) +
                                             " bytes"));
    }
    shared->binary_offset = n;
  } else {
    shared->binary_offset = shared->body.size();
  }
  auto choice = std::make_shared<OutputChoice>();
  auto id = std::make_shared<std::string>();
  const std::size_t depth = options_.max_json_depth;
  InlinePermit permit(*this);
  auto status = models_.submit(
      model, version,
      [shared, choice, id, depth](const std::vector<TensorInfo>&, const InputMapping*) {
        return decode_v2(*shared, depth, *choice, *id);
      },
      [respond, choice, id](Result<InferResult> result) {
        if (!result) return respond(error_response(result.error()));
        respond(encode_v2(*result, *choice, *id));
      },
      permit.submit_options([shared] { shared->own(); }, request.body.size()));
  if (!status) respond(error_response(status.error()));
}

void RestApi::score(net::HttpRequest& request, const std::string& model, net::HttpRespond respond) {
  auto shared = std::make_shared<Shared>();
  shared->body = request.body;  // taken only if queued (submit_options below)
  shared->source = &request.body;
  const std::size_t depth = options_.max_json_depth;
  InlinePermit permit(*this);
  auto status = models_.submit(
      model, "",
      [shared, depth](const std::vector<TensorInfo>& sig,
                      const InputMapping*) -> Result<InferRequest> {
        auto envelope = JsonEnvelope::parse(shared->body, depth, keep_score_tensors);
        if (!envelope) return envelope.error();
        return checked(decode_score(envelope->doc(), &*envelope, sig), *envelope);
      },
      [respond](Result<InferResult> result) {
        if (!result) return respond(error_response(result.error()));
        net::HttpResponse response;
        response.body = encode_score(*result);
        respond(std::move(response));
      },
      permit.submit_options([shared] { shared->own(); }, request.body.size()));
  if (!status) respond(error_response(status.error()));
}

RestApi::InlinePermit::InlinePermit(RestApi& api) : api_(api) {
  std::size_t in_use = api_.inline_runs_.load(std::memory_order_relaxed);
  while (in_use < api_.options_.max_inline_runs) {
    if (api_.inline_runs_.compare_exchange_weak(in_use, in_use + 1)) {
      held_ = true;
      return;
    }
  }
}

RestApi::InlinePermit::~InlinePermit() {
  if (!held_) return;
  if (watched_) api_.watch_->end();
  api_.inline_runs_.fetch_sub(1);
}

SubmitOptions RestApi::InlinePermit::submit_options(std::function<void()> before_queue,
                                                    std::size_t queued_bytes) {
  SubmitOptions options;
  options.queued_bytes = queued_bytes;
  options.may_run_inline = held_;
  // Models whose runs would have the watch hand the I/O over to another thread every time run
  // on their workers.
  if (api_.watch_) {
    options.max_inline_run_time = api_.options_.inline_watch_period;
    // Only runs that happen are watched: a request that goes to the queue wakes nobody.
    options.on_inline_run = [this] {
      api_.watch_->begin();
      watched_ = true;
    };
  }
  options.before_queue = std::move(before_queue);
  return options;
}

}  // namespace cairn::infer
