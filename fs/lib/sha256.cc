#include "sha256.h"

#include <openssl/err.h>
#include <openssl/evp.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <utility>

namespace cryptex {
namespace {

// OpenSSL only fails these calls on allocation failure or a broken provider
// configuration; neither is recoverable for a hash API that cannot return an
// error, so treat them like a failed CHECK.
[[noreturn]] void Die(const char* what) {
  std::fprintf(stderr, "cryptex: fatal: %s failed\n", what);
  ERR_print_errors_fp(stderr);
  std::abort();
}

// Fetched once per process and never freed (OpenSSL's own exit handler
// releases the provider); explicit fetching avoids the implicit per-init
// lookup that EVP_sha256() costs in OpenSSL 3.
const EVP_MD* Md() {
  static EVP_MD* const md = [] {
    EVP_MD* m = EVP_MD_fetch(nullptr, "SHA2-256", nullptr);
    if (m == nullptr) Die("EVP_MD_fetch(SHA2-256)");
    return m;
  }();
  return md;
}

EVP_MD_CTX* NewCtx() {
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  if (ctx == nullptr) Die("EVP_MD_CTX_new");
  return ctx;
}

void Init(EVP_MD_CTX* ctx) {
  if (EVP_DigestInit_ex2(ctx, Md(), nullptr) != 1) Die("EVP_DigestInit_ex2");
}

void Update(EVP_MD_CTX* ctx, const void* data, size_t len) {
  if (len == 0) return;
  if (EVP_DigestUpdate(ctx, data, len) != 1) Die("EVP_DigestUpdate");
}

Digest Finish(EVP_MD_CTX* ctx) {
  Digest d;
  unsigned int n = 0;
  if (EVP_DigestFinal_ex(ctx, d.data(), &n) != 1 || n != d.size()) Die("EVP_DigestFinal_ex");
  return d;
}

// One EVP_MD_CTX per thread for Sha256::Hash, freed at thread exit.
struct ThreadCtx {
  EVP_MD_CTX* ctx = NewCtx();
  ThreadCtx() = default;
  ThreadCtx(const ThreadCtx&) = delete;
  ThreadCtx& operator=(const ThreadCtx&) = delete;
  ~ThreadCtx() { EVP_MD_CTX_free(ctx); }
};

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

}  // namespace

struct Sha256::Impl {
  EVP_MD_CTX* ctx = NewCtx();
  bool started = false;  // EVP_DigestInit_ex2 done since the last Final()
  Impl() = default;
  Impl(const Impl&) = delete;
  Impl& operator=(const Impl&) = delete;
  ~Impl() { EVP_MD_CTX_free(ctx); }
  void Start() {
    if (!started) {
      Init(ctx);
      started = true;
    }
  }
};

Sha256::Sha256() : impl_(std::make_unique<Impl>()) {}
Sha256::~Sha256() = default;

void Sha256::Update(const void* data, size_t len) {
  impl_->Start();
  cryptex::Update(impl_->ctx, data, len);
}

Digest Sha256::Final() {
  impl_->Start();
  impl_->started = false;
  return Finish(impl_->ctx);
}

Digest Sha256::Hash(const void* data, size_t len) {
  thread_local ThreadCtx tctx;
  Init(tctx.ctx);
  cryptex::Update(tctx.ctx, data, len);
  return Finish(tctx.ctx);
}

std::string HexEncode(std::span<const uint8_t> bytes) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out(bytes.size() * 2, '\0');
  for (size_t i = 0; i < bytes.size(); ++i) {
    out[2 * i] = kDigits[bytes[i] >> 4];
    out[2 * i + 1] = kDigits[bytes[i] & 0xf];
  }
  return out;
}

bool HexDecode(const std::string& hex, std::string* out) {
  if (hex.size() % 2 != 0) return false;
  std::string bytes(hex.size() / 2, '\0');
  for (size_t i = 0; i < bytes.size(); ++i) {
    int hi = HexValue(hex[2 * i]);
    int lo = HexValue(hex[2 * i + 1]);
    if (hi < 0 || lo < 0) return false;
    bytes[i] = static_cast<char>((hi << 4) | lo);
  }
  *out = std::move(bytes);
  return true;
}

}  // namespace cryptex
