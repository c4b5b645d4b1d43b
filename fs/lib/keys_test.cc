#include "keys.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <filesystem>
#include <set>
#include <string>
#include <vector>

#include "test_util.h"

namespace cryptex {
namespace {

using test::Contains;

using test::ReadFile;
using test::RunCommand;
using test::ShellQuote;
using test::TempDir;
using test::WriteFile;

std::span<const uint8_t> Bytes(const std::string& s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

PrivateKey NewKey() {
  Result<PrivateKey> k = PrivateKey::Generate();
  EXPECT_TRUE(k.ok()) << k.status().ToString();
  return std::move(k).value();
}

std::set<std::string> ListDir(const std::string& dir) {
  std::set<std::string> names;
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    names.insert(e.path().filename().string());
  }
  return names;
}

mode_t Mode(const std::string& path) {
  struct stat st;
  EXPECT_EQ(stat(path.c_str(), &st), 0) << path;
  return st.st_mode & 07777;
}

TEST(KeysTest, SignVerifyRoundTrip) {
  const PrivateKey key = NewKey();
  const std::string msg = "superblock bytes";
  Result<Ed25519Sig> sig = key.Sign(Bytes(msg));
  ASSERT_TRUE(sig.ok()) << sig.status().ToString();
  Result<PublicKey> pub = PublicKey::FromRaw(key.raw_public());
  ASSERT_TRUE(pub.ok()) << pub.status().ToString();
  EXPECT_EQ(pub->id(), key.id());
  EXPECT_TRUE(pub->Verify(Bytes(msg), *sig));
  // Ed25519 is deterministic.
  Result<Ed25519Sig> again = key.Sign(Bytes(msg));
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(*again, *sig);
  // Empty message works too.
  Result<Ed25519Sig> empty_sig = key.Sign({});
  ASSERT_TRUE(empty_sig.ok());
  EXPECT_TRUE(pub->Verify({}, *empty_sig));
}

TEST(KeysTest, AnyFlippedBitFails) {
  const PrivateKey key = NewKey();
  Result<PublicKey> pub = PublicKey::FromRaw(key.raw_public());
  ASSERT_TRUE(pub.ok());
  const std::string msg = test::RandomBytes(512, 1);
  Result<Ed25519Sig> sig = key.Sign(Bytes(msg));
  ASSERT_TRUE(sig.ok());
  for (size_t bit = 0; bit < msg.size() * 8; bit += 37) {
    std::string bad = msg;
    bad[bit / 8] ^= static_cast<char>(1 << (bit % 8));
    EXPECT_FALSE(pub->Verify(Bytes(bad), *sig)) << "message bit " << bit;
  }
  for (size_t bit = 0; bit < 64 * 8; ++bit) {
    Ed25519Sig bad = *sig;
    bad[bit / 8] ^= static_cast<uint8_t>(1 << (bit % 8));
    EXPECT_FALSE(pub->Verify(Bytes(msg), bad)) << "signature bit " << bit;
  }
  // Truncated or extended signatures.
  EXPECT_FALSE(pub->Verify(Bytes(msg), std::span<const uint8_t>(sig->data(), 63)));
  std::vector<uint8_t> longer(sig->begin(), sig->end());
  longer.push_back(0);
  EXPECT_FALSE(pub->Verify(Bytes(msg), longer));
  EXPECT_FALSE(pub->Verify(Bytes(msg), {}));
}

TEST(KeysTest, WrongKeyFails) {
  const PrivateKey a = NewKey();
  const PrivateKey b = NewKey();
  EXPECT_NE(a.id(), b.id());
  const std::string msg = "hello";
  Result<Ed25519Sig> sig = a.Sign(Bytes(msg));
  ASSERT_TRUE(sig.ok());
  Result<PublicKey> pub_b = PublicKey::FromRaw(b.raw_public());
  ASSERT_TRUE(pub_b.ok());
  EXPECT_FALSE(pub_b->Verify(Bytes(msg), *sig));
}

TEST(KeysTest, KeyIdIsSha256OfRawPublicKey) {
  const PrivateKey key = NewKey();
  const std::array<uint8_t, 32> raw = key.raw_public();
  EXPECT_EQ(key.id(), Sha256::Hash(raw.data(), raw.size()));
  EXPECT_EQ(PublicKey::FromRaw(std::span<const uint8_t>(raw.data(), 31)).status().code(),
            Code::kInvalidArgument);
}

TEST(KeysTest, SavePairAndLoadBack) {
  TempDir dir;
  const std::string path = dir.Join("vendor");
  const PrivateKey key = NewKey();
  ASSERT_TRUE(key.SavePair(path).ok());
  EXPECT_EQ(ListDir(dir.path()), (std::set<std::string>{"vendor", "vendor.pub"}));
  EXPECT_EQ(Mode(path), 0600u);
  EXPECT_EQ(Mode(path + ".pub"), 0644u);
  EXPECT_TRUE(Contains(ReadFile(path), "-----BEGIN PRIVATE KEY-----"));  // PKCS#8
  EXPECT_TRUE(Contains(ReadFile(path + ".pub"), "-----BEGIN PUBLIC KEY-----"));
  EXPECT_FALSE(Contains(ReadFile(path + ".pub"), "PRIVATE"));

  Result<PrivateKey> loaded = PrivateKey::LoadPem(path);
  ASSERT_TRUE(loaded.ok()) << loaded.status().ToString();
  EXPECT_EQ(loaded->id(), key.id());
  Result<PublicKey> pub = PublicKey::LoadPem(path + ".pub");
  ASSERT_TRUE(pub.ok()) << pub.status().ToString();
  EXPECT_EQ(pub->id(), key.id());
  EXPECT_EQ(pub->origin(), path + ".pub");
  const std::string msg = "signed by the reloaded key";
  Result<Ed25519Sig> sig = loaded->Sign(Bytes(msg));
  ASSERT_TRUE(sig.ok());
  EXPECT_TRUE(pub->Verify(Bytes(msg), *sig));
}

// Interoperability oracle: the openssl CLI reads our files and verifies our
// signature; we verify one made by the CLI.
TEST(KeysTest, InteroperatesWithOpensslCli) {
  TempDir dir;
  const std::string path = dir.Join("k");
  const PrivateKey key = NewKey();
  ASSERT_TRUE(key.SavePair(path).ok());
  const std::string msg = test::RandomBytes(300, 2);
  WriteFile(dir.Join("msg"), msg);
  Result<Ed25519Sig> sig = key.Sign(Bytes(msg));
  ASSERT_TRUE(sig.ok());
  WriteFile(dir.Join("sig"), std::string(sig->begin(), sig->end()));

  EXPECT_EQ(RunCommand("openssl pkey -in " + ShellQuote(path) + " -noout").exit_code, 0);
  const test::CommandResult v = RunCommand(
      "openssl pkeyutl -verify -pubin -inkey " + ShellQuote(path + ".pub") + " -rawin -in " +
      ShellQuote(dir.Join("msg")) + " -sigfile " + ShellQuote(dir.Join("sig")));
  EXPECT_EQ(v.exit_code, 0) << v.out;
  EXPECT_TRUE(Contains(v.out, "Signature Verified Successfully")) << v.out;

  const test::CommandResult s = RunCommand("openssl pkeyutl -sign -inkey " + ShellQuote(path) +
                                           " -rawin -in " + ShellQuote(dir.Join("msg")));
  ASSERT_EQ(s.exit_code, 0);
  ASSERT_EQ(s.out.size(), 64u);
  Result<PublicKey> pub = PublicKey::LoadPem(path + ".pub");
  ASSERT_TRUE(pub.ok());
  EXPECT_TRUE(pub->Verify(Bytes(msg), Bytes(s.out)));

  // And a key generated by the CLI loads.
  const std::string cli_key = dir.Join("cli");
  ASSERT_EQ(RunCommand("openssl genpkey -algorithm ed25519 -out " + ShellQuote(cli_key)).exit_code,
            0);
  EXPECT_TRUE(PrivateKey::LoadPem(cli_key).ok());
}

TEST(KeysTest, SavePairRefusesToOverwriteKey) {
  TempDir dir;
  const std::string path = dir.Join("k");
  WriteFile(path, "precious");
  const Status st = NewKey().SavePair(path);
  EXPECT_EQ(st.code(), Code::kExists) << st.ToString();
  EXPECT_TRUE(Contains(st.message(), path)) << st.message();
  EXPECT_EQ(ReadFile(path), "precious");
  EXPECT_EQ(ListDir(dir.path()), std::set<std::string>{"k"});  // no .pub, no temp files
}

TEST(KeysTest, SavePairRefusesToOverwritePub) {
  TempDir dir;
  const std::string path = dir.Join("k");
  WriteFile(path + ".pub", "precious");
  const Status st = NewKey().SavePair(path);
  EXPECT_EQ(st.code(), Code::kExists) << st.ToString();
  EXPECT_TRUE(Contains(st.message(), path + ".pub")) << st.message();
  EXPECT_EQ(ReadFile(path + ".pub"), "precious");
  EXPECT_EQ(ListDir(dir.path()), std::set<std::string>{"k.pub"});  // no key, no temp files
}

TEST(KeysTest, SavePairRefusesDanglingSymlink) {
  TempDir dir;
  const std::string path = dir.Join("k");
  ASSERT_EQ(symlink(dir.Join("elsewhere").c_str(), (path + ".pub").c_str()), 0);
  EXPECT_EQ(NewKey().SavePair(path).code(), Code::kExists);
  EXPECT_EQ(ListDir(dir.path()), std::set<std::string>{"k.pub"});
}

TEST(KeysTest, SavePairIntoMissingDirectory) {
  TempDir dir;
  const std::string path = dir.Join("nodir/k");
  const Status st = NewKey().SavePair(path);
  EXPECT_FALSE(st.ok());
  EXPECT_TRUE(Contains(st.message(), path)) << st.message();
  EXPECT_TRUE(ListDir(dir.path()).empty());
}

TEST(KeysTest, LoadPemErrorsNameTheFile) {
  TempDir dir;
  const std::string garbage = dir.Join("garbage.pem");
  WriteFile(garbage, "this is not a key\n");
  const std::string missing = dir.Join("missing.pem");
  const std::string empty = dir.Join("empty.pem");
  WriteFile(empty, "");
  const std::string fifo = dir.Join("fifo.pem");  // must not block
  ASSERT_EQ(mkfifo(fifo.c_str(), 0600), 0);

  for (const std::string& p : {garbage, missing, empty, fifo, dir.path()}) {
    Result<PrivateKey> k = PrivateKey::LoadPem(p);
    ASSERT_FALSE(k.ok()) << p;
    EXPECT_TRUE(Contains(k.status().message(), p)) << k.status().ToString();
    Result<PublicKey> pk = PublicKey::LoadPem(p);
    ASSERT_FALSE(pk.ok()) << p;
    EXPECT_TRUE(Contains(pk.status().message(), p)) << pk.status().ToString();
  }
  EXPECT_EQ(PrivateKey::LoadPem(missing).status().code(), Code::kNotFound);
  EXPECT_EQ(PrivateKey::LoadPem(garbage).status().code(), Code::kInvalidArgument);

  // The wrong kind of PEM, and a non-Ed25519 key.
  const std::string pair = dir.Join("pair");
  ASSERT_TRUE(NewKey().SavePair(pair).ok());
  EXPECT_FALSE(PrivateKey::LoadPem(pair + ".pub").ok());
  EXPECT_FALSE(PublicKey::LoadPem(pair).ok());
  const std::string ec = dir.Join("ec.pem");
  ASSERT_EQ(RunCommand("openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out " +
                       ShellQuote(ec) + " 2>/dev/null")
                .exit_code,
            0);
  Result<PrivateKey> eck = PrivateKey::LoadPem(ec);
  EXPECT_EQ(eck.status().code(), Code::kUnsupported) << eck.status().ToString();
  EXPECT_TRUE(Contains(eck.status().message(), ec));

  // An encrypted key is refused, without prompting for a passphrase.
  const std::string enc = dir.Join("enc.pem");
  ASSERT_EQ(RunCommand("openssl genpkey -algorithm ed25519 -aes-256-cbc -pass pass:secret -out " +
                       ShellQuote(enc))
                .exit_code,
            0);
  Result<PrivateKey> enck = PrivateKey::LoadPem(enc);
  EXPECT_FALSE(enck.ok());
  EXPECT_TRUE(Contains(enck.status().message(), enc));
}

TEST(TrustStoreTest, FindsKeysById) {
  TempDir dir;
  const PrivateKey a = NewKey();
  const PrivateKey b = NewKey();
  ASSERT_TRUE(a.SavePair(dir.Join("a")).ok());
  ASSERT_TRUE(b.SavePair(dir.Join("b")).ok());
  WriteFile(dir.Join("README"), "not a key, not *.pub");
  ASSERT_EQ(mkdir(dir.Join("sub.pub").c_str(), 0755), 0);  // not regular files: skipped
  ASSERT_EQ(mkfifo(dir.Join("fifo.pub").c_str(), 0644), 0);

  Result<TrustStore> store = TrustStore::LoadDir(dir.path());
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  EXPECT_EQ(store->size(), 2u);
  EXPECT_EQ(store->Describe(), dir.path() + " (2 keys)");
  const PublicKey* found = store->Find(a.id());
  ASSERT_NE(found, nullptr);
  EXPECT_EQ(found->id(), a.id());
  EXPECT_EQ(found->origin(), dir.Join("a.pub"));
  ASSERT_NE(store->Find(b.id()), nullptr);
  EXPECT_EQ(store->Find(NewKey().id()), nullptr);

  const std::string msg = "m";
  Result<Ed25519Sig> sig = b.Sign(Bytes(msg));
  ASSERT_TRUE(sig.ok());
  EXPECT_TRUE(store->Find(b.id())->Verify(Bytes(msg), *sig));
  EXPECT_FALSE(store->Find(a.id())->Verify(Bytes(msg), *sig));

  Result<TrustStore> one = TrustStore::LoadFile(dir.Join("a.pub"));
  ASSERT_TRUE(one.ok());
  EXPECT_EQ(one->size(), 1u);
  EXPECT_NE(one->Find(a.id()), nullptr);
  EXPECT_EQ(one->Find(b.id()), nullptr);
}

TEST(TrustStoreTest, MissingDirectory) {
  TempDir dir;
  const std::string missing = dir.Join("nope");
  Result<TrustStore> store = TrustStore::LoadDir(missing);
  EXPECT_EQ(store.status().code(), Code::kNotFound);
  EXPECT_TRUE(Contains(store.status().message(), missing)) << store.status().ToString();
}

TEST(TrustStoreTest, DirectoryWithoutKeys) {
  TempDir dir;
  ASSERT_TRUE(NewKey().SavePair(dir.Join("k")).ok());
  ASSERT_EQ(unlink(dir.Join("k.pub").c_str()), 0);  // only a private key is left
  Result<TrustStore> store = TrustStore::LoadDir(dir.path());
  EXPECT_EQ(store.status().code(), Code::kNotFound);
  EXPECT_EQ(store.status().message(), "no *.pub keys in " + dir.path());
}

// Collects the warnings a store or key load gives.
struct Warnings {
  std::vector<std::string> lines;
  WarningSink sink() {
    return [this](const std::string& m) { lines.push_back(m); };
  }
  bool AnyNames(const std::string& what) const {
    for (const auto& l : lines)
      if (Contains(l, what)) return true;
    return false;
  }
};

// Writes `key`'s public half to `path` (a copy of what SavePair writes).
void WritePub(const PrivateKey& key, const std::string& path) {
  TempDir tmp;
  ASSERT_TRUE(key.SavePair(tmp.Join("k")).ok());
  WriteFile(path, ReadFile(tmp.Join("k.pub")));
  ASSERT_EQ(chmod(path.c_str(), 0644), 0);
}

// One bad .pub among good ones does not take the others down: it is skipped
// with a warning naming it (when read), and the store says so on a miss.
TEST(TrustStoreTest, BadPubFileIsSkippedWithAWarningNamingIt) {
  TempDir dir;
  const PrivateKey good = NewKey();
  WritePub(good, dir.Join("good.pub"));
  WriteFile(dir.Join("bad.pub"), "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n");
  WriteFile(dir.Join("empty.pub"), "");
  Warnings w;
  Result<TrustStore> store = TrustStore::LoadDir(dir.path(), w.sink());
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  const PublicKey* k = store->Find(good.id());
  ASSERT_NE(k, nullptr);
  EXPECT_EQ(k->origin(), dir.Join("good.pub"));
  EXPECT_EQ(store->Find(NewKey().id()), nullptr);  // a miss reads every file
  EXPECT_TRUE(w.AnyNames(dir.Join("bad.pub"))) << ::testing::PrintToString(w.lines);
  EXPECT_TRUE(w.AnyNames(dir.Join("empty.pub"))) << ::testing::PrintToString(w.lines);
  EXPECT_EQ(w.lines.size(), 2u) << ::testing::PrintToString(w.lines);
  EXPECT_EQ(store->Describe(), dir.path() + " (1 key, 2 skipped)");

  // The one explicit key file: an error naming it.
  Result<TrustStore> file = TrustStore::LoadFile(dir.Join("bad.pub"));
  ASSERT_FALSE(file.ok());
  EXPECT_TRUE(Contains(file.status().message(), dir.Join("bad.pub")));
}

TEST(TrustStoreTest, DanglingSymlinkIsSkippedWithAWarningNamingIt) {
  TempDir dir;
  const PrivateKey good = NewKey();
  WritePub(good, dir.Join("good.pub"));
  ASSERT_EQ(symlink(dir.Join("gone").c_str(), dir.Join("link.pub").c_str()), 0);
  Warnings w;
  Result<TrustStore> store = TrustStore::LoadDir(dir.path(), w.sink());
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  EXPECT_EQ(store->Find(NewKey().id()), nullptr);
  EXPECT_NE(store->Find(good.id()), nullptr);
  ASSERT_EQ(w.lines.size(), 1u);
  EXPECT_TRUE(w.AnyNames(dir.Join("link.pub"))) << w.lines[0];
}

// Nothing but bad files: the lookup fails (the image is refused), naming
// the count of skipped files.
TEST(TrustStoreTest, OnlyBadFilesFindNothing) {
  TempDir dir;
  WriteFile(dir.Join("bad.pub"), "garbage");
  Warnings w;
  Result<TrustStore> store = TrustStore::LoadDir(dir.path(), w.sink());
  ASSERT_TRUE(store.ok());
  EXPECT_EQ(store->Find(NewKey().id()), nullptr);
  EXPECT_EQ(store->Describe(), dir.path() + " (0 keys, 1 skipped)");
  EXPECT_EQ(w.lines.size(), 1u);
}

// A directory anyone else can write to (or owned by someone else) lets them
// add a key: refused, whatever it holds.
TEST(TrustStoreTest, WritableOrForeignTrustDirectoryIsRefused) {
  for (const mode_t mode : {0777, 0775, 0757, 01777, 0770}) {
    TempDir dir;
    WritePub(NewKey(), dir.Join("k.pub"));
    ASSERT_EQ(chmod(dir.path().c_str(), mode), 0);
    Result<TrustStore> store = TrustStore::LoadDir(dir.path());
    ASSERT_FALSE(store.ok()) << std::oct << mode;
    EXPECT_EQ(store.status().code(), Code::kPermission);
    EXPECT_TRUE(Contains(store.status().message(), dir.path())) << store.status().message();
    EXPECT_TRUE(Contains(store.status().message(), "writable")) << store.status().message();
    char octal[8];
    std::snprintf(octal, sizeof octal, "%04o", static_cast<unsigned>(mode));
    EXPECT_TRUE(Contains(store.status().message(), octal)) << store.status().message();
  }
  TempDir dir;
  WritePub(NewKey(), dir.Join("k.pub"));
  ASSERT_EQ(chown(dir.path().c_str(), 4321, 4321), 0);  // the tests run as root
  Result<TrustStore> store = TrustStore::LoadDir(dir.path());
  EXPECT_EQ(store.status().code(), Code::kPermission);
  EXPECT_TRUE(Contains(store.status().message(), "owned by uid 4321")) << store.status().message();
  // Through a symlink, the directory itself is checked.
  TempDir links;
  ASSERT_EQ(symlink(dir.path().c_str(), links.Join("keys").c_str()), 0);
  EXPECT_EQ(TrustStore::LoadDir(links.Join("keys")).status().code(), Code::kPermission);
  // Root's and the caller's own 0755 directories are fine (TempDir: ours).
  ASSERT_EQ(chown(dir.path().c_str(), 0, 0), 0);
  EXPECT_TRUE(TrustStore::LoadDir(dir.path()).ok());
}

// A key file someone else can write could be replaced by their key: that
// key is not trusted (skipped, loudly), the others still are.
TEST(TrustStoreTest, WritableOrForeignKeyFileIsSkippedWithAWarning) {
  TempDir dir, elsewhere;
  const PrivateKey ok = NewKey(), group = NewKey(), world = NewKey(), foreign = NewKey(),
                   via_link = NewKey();
  WritePub(ok, dir.Join("ok.pub"));
  WritePub(group, dir.Join("group.pub"));
  ASSERT_EQ(chmod(dir.Join("group.pub").c_str(), 0664), 0);
  WritePub(world, dir.Join("world.pub"));
  ASSERT_EQ(chmod(dir.Join("world.pub").c_str(), 0646), 0);
  WritePub(foreign, dir.Join("foreign.pub"));
  ASSERT_EQ(chown(dir.Join("foreign.pub").c_str(), 4321, 0), 0);
  // The file checked is the one read: a symlink's target.
  WritePub(via_link, elsewhere.Join("target.pub"));
  ASSERT_EQ(chmod(elsewhere.Join("target.pub").c_str(), 0666), 0);
  ASSERT_EQ(symlink(elsewhere.Join("target.pub").c_str(), dir.Join("link.pub").c_str()), 0);

  Warnings w;
  Result<TrustStore> store = TrustStore::LoadDir(dir.path(), w.sink());
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  EXPECT_NE(store->Find(ok.id()), nullptr);
  EXPECT_EQ(store->Find(group.id()), nullptr);
  EXPECT_EQ(store->Find(world.id()), nullptr);
  EXPECT_EQ(store->Find(foreign.id()), nullptr);
  EXPECT_EQ(store->Find(via_link.id()), nullptr);
  ASSERT_EQ(w.lines.size(), 4u) << ::testing::PrintToString(w.lines);
  const std::string all = ::testing::PrintToString(w.lines);
  EXPECT_TRUE(w.AnyNames(dir.Join("group.pub") + ": it is group-writable (mode 0664)")) << all;
  EXPECT_TRUE(w.AnyNames(dir.Join("world.pub") + ": it is world-writable (mode 0646)")) << all;
  EXPECT_TRUE(w.AnyNames(dir.Join("foreign.pub") + ": it is owned by uid 4321")) << all;
  EXPECT_TRUE(w.AnyNames(dir.Join("link.pub") + ": it is world-writable (mode 0666)")) << all;

  // As the one explicit key: refused.
  for (const char* name : {"group.pub", "world.pub", "foreign.pub", "link.pub"}) {
    Result<TrustStore> one = TrustStore::LoadFile(dir.Join(name));
    EXPECT_EQ(one.status().code(), Code::kPermission) << name;
    EXPECT_TRUE(Contains(one.status().message(), dir.Join(name))) << one.status().message();
  }
  EXPECT_TRUE(TrustStore::LoadFile(dir.Join("ok.pub")).ok());
}

// Key files named after their key id ("<64 hex>.pub" or the 16-hex short id)
// are found by reading that one file: the other files are never opened
// (their garbage gives no warning).
TEST(TrustStoreTest, LookupByKeyIdNameReadsOneFile) {
  TempDir dir;
  for (int i = 0; i < 300; ++i) WriteFile(dir.Join("garbage" + std::to_string(i) + ".pub"), "x");
  const PrivateKey full = NewKey(), shortid = NewKey();
  WritePub(full, dir.Join(HexEncode(full.id()) + ".pub"));
  WritePub(shortid, dir.Join(HexEncode(shortid.id()).substr(0, 16) + ".pub"));
  Warnings w;
  Result<TrustStore> store = TrustStore::LoadDir(dir.path(), w.sink());
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  EXPECT_EQ(store->files_read(), 0u);  // loading reads no key file
  const PublicKey* k = store->Find(full.id());
  ASSERT_NE(k, nullptr);
  EXPECT_EQ(k->id(), full.id());
  EXPECT_EQ(store->files_read(), 1u);
  ASSERT_NE(store->Find(shortid.id()), nullptr);
  EXPECT_EQ(store->files_read(), 2u);
  EXPECT_TRUE(w.lines.empty()) << ::testing::PrintToString(w.lines);
  EXPECT_EQ(store->Find(full.id()), k);  // found again without reading
  EXPECT_EQ(store->files_read(), 2u);

  // A file with a key id name but another key: not trusted under that id,
  // and the key it holds is still found by its own id.
  TempDir d2;
  const PrivateKey a = NewKey(), b = NewKey();
  WritePub(b, d2.Join(HexEncode(a.id()) + ".pub"));
  Result<TrustStore> s2 = TrustStore::LoadDir(d2.path(), w.sink());
  ASSERT_TRUE(s2.ok());
  EXPECT_EQ(s2->Find(a.id()), nullptr);
  ASSERT_NE(s2->Find(b.id()), nullptr);
  EXPECT_EQ(s2->Find(b.id())->id(), b.id());
}

// Arbitrary names: each file is read at most once per store, whatever the
// number of lookups.
TEST(TrustStoreTest, EachFileIsReadOnce) {
  TempDir dir;
  std::vector<PrivateKey> keys;
  for (int i = 0; i < 20; ++i) {
    keys.push_back(NewKey());
    WritePub(keys.back(), dir.Join("vendor" + std::to_string(i) + ".pub"));
  }
  Result<TrustStore> store = TrustStore::LoadDir(dir.path());
  ASSERT_TRUE(store.ok());
  EXPECT_EQ(store->size(), 20u);
  for (const PrivateKey& k : keys) ASSERT_NE(store->Find(k.id()), nullptr);
  EXPECT_EQ(store->Find(NewKey().id()), nullptr);
  EXPECT_EQ(store->files_read(), 20u);
  EXPECT_EQ(store->Describe(), dir.path() + " (20 keys)");
}

// What the fast reader accepts, OpenSSL agrees with: keys written by the
// openssl CLI (and with CRLF line ends, or text around) load with the same
// id; other key types are refused naming the file.
TEST(TrustStoreTest, PemVariantsAgreeWithOpenssl) {
  TempDir dir;
  const std::string priv = dir.Join("k.pem");
  ASSERT_EQ(RunCommand("openssl genpkey -algorithm ed25519 -out " + ShellQuote(priv)).exit_code, 0);
  Result<PrivateKey> key = PrivateKey::LoadPem(priv);
  ASSERT_TRUE(key.ok());
  const std::string pub = RunCommand("openssl pkey -in " + ShellQuote(priv) + " -pubout").out;
  std::string crlf;
  for (char c : pub) crlf += c == '\n' ? std::string("\r\n") : std::string(1, c);
  const std::vector<std::string> variants = {pub, crlf, "comment line\n" + pub + "trailer\n"};
  for (size_t i = 0; i < variants.size(); ++i) {
    // Appended, not `"v" + std::to_string(i)`: GCC 12 at -O3 reports a false
    // -Wrestrict there (GCC bug 105329).
    std::string name = "v";
    name += std::to_string(i) + ".pub";
    const std::string p = dir.Join(name);
    WriteFile(p, variants[i]);
    Result<PublicKey> pk = PublicKey::LoadPem(p);
    ASSERT_TRUE(pk.ok()) << i << ": " << pk.status().ToString();
    EXPECT_EQ(pk->id(), key->id()) << i;
  }
  const std::string x = dir.Join("x25519.pub");
  ASSERT_EQ(
      RunCommand("openssl genpkey -algorithm x25519 | openssl pkey -pubout -out " + ShellQuote(x))
          .exit_code,
      0);
  Result<PublicKey> xk = PublicKey::LoadPem(x);
  EXPECT_EQ(xk.status().code(), Code::kUnsupported) << xk.status().ToString();
  EXPECT_TRUE(Contains(xk.status().message(), x));
}

TEST(KeysTest, PrivateKeyReadableByOthersIsWarnedAbout) {
  TempDir dir;
  const std::string path = dir.Join("k");
  ASSERT_TRUE(NewKey().SavePair(path).ok());
  Warnings w;
  ASSERT_TRUE(PrivateKey::LoadPem(path, w.sink()).ok());
  EXPECT_TRUE(w.lines.empty()) << w.lines[0];  // 0600: quiet
  for (const mode_t mode : {0644, 0640, 0604, 0660}) {
    ASSERT_EQ(chmod(path.c_str(), mode), 0);
    Warnings w2;
    ASSERT_TRUE(PrivateKey::LoadPem(path, w2.sink()).ok());  // warned, still usable
    ASSERT_EQ(w2.lines.size(), 1u) << std::oct << mode;
    char octal[8];
    std::snprintf(octal, sizeof octal, "%04o", static_cast<unsigned>(mode));
    EXPECT_TRUE(Contains(w2.lines[0], path)) << w2.lines[0];
    EXPECT_TRUE(Contains(w2.lines[0], std::string("mode ") + octal)) << w2.lines[0];
    EXPECT_TRUE(Contains(w2.lines[0], "chmod 600")) << w2.lines[0];
  }
}

TEST(KeysTest, PublicKeyGivenAsPrivateKeyIsNamedAsSuch) {
  TempDir dir;
  const std::string path = dir.Join("k");
  ASSERT_TRUE(NewKey().SavePair(path).ok());
  Result<PrivateKey> k = PrivateKey::LoadPem(path + ".pub");
  EXPECT_EQ(k.status().code(), Code::kInvalidArgument);
  EXPECT_EQ(k.status().message(),
            path + ".pub is a public key; --key needs the private key (the file without .pub)");
}

TEST(KeysTest, TrustSourceRule) {
  EXPECT_TRUE(CheckTrustSource(false, false).ok());
  EXPECT_TRUE(CheckTrustSource(true, false).ok());
  EXPECT_TRUE(CheckTrustSource(false, true).ok());
  const Status both = CheckTrustSource(true, true);
  EXPECT_EQ(both.code(), Code::kInvalidArgument);
  EXPECT_TRUE(Contains(both.message(), "trust and pubkey exclude each other")) << both.message();
}

TEST(TrustStoreTest, EmptyAndMovedFromStoresTrustNothing) {
  TrustStore empty;
  EXPECT_EQ(empty.Find(NewKey().id()), nullptr);
  EXPECT_EQ(empty.size(), 0u);
  EXPECT_EQ(empty.files_read(), 0u);
  TempDir dir;
  const PrivateKey k = NewKey();
  WritePub(k, dir.Join("k.pub"));
  Result<TrustStore> store = TrustStore::LoadDir(dir.path());
  ASSERT_TRUE(store.ok());
  TrustStore moved = std::move(*store);
  EXPECT_NE(moved.Find(k.id()), nullptr);
  EXPECT_EQ(store->Find(k.id()), nullptr);  // NOLINT(bugprone-use-after-move): defined as empty
}

TEST(TrustStoreTest, NotADirectory) {
  TempDir dir;
  WriteFile(dir.Join("file"), "x");
  Result<TrustStore> store = TrustStore::LoadDir(dir.Join("file"));
  EXPECT_EQ(store.status().code(), Code::kNotDirectory);
  EXPECT_TRUE(Contains(store.status().message(), dir.Join("file")));
}

}  // namespace
}  // namespace cryptex
