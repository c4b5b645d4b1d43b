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
#include <mutex>
#include <optional>
#include <set>
#include <string_view>
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

// Opens `name` relative to dir_fd (AT_FDCWD: a path) without blocking on a
// FIFO, and reads it whole if it is a regular file of at most
// kMaxKeyFileSize bytes. *st receives fstat of the opened descriptor (the
// file whose bytes were read). Errors name `display`.
Status ReadKeyFileAt(int dir_fd, const std::string& name, const std::string& display,
                     std::string* out, struct stat* st) {
  const int fd = openat(dir_fd, name.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
  if (fd < 0) return Status::FromErrno(errno, "key file " + display);
  struct FdCloser {
    int fd;
    ~FdCloser() { close(fd); }
  } closer{fd};
  if (fstat(fd, st) != 0) return Status::FromErrno(errno, "key file " + display);
  if (!S_ISREG(st->st_mode)) {
    return Status::InvalidArgument("key file " + display + ": not a regular file");
  }
  if (st->st_size > static_cast<off_t>(kMaxKeyFileSize)) {
    return Status::InvalidArgument("key file " + display + ": too large for a key (" +
                                   std::to_string(st->st_size) + " bytes)");
  }
  // Exactly the st_size bytes fstat reported (never reallocated: a private
  // key's buffer is wiped by its owner, copies would not be).
  out->resize(static_cast<size_t>(st->st_size));
  size_t got = 0;
  while (got < out->size()) {
    const ssize_t n = read(fd, out->data() + got, out->size() - got);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Status::FromErrno(errno, "reading key file " + display);
    if (n == 0) break;
    got += static_cast<size_t>(n);
  }
  out->resize(got);
  return Status::Ok();
}

Status ReadKeyFile(const std::string& path, std::string* out, struct stat* st) {
  return ReadKeyFileAt(AT_FDCWD, path, path, out, st);
}

std::string OctalMode(mode_t mode) {
  char buf[8];
  std::snprintf(buf, sizeof buf, "%04o", static_cast<unsigned>(mode & 07777));
  return buf;
}

// The ownership rule of keys.h for trust directories and public key files:
// "" if `st` is safe for a caller with effective uid `me`, else why not
// ("is group-writable (mode 0664)").
std::string UnsafeOwnership(const struct stat& st, uid_t me) {
  if ((st.st_mode & (S_IWGRP | S_IWOTH)) != 0) {
    const char* who = (st.st_mode & S_IWOTH) != 0 ? "world" : "group";
    return std::string("is ") + who + "-writable (mode " + OctalMode(st.st_mode) + ")";
  }
  if (st.st_uid != 0 && st.st_uid != me) {
    return "is owned by uid " + std::to_string(st.st_uid) + ", not root or uid " +
           std::to_string(me);
  }
  return "";
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

constexpr std::string_view kPubBegin = "-----BEGIN PUBLIC KEY-----";
constexpr std::string_view kPubEnd = "-----END PUBLIC KEY-----";

// Offset of `marker` at the start of a line of `text` at or after `from`, or
// npos (PEM markers only count at the start of a line).
size_t FindAtLineStart(std::string_view text, std::string_view marker, size_t from = 0) {
  for (size_t at = text.find(marker, from); at != std::string_view::npos;
       at = text.find(marker, at + 1)) {
    if (at == 0 || text[at - 1] == '\n') return at;
  }
  return std::string_view::npos;
}

bool HasPublicKeyPem(std::string_view text) {
  return FindAtLineStart(text, kPubBegin) != std::string_view::npos;
}

// DER of every Ed25519 SubjectPublicKeyInfo (RFC 8410) up to the key:
// SEQUENCE { SEQUENCE { OID 1.3.101.112 }, BIT STRING (no unused bits) }.
constexpr uint8_t kEd25519SpkiPrefix[12] = {0x30, 0x2a, 0x30, 0x05, 0x06, 0x03,
                                            0x2b, 0x65, 0x70, 0x03, 0x21, 0x00};
constexpr size_t kEd25519SpkiSize = sizeof(kEd25519SpkiPrefix) + 32;

// The raw key of a public key PEM in the form every Ed25519 key file has (the
// first PUBLIC KEY block is the base64 of the 44-byte DER above), decoded
// without OpenSSL's decoders (which cost ~0.6 ms a file); nullopt for any
// other text, which the caller hands to OpenSSL to decide and explain.
std::optional<std::array<uint8_t, 32>> FastEd25519PublicPem(std::string_view text) {
  const size_t begin = FindAtLineStart(text, kPubBegin);
  if (begin == std::string_view::npos) return std::nullopt;
  const size_t body = begin + kPubBegin.size();
  const size_t end = FindAtLineStart(text, kPubEnd, body);
  if (end == std::string_view::npos) return std::nullopt;
  std::string b64;
  for (const char c : text.substr(body, end - body)) {
    if (c == ' ' || c == '\t' || c == '\r' || c == '\n') continue;
    b64 += c;
    if (b64.size() > 60) return std::nullopt;
  }
  // 44 bytes = 60 base64 characters, the last one '=' padding.
  if (b64.size() != 60 || b64[59] != '=' || b64[58] == '=') return std::nullopt;
  uint8_t der[45];
  if (EVP_DecodeBlock(der, reinterpret_cast<const unsigned char*>(b64.data()), 60) != 45) {
    return std::nullopt;
  }
  if (std::memcmp(der, kEd25519SpkiPrefix, sizeof kEd25519SpkiPrefix) != 0) return std::nullopt;
  std::array<uint8_t, 32> raw;
  std::memcpy(raw.data(), der + sizeof kEd25519SpkiPrefix, raw.size());
  static_assert(kEd25519SpkiSize == 44);
  return raw;
}

// The raw key of the Ed25519 public key PEM `text` (from `display`): the fast
// path above, else OpenSSL's PEM reader.
Result<std::array<uint8_t, 32>> ParseEd25519PublicPem(const std::string& text,
                                                      const std::string& display) {
  if (auto raw = FastEd25519PublicPem(text)) return *raw;
  ERR_clear_error();  // messages must not carry stale errors
  BioPtr bio(BIO_new_mem_buf(text.data(), static_cast<int>(text.size())));
  if (!bio) return Status::Internal("BIO_new_mem_buf: " + OpensslErrors());
  PkeyPtr pkey(PEM_read_bio_PUBKEY(bio.get(), nullptr, NoPassphrase, nullptr));
  if (!pkey) {
    return Status::InvalidArgument(
        "key file " + display +
        ": not a PEM public key (SubjectPublicKeyInfo): " + OpensslErrors());
  }
  CX_RETURN_IF_ERROR(CheckEd25519(pkey.get(), display));
  return RawPublic(pkey.get());
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

Result<PrivateKey> PrivateKey::LoadPem(const std::string& path, const WarningSink& warn) {
  ERR_clear_error();  // messages must not carry stale errors
  SecretString pem;
  struct stat st;
  CX_RETURN_IF_ERROR(ReadKeyFile(path, &pem.s, &st));
  BioPtr bio(BIO_new_mem_buf(pem.s.data(), static_cast<int>(pem.s.size())));
  if (!bio) return Status::Internal("BIO_new_mem_buf: " + OpensslErrors());
  PkeyPtr pkey(PEM_read_bio_PrivateKey(bio.get(), nullptr, NoPassphrase, nullptr));
  if (!pkey && HasPublicKeyPem(pem.s)) {
    ERR_clear_error();
    return Status::InvalidArgument(path +
                                   " is a public key; --key needs the private key (the file "
                                   "without .pub)");
  }
  if (!pkey) {
    return Status::InvalidArgument("key file " + path +
                                   ": not an unencrypted PEM private key: " + OpensslErrors());
  }
  CX_RETURN_IF_ERROR(CheckEd25519(pkey.get(), path));
  // Warned, not refused: the exposure has already happened (refusing cannot
  // undo it), and build pipelines often get keys as 0644 files in
  // single-user containers. The warning says what to do.
  if ((st.st_mode & (S_IRWXG | S_IRWXO)) != 0 && warn) {
    warn("private key " + path + " is accessible by others (mode " + OctalMode(st.st_mode) +
         "): anyone who read it can sign images; chmod 600 it, and replace the key if it was "
         "exposed");
  }
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
  std::string pem;
  struct stat st;
  CX_RETURN_IF_ERROR(ReadKeyFile(path, &pem, &st));
  CX_ASSIGN_OR_RETURN(const auto raw, ParseEd25519PublicPem(pem, path));
  CX_ASSIGN_OR_RETURN(PublicKey key, FromRaw(raw));
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

std::array<uint8_t, 32> PublicKey::raw() const { return RawPublic(impl_->pkey.get()); }

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

// ---- Warnings, trust source ------------------------------------------------------

void WarnToStderr(const std::string& message) {
  std::fprintf(stderr, "%s: warning: %s\n", program_invocation_short_name, message.c_str());
}

Status CheckTrustSource(bool dir_given, bool pubkey_given) {
  if (dir_given && pubkey_given) {
    return Status::InvalidArgument(
        "trust and pubkey exclude each other: give a directory of trusted keys (trust) or "
        "exactly one key (pubkey), not both");
  }
  return Status::Ok();
}

// ---- TrustStore ---------------------------------------------------------------

// A key found in a file; its OpenSSL object is made when Find first returns it.
struct TrustedKey {
  std::string origin;
  std::array<uint8_t, 32> raw;
  std::optional<PublicKey> key;
};

// Calls `fn(name)` for each name in dir_fd that may be a key file ("*.pub",
// not hidden, not certainly a directory or FIFO...) until it returns false.
Status ForEachKeyName(int dir_fd, const std::string& dir,
                      const std::function<bool(const std::string&)>& fn) {
  const int list_fd = fcntl(dir_fd, F_DUPFD_CLOEXEC, 0);
  if (list_fd < 0) return Status::FromErrno(errno, "trusted key directory " + dir);
  struct DirCloser {
    void operator()(DIR* d) const { closedir(d); }
  };
  std::unique_ptr<DIR, DirCloser> d(fdopendir(list_fd));
  if (!d) {
    const int err = errno;
    close(list_fd);
    return Status::FromErrno(err, "trusted key directory " + dir);
  }
  rewinddir(d.get());  // the duplicate shares dir_fd's position with earlier listings
  errno = 0;
  while (const dirent* e = readdir(d.get())) {
    const std::string name = e->d_name;
    // Hidden files (and ".pub" itself) are skipped like a shell glob would.
    const bool maybe_file = e->d_type == DT_REG || e->d_type == DT_LNK || e->d_type == DT_UNKNOWN;
    if (name[0] != '.' && EndsWith(name, ".pub") && maybe_file && !fn(name)) return Status::Ok();
    errno = 0;
  }
  if (errno != 0) return Status::FromErrno(errno, "reading trusted key directory " + dir);
  return Status::Ok();
}

struct TrustStore::State {
  std::string source;      // DIR or FILE, for messages
  int dir_fd = -1;         // the checked directory (LoadDir only)
  uid_t euid = geteuid();  // who may own the directory and key files, besides root
  WarningSink warn;        // for key files skipped when read
  std::mutex mu;           // guards everything below (Find is lazy and thread-safe)
  std::optional<std::vector<std::string>> names;  // *.pub names, sorted, once listed
  std::set<std::string> read;                     // names already read
  std::map<KeyId, TrustedKey> keys;
  size_t skipped = 0;
  bool all_read = true;  // nothing (more) to read; LoadDir starts with false

  State() = default;
  State(const State&) = delete;
  State& operator=(const State&) = delete;
  ~State() {
    if (dir_fd >= 0) close(dir_fd);
  }

  std::string PathOf(const std::string& name) const {
    return source + (EndsWith(source, "/") ? "" : "/") + name;
  }

  void Skip(const std::string& path, const std::string& why) {
    ++skipped;
    if (warn) warn("skipping trusted key " + path + ": " + why);
  }

  // Reads key file `name` of the directory once: indexes its key, or skips
  // it with a warning. `probe`: the name is a guess (Find's key id names), so
  // its absence is no news and it stays unread.
  void ReadName(const std::string& name, bool probe = false) {
    if (read.count(name) != 0) return;
    const std::string path = PathOf(name);
    std::string pem;
    struct stat st {};
    const Status r = ReadKeyFileAt(dir_fd, name, path, &pem, &st);
    if (probe && r.code() == Code::kNotFound) return;
    read.insert(name);
    // Directories and FIFOs named *.pub are not key files (as before);
    // st_mode stays 0 when the open itself failed.
    if (!r.ok() && st.st_mode != 0 && !S_ISREG(st.st_mode)) return;
    if (!r.ok()) return Skip(path, r.message());
    if (const std::string why = UnsafeOwnership(st, euid); !why.empty()) {
      return Skip(path,
                  "it " + why + ", so someone else could replace the key (chmod go-w, chown)");
    }
    Result<std::array<uint8_t, 32>> raw = ParseEd25519PublicPem(pem, path);
    if (!raw.ok()) return Skip(path, raw.status().message());
    const KeyId id = Sha256::Hash(raw->data(), raw->size());
    keys.try_emplace(id, TrustedKey{path, *raw, std::nullopt});  // a duplicate keeps the first
  }

  // Lists the directory once. A listing error is reported as a warning: the
  // keys read so far still count.
  const std::vector<std::string>& Names() {
    if (!names) {
      names.emplace();
      const Status st = ForEachKeyName(dir_fd, source, [this](const std::string& name) {
        names->push_back(name);
        return true;
      });
      if (!st.ok() && warn) warn(st.message());
      std::sort(names->begin(), names->end());  // deterministic order and messages
    }
    return *names;
  }

  void ReadAll() {
    if (all_read) return;
    for (const std::string& name : Names()) ReadName(name);
    all_read = true;
  }

  const PublicKey* Lookup(const KeyId& id) {
    const auto it = keys.find(id);
    if (it == keys.end()) return nullptr;
    TrustedKey& k = it->second;
    if (!k.key) {
      Result<PublicKey> key = PublicKey::FromRaw(k.raw);
      if (!key.ok()) {
        Skip(k.origin, key.status().message());
        keys.erase(it);
        return nullptr;
      }
      k.key.emplace(std::move(key).value());
      k.key->origin_ = k.origin;
    }
    return &*k.key;
  }
};

TrustStore::TrustStore() : s_(std::make_unique<State>()) {}
TrustStore::~TrustStore() = default;
TrustStore::TrustStore(TrustStore&&) noexcept = default;
TrustStore& TrustStore::operator=(TrustStore&&) noexcept = default;

Result<TrustStore> TrustStore::LoadDir(const std::string& dir, WarningSink warn) {
  TrustStore store;
  State& s = *store.s_;
  s.source = dir;
  s.warn = std::move(warn);
  s.all_read = false;
  s.dir_fd = open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (s.dir_fd < 0) return Status::FromErrno(errno, "trusted key directory " + dir);
  struct stat st;
  if (fstat(s.dir_fd, &st) != 0) return Status::FromErrno(errno, "trusted key directory " + dir);
  if (const std::string why = UnsafeOwnership(st, s.euid); !why.empty()) {
    return Status::Permission("trusted key directory " + dir + " " + why +
                              ", so someone else could add a key; refusing it (chmod go-w, "
                              "chown)");
  }
  // Listing stops at the first candidate: the full listing waits for a
  // lookup that needs it (Find).
  bool any = false;
  CX_RETURN_IF_ERROR(ForEachKeyName(s.dir_fd, dir, [&any](const std::string&) {
    any = true;
    return false;
  }));
  if (!any) return Status::NotFound("no *.pub keys in " + dir);
  return store;
}

Result<TrustStore> TrustStore::LoadFile(const std::string& pub_path) {
  std::string pem;
  struct stat st;
  CX_RETURN_IF_ERROR(ReadKeyFile(pub_path, &pem, &st));
  if (const std::string why = UnsafeOwnership(st, geteuid()); !why.empty()) {
    return Status::Permission("trusted key " + pub_path + " " + why +
                              ", so someone else could replace the key; refusing it (chmod go-w, "
                              "chown)");
  }
  CX_ASSIGN_OR_RETURN(const auto raw, ParseEd25519PublicPem(pem, pub_path));
  TrustStore store;
  State& s = *store.s_;
  s.source = pub_path;
  s.read.insert(pub_path);
  s.keys.try_emplace(Sha256::Hash(raw.data(), raw.size()), TrustedKey{pub_path, raw, std::nullopt});
  return store;
}

const PublicKey* TrustStore::Find(const KeyId& id) const {
  if (!s_) return nullptr;
  State& s = *s_;
  std::lock_guard<std::mutex> lock(s.mu);
  if (const PublicKey* k = s.Lookup(id)) return k;
  if (s.all_read) return nullptr;
  // A file named after the key id first, without listing the directory: in
  // a directory named that way a lookup reads one file whatever its size.
  const std::string hex = HexEncode(id);
  s.ReadName(hex + ".pub", /*probe=*/true);
  s.ReadName(hex.substr(0, 16) + ".pub", /*probe=*/true);
  if (const PublicKey* k = s.Lookup(id)) return k;
  s.ReadAll();
  return s.Lookup(id);
}

size_t TrustStore::size() const {
  if (!s_) return 0;
  std::lock_guard<std::mutex> lock(s_->mu);
  return s_->all_read ? s_->keys.size() : s_->Names().size();
}

std::string TrustStore::Describe() const {
  if (!s_ || s_->source.empty()) return "no trusted keys";
  std::lock_guard<std::mutex> lock(s_->mu);
  State& s = *s_;
  const size_t n = s.all_read ? s.keys.size() : s.Names().size();
  std::string out = s.source + " (" + std::to_string(n) + (n == 1 ? " key" : " keys");
  if (s.skipped != 0) out += ", " + std::to_string(s.skipped) + " skipped";
  return out + ")";
}

size_t TrustStore::files_read() const {
  if (!s_) return 0;
  std::lock_guard<std::mutex> lock(s_->mu);
  return s_->read.size();
}

}  // namespace cryptex
