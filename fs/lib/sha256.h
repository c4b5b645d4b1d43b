// SHA-256 through OpenSSL 3 EVP. Thin RAII wrapper; not thread safe per object.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>

namespace cryptex {

using Digest = std::array<uint8_t, 32>;

class Sha256 final {
 public:
  Sha256();
  ~Sha256();
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;

  void Update(const void* data, size_t len);
  // Finishes and resets the object for reuse.
  Digest Final();

  // One-shot.
  static Digest Hash(const void* data, size_t len);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

std::string HexEncode(std::span<const uint8_t> bytes);
// Returns false on odd length or a non-hex character.
bool HexDecode(const std::string& hex, std::string* out);

}  // namespace cryptex
