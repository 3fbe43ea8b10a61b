#include "agent/workload_api.hpp"

#include <algorithm>
#include <cstdint>
#include <memory>
#include <vector>

#include <nlohmann/json.hpp>
#include <openssl/evp.h>

#include "core/clock.hpp"
#include "core/crypto.hpp"
#include "core/rfc3339.hpp"
#include "net/certs.hpp"

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

// The 201 answer IoT Edge gives for an issued certificate (PEM as text, not base64).
net::HttpResponse certificate_response(const net::IssuedCertificate& c) {
  return {201, json{{"privateKey", {{"type", "key"}, {"bytes", c.private_key_pem}}},
                    {"certificate", c.chain_pem},
                    {"expiration", format_iso8601(c.not_after_unix * 1000)}}
                   .dump()};
}

// The not-after a request asks for: its "expiration" (RFC 3339) if given, else the default
// validity cut at the edge CA's own expiry.
Result<std::int64_t> requested_expiry(const json& body, const WorkloadContext& context) {
  const std::int64_t now = now_unix_s();
  auto it = body.find("expiration");
  if (it == body.end() || it->is_null()) {
    auto ca = net::certificate_not_after(context.ca_cert_path);
    if (!ca) return std::move(ca).error();
    return std::min(now + kMaxCertificateValiditySecs, *ca);
  }
  if (!it->is_string()) {
    return make_error(errc::invalid_argument, "expiration must be an RFC 3339 time string");
  }
  auto ms = parse_rfc3339_ms(it->get<std::string>());
  if (!ms) {
    return make_error(errc::invalid_argument, "expiration '" + it->get<std::string>() +
                                                  "' is not an RFC 3339 time such as "
                                                  "2030-01-31T12:00:00Z");
  }
  const std::int64_t at = *ms / 1000;
  if (at <= now) return make_error(errc::invalid_argument, "expiration is in the past");
  if (at - now > kMaxCertificateValiditySecs) {
    return make_error(errc::invalid_argument,
                      "expiration is more than " +
                          std::to_string(kMaxCertificateValiditySecs / 86400) +
                          " days away: ask for a shorter certificate and renew it");
  }
  return at;
}

// The status for a refused request: the caller's mistake (400, 413 over a limit), or no edge CA
// to issue from (503).
net::HttpResponse refusal(const Error& e) {
  switch (e.code) {
    case errc::invalid_argument:
      return error(400, e.message);
    case errc::limit_exceeded:
      return error(413, e.message);
    case errc::not_found:
      return error(503, e.message);
    default:
      return error(500, e.message);
  }
}

net::HttpResponse issue(const net::CertificateRequest& request, const WorkloadContext& context) {
  auto issued = net::issue_certificate(context.ca_cert_path, context.ca_key_path, request);
  if (!issued) return refusal(issued.error());
  return certificate_response(*issued);
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
  json body = json::object();
  if (!request.body.empty()) {
    try {
      body = json::parse(request.body);
    } catch (const json::parse_error&) {
      return error(400, "the body is not JSON");
    }
  }
  if (!body.is_object()) return error(400, "the body must be a JSON object");
  // Sign's data is bounded by the socket's body limit alone.
  auto b64_field = [&](const char* key, std::size_t max_bytes = SIZE_MAX) -> Result<std::string> {
    auto it = body.find(key);
    if (it == body.end() || !it->is_string()) {
      return make_error(errc::invalid_argument, std::string(key) + " (base64) is required");
    }
    auto decoded = crypto::base64_decode(it->get<std::string>());
    if (!decoded) return make_error(errc::invalid_argument, std::string(key) + " is not base64");
    if (decoded->size() > max_bytes) {
      return make_error(errc::limit_exceeded,
                        std::string(key) + " has " + std::to_string(decoded->size()) +
                            " bytes; the limit is " + std::to_string(max_bytes));
    }
    return decoded;
  };
  // The module's identity certificate: CN the module id, client authentication.
  if (seg.size() == 4 && seg[2] == "certificate" && seg[3] == "identity") {
    auto expiry = requested_expiry(body, context);
    if (!expiry) return refusal(expiry.error());
    net::CertificateRequest r;
    r.common_name = module.name;
    r.uris = {"azureiot://" + context.iothub_hostname + "/devices/" + context.device_id +
              "/modules/" + module.name};
    r.use = net::CertificateUse::client;
    r.not_after_unix = *expiry;
    return issue(r, context);
  }
  if (seg.size() < 5 || seg[2] != "genid") return error(404, "no such workload API path");
  const std::string& genid = seg[3];
  // Sign takes any generation id, as IoT Edge; the others are bound to the current one.
  if (seg.size() == 5 && seg[4] == "sign") {
    auto key = crypto::base64_decode(module.key);
    if (!key) return error(500, "the module's identity key is unreadable");
    auto data = b64_field("data");
    if (!data) return refusal(data.error());
    auto digest = crypto::hmac_sha256(*key, *data);
    return {200, json{{"digest", crypto::base64_encode(digest)}}.dump()};
  }
  const bool crypt = seg.size() == 5 && (seg[4] == "encrypt" || seg[4] == "decrypt");
  const bool server = seg.size() == 6 && seg[4] == "certificate" && seg[5] == "server";
  if (!crypt && !server) return error(404, "no such workload API path");
  if (genid != module.generation_id) {
    return error(400, "generation id '" + genid + "' is not the current one of module '" +
                          module.name + "' (IOTEDGE_MODULEGENERATIONID)");
  }
  if (crypt) {
    bool encrypt = seg[4] == "encrypt";
    // Ciphertext carries the 16-byte tag on top of the plaintext.
    auto input =
        b64_field(encrypt ? "plaintext" : "ciphertext", kMaxCryptoInputBytes + (encrypt ? 0 : 16));
    if (!input) return refusal(input.error());
    auto iv = b64_field("initializationVector", kMaxInitializationVectorBytes);
    if (!iv) return refusal(iv.error());
    auto key = crypto::base64_decode(module.key);
    if (!key) return error(500, "the module's identity key is unreadable");
    // Keyed by the module's identity key and generation: another module, or a later identity of
    // the same name, cannot decrypt it.
    auto derived = crypto::hmac_sha256(*key, "cairn workload encryption key:" + genid);
    auto out = aes_gcm(encrypt, derived, *iv, *input);
    if (!out) return error(400, out.error().message);
    return {200, json{{encrypt ? "ciphertext" : "plaintext", crypto::base64_encode(*out)}}.dump()};
  }
  // A TLS server certificate for a module that serves: SANs its commonName and its module id.
  auto cn = body.find("commonName");
  if (cn == body.end() || !cn->is_string() || cn->get<std::string>().empty()) {
    return error(400, "commonName (the host name or IP address the module serves) is required");
  }
  auto expiry = requested_expiry(body, context);
  if (!expiry) return refusal(expiry.error());
  net::CertificateRequest r;
  r.common_name = cn->get<std::string>();
  r.dns_names = {r.common_name, module.name};
  r.use = net::CertificateUse::server;
  r.not_after_unix = *expiry;
  return issue(r, context);
}

}  // namespace cairn::agent
