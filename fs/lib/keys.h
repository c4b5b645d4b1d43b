// Ed25519 keys, signatures and the trust store (OpenSSL 3 EVP).
//
// Files: a private key is PKCS#8 PEM (mode 0600); a public key is
// SubjectPublicKeyInfo PEM ("NAME.pub"). A key id is SHA-256 of the raw
// 32-byte public key. A trust store is every "*.pub" file of a directory
// (default /etc/cryptex/keys) or one explicit file.
#pragma once

#include <array>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "sha256.h"
#include "status.h"

namespace cryptex {

using KeyId = Digest;
using Ed25519Sig = std::array<uint8_t, 64>;

inline constexpr const char* kDefaultTrustDir = "/etc/cryptex/keys";

class PrivateKey final {
 public:
  ~PrivateKey();
  PrivateKey(PrivateKey&&) noexcept;
  PrivateKey& operator=(PrivateKey&&) noexcept;

  static Result<PrivateKey> Generate();
  static Result<PrivateKey> LoadPem(const std::string& path);
  // Writes path (0600) and path + ".pub" (0644); refuses to overwrite either
  // (kExists) and leaves nothing behind on failure.
  Status SavePair(const std::string& path) const;

  KeyId id() const;
  std::array<uint8_t, 32> raw_public() const;
  Result<Ed25519Sig> Sign(std::span<const uint8_t> message) const;

 private:
  struct Impl;
  explicit PrivateKey(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

class PublicKey final {
 public:
  ~PublicKey();
  PublicKey(PublicKey&&) noexcept;
  PublicKey& operator=(PublicKey&&) noexcept;

  static Result<PublicKey> LoadPem(const std::string& path);
  static Result<PublicKey> FromRaw(std::span<const uint8_t> raw32);
  KeyId id() const;
  const std::string& origin() const { return origin_; }  // file it came from
  bool Verify(std::span<const uint8_t> message, std::span<const uint8_t> sig) const;

 private:
  struct Impl;
  explicit PublicKey(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
  std::string origin_;
};

class TrustStore final {
 public:
  // All "*.pub" files of dir. A missing or empty directory is an error
  // (kNotFound) naming it; an unparsable .pub file is an error naming it.
  static Result<TrustStore> LoadDir(const std::string& dir);
  static Result<TrustStore> LoadFile(const std::string& pub_path);
  const PublicKey* Find(const KeyId& id) const;
  size_t size() const { return keys_.size(); }
  std::string Describe() const;  // "DIR (N keys)" for messages

 private:
  std::map<KeyId, PublicKey> keys_;
  std::string source_;
};

}  // namespace cryptex
