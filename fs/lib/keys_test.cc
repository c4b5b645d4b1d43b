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

TEST(TrustStoreTest, BadPubFileIsNamed) {
  TempDir dir;
  ASSERT_TRUE(NewKey().SavePair(dir.Join("good")).ok());
  WriteFile(dir.Join("bad.pub"), "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n");
  Result<TrustStore> store = TrustStore::LoadDir(dir.path());
  ASSERT_FALSE(store.ok());
  EXPECT_TRUE(Contains(store.status().message(), dir.Join("bad.pub"))) << store.status().ToString();

  Result<TrustStore> file = TrustStore::LoadFile(dir.Join("bad.pub"));
  ASSERT_FALSE(file.ok());
  EXPECT_TRUE(Contains(file.status().message(), dir.Join("bad.pub")));
}

TEST(TrustStoreTest, DanglingSymlinkIsNamed) {
  TempDir dir;
  ASSERT_TRUE(NewKey().SavePair(dir.Join("good")).ok());
  ASSERT_EQ(symlink(dir.Join("gone").c_str(), dir.Join("link.pub").c_str()), 0);
  Result<TrustStore> store = TrustStore::LoadDir(dir.path());
  ASSERT_FALSE(store.ok());
  EXPECT_TRUE(Contains(store.status().message(), dir.Join("link.pub")))
      << store.status().ToString();
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
