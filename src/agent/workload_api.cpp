#include "agent/workload_api.hpp"

#include <memory>
#include <vector>

#include <nlohmann/json.hpp>
#include <openssl/evp.h>

#include "core/crypto.hpp"

namespace cairn::agent {

using nlohmann::json;

namespace {

net::HttpResponse error(int status, const std::string& message) {
  return {status, json{{"message", message}}.dump()};
}

std::vector<std::string> segments(const std::string& path) {
  std::vector<std::string> out;
  std::size_t i = 0;
  while (i < path.size()) {
    if (path[i] == '/') {
      ++i;
      continue;
    }
    auto j = path.find('/', i);
    if (j == std::string::npos) j = path.size();
    auto decoded = crypto::url_decode(path.substr(i, j - i));
    out.push_back(decoded ? *decoded : path.substr(i, j - i));
    i = j;
  }
  return out;
}

// AES-256-GCM under a key derived from the module's identity key: ciphertext || 16-byte tag.
// Only the module itself (which holds neither key) can have the agent decrypt what it encrypted.
Result<std::string> aes_gcm(bool encrypt, const std::string& key, const std::string& iv,
                            const std::string& input) {
  std::unique_ptr<EVP_CIPHER_CTX, decltype(&EVP_CIPHER_CTX_free)> ctx(EVP_CIPHER_CTX_new(),
                                                                      EVP_CIPHER_CTX_free);
  if (!ctx || iv.empty()) return make_error(errc::invalid_argument, "bad initialization vector");
  std::string data = input, tag;
  if (!encrypt) {
    if (data.size() < 16) return make_error(errc::invalid_argument, "ciphertext too short");
    tag = data.substr(data.size() - 16);
    data.resize(data.size() - 16);
  }
  auto* cipher = EVP_aes_256_gcm();
  auto k = reinterpret_cast<const unsigned char*>(key.data());
  auto v = reinterpret_cast<const unsigned char*>(iv.data());
  int ivlen = static_cast<int>(iv.size());
  bool ok = (encrypt ? EVP_EncryptInit_ex(ctx.get(), cipher, nullptr, nullptr, nullptr)
                     : EVP_DecryptInit_ex(ctx.get(), cipher, nullptr, nullptr, nullptr)) == 1 &&
            EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_SET_IVLEN, ivlen, nullptr) == 1 &&
            (encrypt ? EVP_EncryptInit_ex(ctx.get(), nullptr, nullptr, k, v)
                     : EVP_DecryptInit_ex(ctx.get(), nullptr, nullptr, k, v)) == 1;
  std::string out(data.size() + 16, '\0');
  int len = 0, fin = 0;
  auto o = reinterpret_cast<unsigned char*>(out.data());
  auto in = reinterpret_cast<const unsigned char*>(data.data());
  int inlen = static_cast<int>(data.size());
  if (ok) {
    ok = (encrypt ? EVP_EncryptUpdate(ctx.get(), o, &len, in, inlen)
                  : EVP_DecryptUpdate(ctx.get(), o, &len, in, inlen)) == 1;
  }
  if (ok && !encrypt) {
    ok = EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_SET_TAG, 16, tag.data()) == 1;
  }
  if (ok) {
    ok = (encrypt ? EVP_EncryptFinal_ex(ctx.get(), o + len, &fin)
                  : EVP_DecryptFinal_ex(ctx.get(), o + len, &fin)) == 1;
  }
  if (!ok) return make_error(errc::invalid_argument, "the ciphertext does not verify");
  out.resize(static_cast<std::size_t>(len + fin));
  if (encrypt) {
    char t[16];
    EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_GET_TAG, 16, t);
    out.append(t, 16);
  }
  return out;
}

}  // namespace

std::int64_t peer_pid(const net::HttpRequest& request) {
  constexpr std::string_view prefix = "unix:pid=";
  if (!request.peer.starts_with(prefix)) return 0;
  try {
    return std::stoll(request.peer.substr(prefix.size()));
  } catch (const std::exception&) {
    return 0;
  }
}

net::HttpResponse handle_workload(const net::HttpRequest& request, const WorkloadModule& module,
                                  const WorkloadContext& context) {
  if (net::http_query_param(request.target, "api-version").empty()) {
    return error(400, "the api-version query parameter is required");
  }
  auto seg = segments(net::http_path(request.target));
  if (request.method == "GET" && seg.size() == 1 && seg[0] == "trust-bundle") {
    return {200, json{{"certificate", context.trust_bundle_pem}}.dump()};
  }
  if (request.method == "GET" && seg.size() == 1 && seg[0] == "manifest-trust-bundle") {
    return {200, json{{"certificate", ""}}.dump()};
  }
  if (seg.size() < 3 || seg[0] != "modules") return error(404, "no such workload API path");
  std::string name = seg[1];
  if (name.starts_with("$")) name = name.substr(1);
  // The caller must be the module the socket and the path name (IoT Edge answers 403).
  auto pid = peer_pid(request);
  if (name != module.name || pid == 0 || !context.owns_pid || !context.owns_pid(module.name, pid)) {
    return error(403, "the calling process is not module '" + name + "'");
  }
  if (request.method != "POST") return error(405, "use POST");
  json body;
  try {
    body = json::parse(request.body);
  } catch (const json::parse_error&) {
    return error(400, "the body is not JSON");
  }
  if (!body.is_object()) return error(400, "the body must be a JSON object");
  auto b64_field = [&](const char* key) -> Result<std::string> {
    auto it = body.find(key);
    if (it == body.end() || !it->is_string()) {
      return make_error(errc::invalid_argument, std::string(key) + " (base64) is required");
    }
    auto decoded = crypto::base64_decode(it->get<std::string>());
    if (!decoded) return make_error(errc::invalid_argument, std::string(key) + " is not base64");
    return decoded;
  };
  auto key = crypto::base64_decode(module.key);
  if (!key) return error(500, "the module's identity key is unreadable");
  if (seg.size() == 5 && seg[2] == "genid" && seg[4] == "sign") {
    auto data = b64_field("data");
    if (!data) return error(400, data.error().message);
    auto digest = crypto::hmac_sha256(*key, *data);
    return {200, json{{"digest", crypto::base64_encode(digest)}}.dump()};
  }
  if (seg.size() == 5 && seg[2] == "genid" && (seg[4] == "encrypt" || seg[4] == "decrypt")) {
    bool encrypt = seg[4] == "encrypt";
    auto input = b64_field(encrypt ? "plaintext" : "ciphertext");
    if (!input) return error(400, input.error().message);
    auto iv = b64_field("initializationVector");
    if (!iv) return error(400, iv.error().message);
    auto derived = crypto::hmac_sha256(*key, "cairn workload encryption key:" + seg[3]);
    auto out = aes_gcm(encrypt, derived, *iv, *input);
    if (!out) return error(400, out.error().message);
    return {200, json{{encrypt ? "ciphertext" : "plaintext", crypto::base64_encode(*out)}}.dump()};
  }
  if (seg.size() >= 3 && (seg.back() == "server" || seg.back() == "identity")) {
    return error(501, "certificate issuance is not implemented by cairnd yet");
  }
  return error(404, "no such workload API path");
}

}  // namespace cairn::agent
