// Ed25519 keys, signatures and the trust store (OpenSSL 3 EVP).
//
// Files: a private key is PKCS#8 PEM (mode 0600); a public key is
// SubjectPublicKeyInfo PEM ("NAME.pub"). A key id is SHA-256 of the raw
// 32-byte public key. A trust store is every "*.pub" file of a directory
// (default /etc/cryptex/keys) or one explicit file.
//
// Ownership rule (like sshd's StrictModes): a trust directory or public key
// file that is writable by group or others, or owned by anyone but root or
// the caller (euid), could be changed by someone else to trust their key. A
// trust directory like that is refused; a public key file like that is
// skipped with a warning naming it (an explicit --pubkey file is refused).
// Checked with fstat on the opened descriptor, never by path.
#pragma once

#include <array>
#include <functional>
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

// Receives one warning (one line, no newline, naming the file it is about).
using WarningSink = std::function<void(const std::string& message)>;
// The default sink: prints "PROGRAM: warning: MESSAGE" to stderr.
void WarnToStderr(const std::string& message);

// The one rule for where trusted keys come from, shared by the cryptex
// commands (--trust DIR / --pubkey FILE) and cryptexfs (-o trust=/pubkey=):
// a directory or one key, never both. kInvalidArgument (a usage error) with
// the same wording everywhere if both are given.
Status CheckTrustSource(bool dir_given, bool pubkey_given);

class PrivateKey final {
 public:
  ~PrivateKey();
  PrivateKey(PrivateKey&&) noexcept;
  PrivateKey& operator=(PrivateKey&&) noexcept;

  static Result<PrivateKey> Generate();
  // A key file readable or writable by group or others loads, with a warning
  // naming the file and its mode (the secret may be exposed). A public key
  // given instead is refused as such (kInvalidArgument).
  static Result<PrivateKey> LoadPem(const std::string& path,
                                    const WarningSink& warn = WarnToStderr);
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
  std::array<uint8_t, 32> raw() const;                   // the raw Ed25519 key (FromRaw's input)
  const std::string& origin() const { return origin_; }  // file it came from
  bool Verify(std::span<const uint8_t> message, std::span<const uint8_t> sig) const;

 private:
  struct Impl;
  friend class TrustStore;  // sets origin_
  explicit PublicKey(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
  std::string origin_;
};

class TrustStore final {
 public:
  TrustStore();  // empty: trusts no key (so does a moved-from store)
  ~TrustStore();
  TrustStore(TrustStore&&) noexcept;
  TrustStore& operator=(TrustStore&&) noexcept;

  // The "*.pub" files of dir (hidden files skipped), read lazily: LoadDir
  // only lists the directory; Find reads key files as it needs them (below).
  // Refuses (kPermission) a directory writable by group/others or owned by
  // another user; a missing directory or one without *.pub names is an error
  // naming it. A key file that cannot be used (unreadable, not a PEM Ed25519
  // public key, too large, unsafe owner/mode) is skipped with a warning to
  // `warn` naming it, when it is read.
  static Result<TrustStore> LoadDir(const std::string& dir, WarningSink warn = WarnToStderr);
  // Exactly one key; any problem with the file (including an unsafe
  // owner/mode) is an error naming it.
  static Result<TrustStore> LoadFile(const std::string& pub_path);

  // The key with this id, or nullptr. Cost: a file named after the key id,
  // "<64 hex digits>.pub" or "<first 16 hex digits>.pub" (the short id
  // cryptex prints), is read first and alone; only if it does not hold the
  // key are the other files read (each once per store, parsed without
  // OpenSSL), so a large directory named by key id costs one file read.
  // Thread-safe.
  const PublicKey* Find(const KeyId& id) const;
  // Number of keys; until a lookup has read every file, the number of
  // candidate key files (*.pub names).
  size_t size() const;
  // "DIR (N keys)" for messages; after a miss "DIR (N keys, M skipped)".
  std::string Describe() const;
  // Key files opened so far (tests: what a lookup cost).
  size_t files_read() const;

 private:
  struct State;
  std::unique_ptr<State> s_;  // null once moved from
};

}  // namespace cryptex
