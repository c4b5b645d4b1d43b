#include "keys.h"

#include <dirent.h>
#include <fcntl.h>
#include <openssl/bio.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <utility>

namespace cryptex {
namespace {

// Key files are tiny; anything bigger is not a key (and must not make us
// allocate without bound).
constexpr size_t kMaxKeyFileSize = 64 * 1024;

struct PkeyDeleter {
  void operator()(EVP_PKEY* p) const { EVP_PKEY_free(p); }
};
using PkeyPtr = std::unique_ptr<EVP_PKEY, PkeyDeleter>;
struct BioDeleter {
  void operator()(BIO* b) const { BIO_free(b); }
};
using BioPtr = std::unique_ptr<BIO, BioDeleter>;
struct MdCtxDeleter {
  void operator()(EVP_MD_CTX* c) const { EVP_MD_CTX_free(c); }
};
using MdCtxPtr = std::unique_ptr<EVP_MD_CTX, MdCtxDeleter>;

// Drains OpenSSL's error queue into one line (and leaves it empty, so stale
// errors never show up in a later message).
std::string OpensslErrors() {
  std::string out;
  char buf[256];
  for (unsigned long e; (e = ERR_get_error()) != 0;) {
    ERR_error_string_n(e, buf, sizeof(buf));
    if (!out.empty()) out += "; ";
    out += buf;
  }
  return out.empty() ? "unknown OpenSSL error" : out;
}

// Private key bytes are wiped when they go out of scope.
struct SecretString {
  std::string s;
  SecretString() = default;
  SecretString(const SecretString&) = delete;
  SecretString& operator=(const SecretString&) = delete;
  ~SecretString() { OPENSSL_cleanse(s.data(), s.size()); }
};

Status ReadKeyFile(const std::string& path, std::string* out) {
  const int fd =
      open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);  // FIFOs must not block
  if (fd < 0) return Status::FromErrno(errno, "key file " + path);
  struct FdCloser {
    int fd;
    ~FdCloser() { close(fd); }
  } closer{fd};
  struct stat st;
  if (fstat(fd, &st) != 0) return Status::FromErrno(errno, "key file " + path);
  if (!S_ISREG(st.st_mode)) {
    return Status::InvalidArgument("key file " + path + ": not a regular file");
  }
  if (st.st_size > static_cast<off_t>(kMaxKeyFileSize)) {
    return Status::InvalidArgument("key file " + path + ": too large for a key (" +
                                   std::to_string(st.st_size) + " bytes)");
  }
  out->resize(kMaxKeyFileSize + 1);
  size_t got = 0;
  while (got < out->size()) {
    const ssize_t n = read(fd, out->data() + got, out->size() - got);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Status::FromErrno(errno, "reading key file " + path);
    if (n == 0) break;
    got += static_cast<size_t>(n);
  }
  if (got > kMaxKeyFileSize) {
    return Status::InvalidArgument("key file " + path + ": too large for a key");
  }
  out->resize(got);
  return Status::Ok();
}

// Never prompts for a passphrase: encrypted keys are refused.
int NoPassphrase(char*, int, int, void*) { return -1; }

Status CheckEd25519(EVP_PKEY* pkey, const std::string& path) {
  if (EVP_PKEY_get_id(pkey) != EVP_PKEY_ED25519) {
    return Status::Unsupported(
        "key file " + path + ": not an Ed25519 key (type " +
        std::string(EVP_PKEY_get0_type_name(pkey) ? EVP_PKEY_get0_type_name(pkey) : "unknown") +
        ")");
  }
  return Status::Ok();
}

std::array<uint8_t, 32> RawPublic(EVP_PKEY* pkey) {
  std::array<uint8_t, 32> raw{};
  size_t len = raw.size();
  if (EVP_PKEY_get_raw_public_key(pkey, raw.data(), &len) != 1 || len != raw.size()) {
    // Impossible for a key that passed CheckEd25519.
    std::fprintf(stderr, "cryptex: fatal: EVP_PKEY_get_raw_public_key: %s\n",
                 OpensslErrors().c_str());
    std::abort();
  }
  return raw;
}

KeyId IdOf(EVP_PKEY* pkey) {
  const std::array<uint8_t, 32> raw = RawPublic(pkey);
  return Sha256::Hash(raw.data(), raw.size());
}

// "DIR/NAME" -> "DIR"; "NAME" -> ".".
std::string DirName(const std::string& path) {
  const size_t slash = path.find_last_of('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

Status WriteAll(int fd, const std::string& bytes, const std::string& what) {
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Status::FromErrno(errno, "writing " + what);
    done += static_cast<size_t>(n);
  }
  return Status::Ok();
}

// Moves `tmp` to `dest` unless `dest` exists (atomically: never overwrites).
Status PlaceNoReplace(const std::string& tmp, const std::string& dest) {
  if (renameat2(AT_FDCWD, tmp.c_str(), AT_FDCWD, dest.c_str(), RENAME_NOREPLACE) == 0) {
    return Status::Ok();
  }
  int err = errno;
  if (err == EINVAL || err == ENOSYS || err == EOPNOTSUPP) {
    // File system without RENAME_NOREPLACE: link(2) also fails on EEXIST.
    if (link(tmp.c_str(), dest.c_str()) == 0) {
      unlink(tmp.c_str());
      return Status::Ok();
    }
    err = errno;
  }
  if (err == EEXIST) return Status::Exists(dest + ": already exists; refusing to overwrite");
  return Status::FromErrno(err, "creating " + dest);
}

// Writes `bytes` to a new file `dest` with exactly `mode`: first to a
// temporary file in the same directory (fsync'd), then moved into place
// without replacing anything. On failure nothing is left behind.
Status WriteNewFile(const std::string& dest, const std::string& bytes, mode_t mode) {
  std::string tmp = dest + ".tmp-XXXXXX";
  const int fd = mkostemp(tmp.data(), O_CLOEXEC);  // created 0600
  if (fd < 0) return Status::FromErrno(errno, "creating a temporary file for " + dest);
  Status st = WriteAll(fd, bytes, tmp);
  if (st.ok() && fchmod(fd, mode) != 0) st = Status::FromErrno(errno, "chmod " + tmp);
  if (st.ok() && fsync(fd) != 0) st = Status::FromErrno(errno, "fsync " + tmp);
  if (close(fd) != 0 && st.ok()) st = Status::FromErrno(errno, "closing " + tmp);
  if (st.ok()) st = PlaceNoReplace(tmp, dest);
  if (!st.ok()) unlink(tmp.c_str());
  return st;
}

Status SyncDir(const std::string& dir) {
  const int fd = open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return Status::FromErrno(errno, "opening directory " + dir);
  Status st;
  if (fsync(fd) != 0) st = Status::FromErrno(errno, "fsync directory " + dir);
  close(fd);
  return st;
}

bool EndsWith(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

}  // namespace

// ---- PrivateKey ---------------------------------------------------------------

struct PrivateKey::Impl {
  PkeyPtr pkey;
};

PrivateKey::PrivateKey(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
PrivateKey::~PrivateKey() = default;
PrivateKey::PrivateKey(PrivateKey&&) noexcept = default;
PrivateKey& PrivateKey::operator=(PrivateKey&&) noexcept = default;

Result<PrivateKey> PrivateKey::Generate() {
  ERR_clear_error();  // messages must not carry stale errors
  PkeyPtr pkey(EVP_PKEY_Q_keygen(nullptr, nullptr, "ED25519"));
  if (!pkey) return Status::Internal("generating an Ed25519 key: " + OpensslErrors());
  return PrivateKey(std::make_unique<Impl>(Impl{std::move(pkey)}));
}

Result<PrivateKey> PrivateKey::LoadPem(const std::string& path) {
  ERR_clear_error();  // messages must not carry stale errors
  SecretString pem;
  CX_RETURN_IF_ERROR(ReadKeyFile(path, &pem.s));
  BioPtr bio(BIO_new_mem_buf(pem.s.data(), static_cast<int>(pem.s.size())));
  if (!bio) return Status::Internal("BIO_new_mem_buf: " + OpensslErrors());
  PkeyPtr pkey(PEM_read_bio_PrivateKey(bio.get(), nullptr, NoPassphrase, nullptr));
  if (!pkey) {
    return Status::InvalidArgument("key file " + path +
                                   ": not an unencrypted PEM private key: " + OpensslErrors());
  }
  CX_RETURN_IF_ERROR(CheckEd25519(pkey.get(), path));
  return PrivateKey(std::make_unique<Impl>(Impl{std::move(pkey)}));
}

Status PrivateKey::SavePair(const std::string& path) const {
  const std::string pub_path = path + ".pub";
  // Early, friendly refusal; PlaceNoReplace is what makes it race free.
  for (const std::string& p : {path, pub_path}) {
    struct stat st;
    if (lstat(p.c_str(), &st) == 0) {
      return Status::Exists(p + ": already exists; refusing to overwrite");
    }
  }

  ERR_clear_error();  // messages must not carry stale errors
  SecretString priv_pem;
  std::string pub_pem;
  {
    // secmem BIOs wipe their buffer when freed.
    BioPtr bio(BIO_new(BIO_s_secmem()));
    if (!bio || PEM_write_bio_PKCS8PrivateKey(bio.get(), impl_->pkey.get(), nullptr, nullptr, 0,
                                              nullptr, nullptr) != 1) {
      return Status::Internal("encoding private key for " + path + ": " + OpensslErrors());
    }
    char* data = nullptr;
    const long n = BIO_get_mem_data(bio.get(), &data);
    priv_pem.s.assign(data, static_cast<size_t>(n));
  }
  {
    BioPtr bio(BIO_new(BIO_s_mem()));
    if (!bio || PEM_write_bio_PUBKEY(bio.get(), impl_->pkey.get()) != 1) {
      return Status::Internal("encoding public key for " + pub_path + ": " + OpensslErrors());
    }
    char* data = nullptr;
    const long n = BIO_get_mem_data(bio.get(), &data);
    pub_pem.assign(data, static_cast<size_t>(n));
  }

  CX_RETURN_IF_ERROR(WriteNewFile(path, priv_pem.s, 0600));
  Status st = WriteNewFile(pub_path, pub_pem, 0644);
  if (!st.ok()) {
    unlink(path.c_str());  // created above; pub_path was not
    return st;
  }
  st = SyncDir(DirName(path));
  if (!st.ok()) {
    unlink(path.c_str());
    unlink(pub_path.c_str());
    return st;
  }
  return Status::Ok();
}

KeyId PrivateKey::id() const { return IdOf(impl_->pkey.get()); }

std::array<uint8_t, 32> PrivateKey::raw_public() const { return RawPublic(impl_->pkey.get()); }

Result<Ed25519Sig> PrivateKey::Sign(std::span<const uint8_t> message) const {
  ERR_clear_error();  // messages must not carry stale errors
  MdCtxPtr ctx(EVP_MD_CTX_new());
  if (!ctx || EVP_DigestSignInit_ex(ctx.get(), nullptr, nullptr, nullptr, nullptr,
                                    impl_->pkey.get(), nullptr) != 1) {
    return Status::Internal("Ed25519 sign init: " + OpensslErrors());
  }
  Ed25519Sig sig{};
  size_t len = sig.size();
  if (EVP_DigestSign(ctx.get(), sig.data(), &len, message.data(), message.size()) != 1 ||
      len != sig.size()) {
    return Status::Internal("Ed25519 sign: " + OpensslErrors());
  }
  return sig;
}

// ---- PublicKey ----------------------------------------------------------------

struct PublicKey::Impl {
  PkeyPtr pkey;
  KeyId id;
};

PublicKey::PublicKey(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
PublicKey::~PublicKey() = default;
PublicKey::PublicKey(PublicKey&&) noexcept = default;
PublicKey& PublicKey::operator=(PublicKey&&) noexcept = default;

Result<PublicKey> PublicKey::LoadPem(const std::string& path) {
  ERR_clear_error();  // messages must not carry stale errors
  std::string pem;
  CX_RETURN_IF_ERROR(ReadKeyFile(path, &pem));
  BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  if (!bio) return Status::Internal("BIO_new_mem_buf: " + OpensslErrors());
  PkeyPtr pkey(PEM_read_bio_PUBKEY(bio.get(), nullptr, NoPassphrase, nullptr));
  if (!pkey) {
    return Status::InvalidArgument(
        "key file " + path + ": not a PEM public key (SubjectPublicKeyInfo): " + OpensslErrors());
  }
  CX_RETURN_IF_ERROR(CheckEd25519(pkey.get(), path));
  const KeyId id = IdOf(pkey.get());
  PublicKey key(std::make_unique<Impl>(Impl{std::move(pkey), id}));
  key.origin_ = path;
  return key;
}

Result<PublicKey> PublicKey::FromRaw(std::span<const uint8_t> raw32) {
  ERR_clear_error();  // messages must not carry stale errors
  if (raw32.size() != 32) {
    return Status::InvalidArgument("raw Ed25519 public key must be 32 bytes, got " +
                                   std::to_string(raw32.size()));
  }
  PkeyPtr pkey(EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, nullptr, raw32.data(), raw32.size()));
  if (!pkey) return Status::InvalidArgument("raw Ed25519 public key: " + OpensslErrors());
  const KeyId id = IdOf(pkey.get());
  PublicKey key(std::make_unique<Impl>(Impl{std::move(pkey), id}));
  key.origin_ = "raw key " + HexEncode(id);
  return key;
}

KeyId PublicKey::id() const { return impl_->id; }

bool PublicKey::Verify(std::span<const uint8_t> message, std::span<const uint8_t> sig) const {
  if (sig.size() != sizeof(Ed25519Sig)) return false;
  MdCtxPtr ctx(EVP_MD_CTX_new());
  bool ok =
      ctx &&
      EVP_DigestVerifyInit_ex(ctx.get(), nullptr, nullptr, nullptr, nullptr, impl_->pkey.get(),
                              nullptr) == 1 &&
      EVP_DigestVerify(ctx.get(), sig.data(), sig.size(), message.data(), message.size()) == 1;
  if (!ok) ERR_clear_error();
  return ok;
}

// ---- TrustStore ---------------------------------------------------------------

Result<TrustStore> TrustStore::LoadDir(const std::string& dir) {
  struct DirCloser {
    void operator()(DIR* d) const { closedir(d); }
  };
  std::unique_ptr<DIR, DirCloser> d(opendir(dir.c_str()));
  if (!d) return Status::FromErrno(errno, "trusted key directory " + dir);
  std::vector<std::string> names;
  errno = 0;
  while (const dirent* e = readdir(d.get())) {
    const std::string name = e->d_name;
    // Hidden files (and ".pub" itself) are skipped like a shell glob would.
    if (name[0] != '.' && EndsWith(name, ".pub")) names.push_back(name);
    errno = 0;
  }
  const int read_err = errno;
  d.reset();
  if (read_err != 0) return Status::FromErrno(read_err, "reading trusted key directory " + dir);
  std::sort(names.begin(), names.end());  // deterministic order and messages

  TrustStore store;
  store.source_ = dir;
  for (const std::string& name : names) {
    const std::string path = dir + (EndsWith(dir, "/") ? "" : "/") + name;
    struct stat st;
    if (stat(path.c_str(), &st) != 0) return Status::FromErrno(errno, "trusted key " + path);
    if (!S_ISREG(st.st_mode)) continue;
    CX_ASSIGN_OR_RETURN(PublicKey key, PublicKey::LoadPem(path));
    const KeyId id = key.id();
    store.keys_.emplace(id, std::move(key));  // a duplicate keeps the first file
  }
  if (store.keys_.empty()) return Status::NotFound("no *.pub keys in " + dir);
  return store;
}

Result<TrustStore> TrustStore::LoadFile(const std::string& pub_path) {
  CX_ASSIGN_OR_RETURN(PublicKey key, PublicKey::LoadPem(pub_path));
  TrustStore store;
  store.source_ = pub_path;
  const KeyId id = key.id();
  store.keys_.emplace(id, std::move(key));
  return store;
}

const PublicKey* TrustStore::Find(const KeyId& id) const {
  auto it = keys_.find(id);
  return it == keys_.end() ? nullptr : &it->second;
}

std::string TrustStore::Describe() const {
  return source_ + " (" + std::to_string(keys_.size()) + (keys_.size() == 1 ? " key)" : " keys)");
}

}  // namespace cryptex
