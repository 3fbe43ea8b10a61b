// Ed25519 signatures over index bytes, through OpenSSL. Keys are PEM files (PKCS#8 private
// key, SubjectPublicKeyInfo public key), as `openssl genpkey -algorithm ed25519` writes them.
// A signature file holds the base64 of the 64-byte signature and a newline.
//
// Thread-safety: pure functions (OpenSSL's EVP calls are thread-safe).
#pragma once

#include <string>
#include <string_view>

#include "core/result.hpp"

namespace cairn::modelpkg {

// Writes a fresh key pair (private key mode 0600).
Status generate_signing_key(const std::string& private_key_path,
                            const std::string& public_key_path);

// The base64 signature of `data` with the private key in `private_key_path`.
Result<std::string> sign_bytes(const std::string& private_key_path, std::string_view data);

// OK if `signature_base64` is a valid signature of `data` under the public key in
// `public_key_path`; unauthorized otherwise, with the reason.
Status verify_signature(const std::string& public_key_path, std::string_view data,
                        std::string_view signature_base64);

}  // namespace cairn::modelpkg
