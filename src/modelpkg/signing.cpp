#include "modelpkg/signing.hpp"

#include <cstdio>
#include <memory>

#include <openssl/evp.h>
#include <openssl/pem.h>

#include "core/crypto.hpp"
#include <sys/stat.h>

namespace cairn::modelpkg {

namespace {

using PkeyPtr = std::unique_ptr<EVP_PKEY, decltype(&EVP_PKEY_free)>;
using MdCtxPtr = std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)>;

struct FileCloser {
  void operator()(std::FILE* f) const { std::fclose(f); }
};
using FilePtr = std::unique_ptr<std::FILE, FileCloser>;

Result<PkeyPtr> read_key(const std::string& path, bool private_key) {
  FilePtr f(std::fopen(path.c_str(), "rb"));
  if (!f) return make_error(errc::not_found, "cannot open key file " + path);
  EVP_PKEY* key = private_key ? PEM_read_PrivateKey(f.get(), nullptr, nullptr, nullptr)
                              : PEM_read_PUBKEY(f.get(), nullptr, nullptr, nullptr);
  if (!key) {
    return make_error(errc::invalid_argument,
                      path + " is not a PEM " + (private_key ? "private" : "public") + " key");
  }
  PkeyPtr out(key, EVP_PKEY_free);
  if (EVP_PKEY_id(key) != EVP_PKEY_ED25519) {
    return make_error(errc::invalid_argument, path + " is not an Ed25519 key");
  }
  return out;
}

}  // namespace

Status generate_signing_key(const std::string& private_key_path,
                            const std::string& public_key_path) {
  EVP_PKEY* raw = EVP_PKEY_Q_keygen(nullptr, nullptr, "ED25519");
  if (!raw) return make_error(errc::internal, "cannot generate an Ed25519 key");
  PkeyPtr key(raw, EVP_PKEY_free);
  mode_t old_mask = ::umask(077);
  FilePtr priv(std::fopen(private_key_path.c_str(), "wb"));
  ::umask(old_mask);
  if (!priv ||
      PEM_write_PrivateKey(priv.get(), key.get(), nullptr, nullptr, 0, nullptr, nullptr) != 1) {
    return make_error(errc::io_error, "cannot write " + private_key_path);
  }
  FilePtr pub(std::fopen(public_key_path.c_str(), "wb"));
  if (!pub || PEM_write_PUBKEY(pub.get(), key.get()) != 1) {
    return make_error(errc::io_error, "cannot write " + public_key_path);
  }
  return {};
}

Result<std::string> sign_bytes(const std::string& private_key_path, std::string_view data) {
  auto key = read_key(private_key_path, true);
  if (!key) return std::move(key).error();
  MdCtxPtr ctx(EVP_MD_CTX_new(), EVP_MD_CTX_free);
  std::string sig(64, '\0');
  std::size_t sig_len = sig.size();
  if (!ctx || EVP_DigestSignInit(ctx.get(), nullptr, nullptr, nullptr, key->get()) != 1 ||
      EVP_DigestSign(ctx.get(), reinterpret_cast<unsigned char*>(sig.data()), &sig_len,
                     reinterpret_cast<const unsigned char*>(data.data()), data.size()) != 1) {
    return make_error(errc::internal, "Ed25519 signing failed");
  }
  sig.resize(sig_len);
  return crypto::base64_encode(sig) + "\n";
}

Status verify_signature(const std::string& public_key_path, std::string_view data,
                        std::string_view signature_base64) {
  auto key = read_key(public_key_path, false);
  if (!key) return std::move(key).error();
  while (!signature_base64.empty() &&
         (signature_base64.back() == '\n' || signature_base64.back() == '\r' ||
          signature_base64.back() == ' ')) {
    signature_base64.remove_suffix(1);
  }
  auto sig = crypto::base64_decode(signature_base64);
  if (!sig || sig->size() != 64) {
    return make_error(errc::unauthorized, "signature is not a base64 Ed25519 signature");
  }
  MdCtxPtr ctx(EVP_MD_CTX_new(), EVP_MD_CTX_free);
  if (!ctx || EVP_DigestVerifyInit(ctx.get(), nullptr, nullptr, nullptr, key->get()) != 1) {
    return make_error(errc::internal, "cannot set up Ed25519 verification");
  }
  if (EVP_DigestVerify(ctx.get(), reinterpret_cast<const unsigned char*>(sig->data()), sig->size(),
                       reinterpret_cast<const unsigned char*>(data.data()), data.size()) != 1) {
    return make_error(errc::unauthorized,
                      "signature does not match the index under " + public_key_path);
  }
  return {};
}

}  // namespace cairn::modelpkg
