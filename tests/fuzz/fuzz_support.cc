#include "fuzz_support.h"

#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstdio>
#include <memory>

namespace cryptex::fuzz {

namespace {

constexpr char kFixedKeyPem[] =
    "-----BEGIN PRIVATE KEY-----\n"
    "MC4CAQAwBQYDK2VwBCIEIIdUkn03xk28tNcn71fctMgEIA67VfO8rmjcA2v8sZV/\n"
    "-----END PRIVATE KEY-----\n";

struct Keys {
  std::unique_ptr<PrivateKey> key;
  std::unique_ptr<TrustStore> trust;
};

// Writes the PEM and its public half to a private temporary directory once
// per process, loads both, and removes the files again.
const Keys& GetKeys() {
  static const Keys keys = [] {
    char tmpl[] = "/tmp/cryptex-fuzz-key-XXXXXX";
    if (mkdtemp(tmpl) == nullptr) Finding("mkdtemp failed");
    const std::string dir = tmpl;
    const std::string pem = dir + "/fixed.key";
    {
      FILE* f = std::fopen(pem.c_str(), "w");
      if (f == nullptr) Finding("cannot write the fixed key");
      std::fputs(kFixedKeyPem, f);
      std::fclose(f);
    }
    auto key = PrivateKey::LoadPem(pem);
    if (!key.ok()) Finding("fixed key: " + key.status().ToString());
    unlink(pem.c_str());
    const std::string pair = dir + "/k";
    if (Status st = key->SavePair(pair); !st.ok()) Finding("fixed key: " + st.ToString());
    auto trust = TrustStore::LoadFile(pair + ".pub");
    if (!trust.ok()) Finding("fixed trust: " + trust.status().ToString());
    unlink(pair.c_str());
    unlink((pair + ".pub").c_str());
    rmdir(dir.c_str());
    Keys k;
    k.key = std::make_unique<PrivateKey>(std::move(*key));
    k.trust = std::make_unique<TrustStore>(std::move(*trust));
    return k;
  }();
  return keys;
}

}  // namespace

[[noreturn]] void Finding(const std::string& what) {
  std::fprintf(stderr, "FUZZ FINDING: %s\n", what.c_str());
  std::fflush(stderr);
  abort();
}

const PrivateKey& FixedKey() { return *GetKeys().key; }
const TrustStore& FixedTrust() { return *GetKeys().trust; }

MemFile::MemFile(std::span<const uint8_t> bytes) {
  fd_ = memfd_create("cryptex-fuzz", MFD_CLOEXEC);
  if (fd_ < 0) Finding("memfd_create failed");
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = write(fd_, bytes.data() + done, bytes.size() - done);
    if (n <= 0) Finding("memfd write failed");
    done += static_cast<size_t>(n);
  }
  path_ = "/proc/self/fd/" + std::to_string(fd_);
}

MemFile::~MemFile() {
  if (fd_ >= 0) close(fd_);
}

void ExploreImage(std::span<const uint8_t> image) {
  MemFile f(image);
  walk::Limits limits;
  limits.max_entries = 20000;
  limits.max_file_bytes = 4u << 20;
  limits.max_total_bytes = 16u << 20;
  limits.frame_cache_bytes = 256u << 10;
  limits.block_cache_bytes = 256u << 10;
  const walk::Report r = walk::Run(f.path(), FixedTrust(), limits);
  if (!r.walker_errors.empty()) Finding("walker guard: " + r.walker_errors.front());
  auto integrity = [](const Status& st) {
    return st.ok() || st.code() == Code::kCorruption || st.code() == Code::kUnsupported ||
           st.code() == Code::kSignature || st.code() == Code::kNotFound ||
           st.code() == Code::kNotDirectory || st.code() == Code::kIsDirectory;
  };
  if (!integrity(r.open)) Finding("unexpected open error: " + r.open.ToString());
  if (!integrity(r.verify)) Finding("unexpected verify error: " + r.verify.ToString());
  if (r.open.ok() && r.verified && r.verify.ok() && !r.errors.empty()) {
    Finding("VerifyAll passed an image that refuses an access: " + r.errors.front());
  }
}

}  // namespace cryptex::fuzz
