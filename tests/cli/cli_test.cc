// The `cryptex` command as users run it: exit codes, messages, files created
// (and, on failure, not created), outputs of ls/cat/inspect, and the
// independent checks it promises (`veritysetup` with the parameters inspect
// prints). Runs $CRYPTEX_BUILD_DIR/cli/cryptex. Needs root (device nodes,
// ownership, trusted.* xattrs) and a tmpfs at /dev/shm.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "exit_codes.h"
#include "format.h"
#include "image.h"
#include "keys.h"
#include "test_util.h"

namespace cryptex {
namespace {

using namespace cli;  // kExit*: the codes users see

using test::CryptexBin;

using test::Contains;

using test::CommandResult;
using test::FileSize;
using test::FlipByte;
using test::ListDirNames;
using test::ReadFile;
using test::RunCommand;
using test::RunCommandCapture;
using test::RunCryptex;
using test::ShellQuote;
using test::TempDir;
using test::WriteFile;

std::string Q(const std::string& s) { return ShellQuote(s); }

// A text file's worth of lines (like /etc/services, which a minimal system
// does not have): printable, newline-separated, made here.
std::string TextLines(int n) {
  std::string s;
  for (int i = 0; i < n; ++i)
    s += "service-" + std::to_string(i) + "\t" + std::to_string(i) + "/tcp\n";
  return s;
}

// Lines of `s` (without the newlines).
std::vector<std::string> Lines(const std::string& s) {
  std::vector<std::string> out;
  std::istringstream in(s);
  for (std::string line; std::getline(in, line);) out.push_back(line);
  return out;
}

std::vector<std::string> Words(const std::string& s) {
  std::vector<std::string> out;
  std::istringstream in(s);
  for (std::string w; in >> w;) out.push_back(w);
  return out;
}

// A failure report as users see it: one line on stderr, naming `what`, and a
// clean exit (not a signal).
void ExpectOneLineError(const CommandResult& r, const std::string& what) {
  EXPECT_NE(r.exit_code, 0);
  EXPECT_LT(r.exit_code, 128) << "killed by a signal?";
  EXPECT_EQ(Lines(r.err).size(), 1u) << "stderr: " << r.err;
  EXPECT_TRUE(Contains(r.err, what)) << "expected '" << what << "' in: " << r.err;
}

// Entries of `dir` whose names contain ".tmp-" (temporary outputs).
std::vector<std::string> Leftovers(const std::string& dir) {
  std::vector<std::string> out;
  for (const auto& n : ListDirNames(dir)) {
    if (Contains(n, ".tmp-")) out.push_back(n);
  }
  return out;
}

// ---- fixture: a key made with keygen, a trust dir, an every-kind image ---------

class CliTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    work_ = new TempDir;
    src_ = new TempDir(test::TmpfsDir());
    test::MakeEveryKindTree(src_->path());
    key_ = work_->Join("vendor");
    const CommandResult k = RunCryptex("keygen -o " + Q(key_));
    ASSERT_EQ(k.exit_code, 0) << k.err;
    trust_ = work_->Join("keys");
    ASSERT_EQ(mkdir(trust_.c_str(), 0755), 0);
    std::filesystem::copy_file(key_ + ".pub", trust_ + "/vendor.pub");
    image_ = work_->Join("every.cryptex");
    const CommandResult b = RunCryptex(
        "build " + Q(src_->path()) + " -o " + Q(image_) + " --key " + Q(key_) +
        " --name org.example.every --version 2.0 --release-counter 9 --epoch 1700000000 -q");
    ASSERT_EQ(b.exit_code, 0) << b.err;
  }
  static void TearDownTestSuite() {
    delete src_;
    delete work_;
  }

  static std::string Trust() { return " --trust " + Q(trust_); }

  // A copy of the image that a test may corrupt.
  std::string CopyImage(const TempDir& dir, const std::string& name = "copy.cryptex") {
    const std::string p = dir.Join(name);
    std::filesystem::copy_file(image_, p);
    return p;
  }

  static SuperblockInfo Superblock(const std::string& image) {
    auto trust = TrustStore::LoadDir(trust_);
    EXPECT_TRUE(trust.ok());
    ImageOptions o;
    o.trust = &*trust;
    auto img = Image::Open(image, o);
    EXPECT_TRUE(img.ok()) << img.status().ToString();
    return img.ok() ? (*img)->superblock() : SuperblockInfo{};
  }

  static TempDir* work_;
  static TempDir* src_;
  static std::string key_, trust_, image_;
};
TempDir* CliTest::work_ = nullptr;
TempDir* CliTest::src_ = nullptr;
std::string CliTest::key_, CliTest::trust_, CliTest::image_;

// ---- keygen ---------------------------------------------------------------------------

mode_t ModeOf(const std::string& p) {
  struct stat st;
  EXPECT_EQ(lstat(p.c_str(), &st), 0) << p;
  return st.st_mode & 07777;
}

TEST_F(CliTest, KeygenCreatesA0600PrivateKeyAndAPublicKey) {
  TempDir d;
  const CommandResult r = RunCryptex("keygen -o " + Q(d.Join("k")));
  ASSERT_EQ(r.exit_code, kExitOk) << r.err;
  EXPECT_EQ(ListDirNames(d.path()), (std::vector<std::string>{"k", "k.pub"}));
  EXPECT_EQ(ModeOf(d.Join("k")), 0600u);
  EXPECT_EQ(ModeOf(d.Join("k.pub")), 0644u);
  EXPECT_TRUE(Contains(ReadFile(d.Join("k")), "PRIVATE KEY"));
  EXPECT_FALSE(Contains(ReadFile(d.Join("k.pub")), "PRIVATE"));
  // The key id it prints is the one images built with the key carry.
  auto key = PrivateKey::LoadPem(d.Join("k"));
  ASSERT_TRUE(key.ok());
  EXPECT_TRUE(Contains(r.out, HexEncode(key->id()).substr(0, 16))) << r.out;
  // Even with a permissive umask.
  TempDir d2;
  const CommandResult r2 =
      RunCommandCapture("umask 000; " + Q(CryptexBin()) + " keygen -o " + Q(d2.Join("k")));
  ASSERT_EQ(r2.exit_code, kExitOk) << r2.err;
  EXPECT_EQ(ModeOf(d2.Join("k")), 0600u);
}

TEST_F(CliTest, KeygenRefusesToOverwrite) {
  TempDir d;
  ASSERT_EQ(RunCryptex("keygen -o " + Q(d.Join("k"))).exit_code, kExitOk);
  const std::string priv = ReadFile(d.Join("k")), pub = ReadFile(d.Join("k.pub"));
  const CommandResult again = RunCryptex("keygen -o " + Q(d.Join("k")));
  EXPECT_EQ(again.exit_code, kExitExists);
  ExpectOneLineError(again, d.Join("k"));
  EXPECT_EQ(ReadFile(d.Join("k")), priv);
  EXPECT_EQ(ReadFile(d.Join("k.pub")), pub);
  // Only the .pub exists: still refused, and no private key appears.
  TempDir d2;
  WriteFile(d2.Join("k.pub"), "not mine");
  const CommandResult r = RunCryptex("keygen -o " + Q(d2.Join("k")));
  EXPECT_EQ(r.exit_code, kExitExists);
  EXPECT_EQ(ListDirNames(d2.path()), std::vector<std::string>{"k.pub"});
  EXPECT_EQ(ReadFile(d2.Join("k.pub")), "not mine");
  EXPECT_EQ(RunCryptex("keygen").exit_code, kExitUsage);
}

// ---- build ------------------------------------------------------------------------------

TEST_F(CliTest, BuildRefusesAnExistingDestination) {
  TempDir out;
  const std::string dest = out.Join("img");
  WriteFile(dest, "precious");
  const CommandResult r = RunCryptex("build " + Q(src_->path()) + " -o " + Q(dest) + " --key " +
                                     Q(key_) + " --name n --version 1");
  EXPECT_EQ(r.exit_code, kExitExists);
  ExpectOneLineError(r, dest);
  EXPECT_EQ(ReadFile(dest), "precious");
  EXPECT_EQ(ListDirNames(out.path()), std::vector<std::string>{"img"});
}

TEST_F(CliTest, BuildWithAGarbageKeyCreatesNothing) {
  TempDir out;
  WriteFile(out.Join("garbage.key"), "-----BEGIN PRIVATE KEY-----\nnot base64!\n");
  const CommandResult r =
      RunCryptex("build " + Q(src_->path()) + " -o " + Q(out.Join("img")) + " --key " +
                 Q(out.Join("garbage.key")) + " --name n --version 1");
  ExpectOneLineError(r, out.Join("garbage.key"));
  EXPECT_EQ(ListDirNames(out.path()), std::vector<std::string>{"garbage.key"});
  const CommandResult missing =
      RunCryptex("build " + Q(src_->path()) + " -o " + Q(out.Join("img")) + " --key " +
                 Q(out.Join("nokey")) + " --name n --version 1");
  ExpectOneLineError(missing, out.Join("nokey"));
  EXPECT_EQ(ListDirNames(out.path()), std::vector<std::string>{"garbage.key"});
}

TEST_F(CliTest, BuildOfAMissingSourceCreatesNothing) {
  TempDir out;
  const CommandResult r = RunCryptex("build " + Q(out.Join("gone")) + " -o " + Q(out.Join("img")) +
                                     " --key " + Q(key_) + " --name n --version 1");
  EXPECT_EQ(r.exit_code, kExitNotFound);
  ExpectOneLineError(r, out.Join("gone"));
  EXPECT_TRUE(ListDirNames(out.path()).empty());
}

// The output cannot be written completely (file size limit): the build fails
// cleanly and leaves neither the image nor its temporary file.
TEST_F(CliTest, BuildFailingWhileWritingLeavesNoTemporaryFile) {
  TempDir src, out;
  WriteFile(src.Join("big"), test::RandomBytes(4 << 20, 1));
  const std::string dest = out.Join("img");
  const CommandResult r = RunCommandCapture("trap '' XFSZ; ulimit -f 512; " + Q(CryptexBin()) +
                                            " build " + Q(src.path()) + " -o " + Q(dest) +
                                            " --key " + Q(key_) + " --name n --version 1");
  EXPECT_NE(r.exit_code, 0);
  ExpectOneLineError(r, dest);
  EXPECT_TRUE(ListDirNames(out.path()).empty()) << "left behind: " << Leftovers(out.path()).size();
}

TEST_F(CliTest, BuildUsageErrors) {
  TempDir out;
  const std::string base = "build " + Q(src_->path()) + " -o " + Q(out.Join("img")) + " --key " +
                           Q(key_) + " --name n --version 1";
  for (const std::string bad :
       {" --level 0", " --level 23", " --level x", " --chunk-size 3000", " --chunk-size 2M",
        " --chunk-size 2K", " --threads 0", " --epoch yesterday", " --release-counter -1",
        " extra-positional", " --bogus", " --level"}) {
    const CommandResult r = RunCryptex(base + bad);
    EXPECT_EQ(r.exit_code, kExitUsage) << bad << ": " << r.err;
    EXPECT_EQ(Lines(r.err).size(), 1u) << bad << ": " << r.err;
  }
  for (const std::string& missing : std::vector<std::string>{
           " --key " + Q(key_) + " --name n --version 1", " -o x --name n --version 1",
           " -o x --key k --version 1", " -o x --key k --name n"}) {
    EXPECT_EQ(RunCryptex("build " + Q(src_->path()) + missing).exit_code, kExitUsage) << missing;
  }
  EXPECT_TRUE(ListDirNames(out.path()).empty());
}

TEST_F(CliTest, BuildIsReproducible) {
  TempDir out;
  const std::string args = "build " + Q(src_->path()) + " --key " + Q(key_) +
                           " --name org.example.every --version 2.0 --release-counter 9 -q";
  ASSERT_EQ(
      RunCryptex(args + " -o " + Q(out.Join("a")) + " --epoch 1700000000 --threads 1").exit_code,
      0);
  ASSERT_EQ(RunCommandCapture("SOURCE_DATE_EPOCH=1700000000 " + Q(CryptexBin()) + " " + args +
                              " -o " + Q(out.Join("b")) + " --threads 2")
                .exit_code,
            0);
  EXPECT_EQ(RunCommand("cmp -s " + Q(out.Join("a")) + " " + Q(out.Join("b"))).exit_code, 0);
  EXPECT_EQ(RunCommand("cmp -s " + Q(out.Join("a")) + " " + Q(image_)).exit_code, 0)
      << "the fixture image (default threads) is the same bytes";
}

// ---- verify -----------------------------------------------------------------------------

TEST_F(CliTest, VerifyGoodImage) {
  const CommandResult r = RunCryptex("verify " + Q(image_) + Trust());
  EXPECT_EQ(r.exit_code, kExitOk) << r.err;
  EXPECT_TRUE(Contains(r.out, "OK")) << r.out;
  EXPECT_TRUE(Contains(r.out, HexEncode(Superblock(image_).root_hash))) << r.out;
  const CommandResult q = RunCryptex("verify -q " + Q(image_) + Trust());
  EXPECT_EQ(q.exit_code, kExitOk);
  EXPECT_EQ(q.out, "");
  EXPECT_EQ(q.err, "");
  EXPECT_EQ(RunCryptex("verify " + Q(image_) + " --pubkey " + Q(key_ + ".pub")).exit_code, kExitOk);
}

// An image whose every region spans several blocks (4 KiB chunks, thousands
// of entries and xattrs, a 12 KB manifest), built with the CLI.
class CliTamperTest : public CliTest {
 protected:
  static void SetUpTestSuite() {
    CliTest::SetUpTestSuite();
    big_ = new TempDir;
    TempDir src(test::TmpfsDir());
    WriteFile(src.Join("big"), test::RandomBytes(2 << 20, 21));
    ASSERT_EQ(mkdir(src.Join("d").c_str(), 0755), 0);
    for (int i = 0; i < 2000; ++i) {
      const std::string p = src.Join("d/file" + std::to_string(i));
      WriteFile(p, "content " + std::to_string(i));
      if (i % 3 == 0) {
        ASSERT_EQ(setxattr(p.c_str(), "user.x", "1", 1, 0), 0) << p;
      }
    }
    big_image_ = big_->Join("big.cryptex");
    const CommandResult b = RunCryptex(
        "build " + Q(src.path()) + " -o " + Q(big_image_) + " --key " + Q(key_) +
        " --chunk-size 4K --epoch 1 -q --name " + std::string(4000, 'n') + " --version " +
        std::string(4000, 'v') + " --description " + std::string(4000, 'd'));
    ASSERT_EQ(b.exit_code, 0) << b.err;
  }
  static void TearDownTestSuite() {
    delete big_;
    CliTest::TearDownTestSuite();
  }

  void SetUp() override {
    copy_ = big_->Join("copy.cryptex");
    unlink(copy_.c_str());
    std::filesystem::copy_file(big_image_, copy_);
    sb_ = Superblock(big_image_);
    ASSERT_GT(sb_.image_size, 0u);
  }

  // The middle of a block that belongs to region `r` alone.
  uint64_t OffsetOwnedBy(uint32_t r) const {
    const RegionInfo& reg = sb_.regions[r];
    std::vector<uint64_t> found;
    for (uint64_t b = reg.offset / 4096; b * 4096 < reg.offset + reg.length; ++b) {
      bool shared = false;
      for (uint32_t o = 0; o < format::kRegionCount; ++o) {
        const RegionInfo& x = sb_.regions[o];
        if (o != r && x.length > 0 && x.offset < (b + 1) * 4096 && x.offset + x.length > b * 4096) {
          shared = true;
        }
      }
      const uint64_t mid = b * 4096 + 2048;
      if (!shared && mid >= reg.offset && mid < reg.offset + reg.length) found.push_back(mid);
    }
    EXPECT_FALSE(found.empty()) << "region " << format::RegionName(r) << " owns no block";
    return found.empty() ? reg.offset : found[found.size() / 2];
  }

  // Flips the byte at `offset`; `cryptex verify` must exit 3 naming `words`.
  void ExpectVerifyFails(uint64_t offset, const std::string& words) {
    SCOPED_TRACE("offset " + std::to_string(offset) + ", expecting '" + words + "'");
    FlipByte(copy_, offset);
    const CommandResult r = RunCryptex("verify " + Q(copy_) + Trust());
    EXPECT_EQ(r.exit_code, kExitIntegrity) << r.err;
    ExpectOneLineError(r, words);
    EXPECT_TRUE(Contains(r.err, copy_)) << r.err;
    FlipByte(copy_, offset);
  }

  static TempDir* big_;
  static std::string big_image_;
  std::string copy_;
  SuperblockInfo sb_;
};
TempDir* CliTamperTest::big_ = nullptr;
std::string CliTamperTest::big_image_;

TEST_F(CliTamperTest, VerifyNamesTheCorruptRegion) {
  ASSERT_EQ(RunCryptex("verify -q " + Q(copy_) + Trust()).exit_code, kExitOk);
  ExpectVerifyFails(10, "region header");
  for (uint32_t r = 0; r < format::kRegionCount; ++r) {
    ExpectVerifyFails(OffsetOwnedBy(r), std::string("region ") + format::RegionName(r));
  }
  ExpectVerifyFails(sb_.hash_offset + 100, "hash-tree");
  ExpectVerifyFails(sb_.hash_offset + sb_.hash_blocks * 4096 - 1000, "hash-tree");
  const uint64_t last = sb_.image_size - 4096;
  ExpectVerifyFails(last + 120, "signature");         // root hash (signed)
  ExpectVerifyFails(last + 300, "signature");         // reserved (signed)
  ExpectVerifyFails(last + 512 + 60, "signature");    // the signature
  ExpectVerifyFails(last + 512 + 20, "unknown key");  // the key id
  ASSERT_EQ(RunCryptex("verify -q " + Q(copy_) + Trust()).exit_code, kExitOk);
}

TEST_F(CliTest, VerifyRefusesFilesThatAreNotWholeImages) {
  TempDir d;
  const std::string good = ReadFile(image_);
  const size_t n = good.size();
  const std::pair<std::string, std::string> cases[] = {
      {"truncated", good.substr(0, n - 4096)},
      {"truncated-odd", good.substr(0, n - 1)},
      {"appended", good + std::string(4096, '\0')},
      {"appended-byte", good + "\n"},
      {"appended-superblock", good + good.substr(n - 4096)},
      {"empty", ""},
      {"garbage", test::RandomBytes(100000, 4)},
      {"text", TextLines(2000)},
      {"tiny", "CRYPTEX"},
  };
  for (const auto& [name, bytes] : cases) {
    SCOPED_TRACE(name);
    const std::string p = d.Join(name + ".cryptex");
    WriteFile(p, bytes);
    for (const std::string cmd : {"verify", "inspect", "ls"}) {
      const CommandResult r = RunCryptex(cmd + " " + Q(p) + Trust());
      EXPECT_EQ(r.exit_code, kExitIntegrity) << cmd << ": " << r.err;
      ExpectOneLineError(r, p);
    }
  }
  const CommandResult missing = RunCryptex("verify " + Q(d.Join("missing.cryptex")) + Trust());
  EXPECT_EQ(missing.exit_code, kExitNotFound);
  ExpectOneLineError(missing, d.Join("missing.cryptex"));
  const CommandResult dir = RunCryptex("verify " + Q(d.path()) + Trust());
  ExpectOneLineError(dir, d.path());
}

TEST_F(CliTest, VerifyRefusesWrongKeyMissingTrustAndUnsignedImages) {
  TempDir d;
  const std::string id = HexEncode(Superblock(image_).key_id).substr(0, 16);
  // Another vendor's key.
  ASSERT_EQ(RunCryptex("keygen -o " + Q(d.Join("other"))).exit_code, 0);
  ASSERT_EQ(mkdir(d.Join("other-keys").c_str(), 0755), 0);
  std::filesystem::copy_file(d.Join("other.pub"), d.Join("other-keys/other.pub"));
  CommandResult r = RunCryptex("verify " + Q(image_) + " --trust " + Q(d.Join("other-keys")));
  EXPECT_EQ(r.exit_code, kExitIntegrity);
  ExpectOneLineError(r, id);
  EXPECT_TRUE(Contains(r.err, d.Join("other-keys"))) << r.err;
  r = RunCryptex("verify " + Q(image_) + " --pubkey " + Q(d.Join("other.pub")));
  EXPECT_EQ(r.exit_code, kExitIntegrity);
  ExpectOneLineError(r, id);
  // No trust directory, an empty one.
  r = RunCryptex("verify " + Q(image_) + " --trust " + Q(d.Join("no-such-dir")));
  EXPECT_EQ(r.exit_code, kExitIntegrity) << r.err;
  ExpectOneLineError(r, d.Join("no-such-dir"));
  ASSERT_EQ(mkdir(d.Join("empty-keys").c_str(), 0755), 0);
  r = RunCryptex("verify " + Q(image_) + " --trust " + Q(d.Join("empty-keys")));
  EXPECT_EQ(r.exit_code, kExitIntegrity) << r.err;
  ExpectOneLineError(r, d.Join("empty-keys"));
  // The signature block wiped: an unsigned image.
  const std::string unsigned_image = CopyImage(d, "unsigned.cryptex");
  std::string bytes = ReadFile(unsigned_image);
  std::memset(bytes.data() + bytes.size() - 4096 + 512, 0, 128);
  WriteFile(unsigned_image, bytes);
  r = RunCryptex("verify " + Q(unsigned_image) + Trust());
  EXPECT_EQ(r.exit_code, kExitIntegrity);
  ExpectOneLineError(r, "not signed");
  EXPECT_TRUE(Contains(r.err, unsigned_image));
}

// ---- extract ----------------------------------------------------------------------------

TEST_F(CliTest, ExtractRoundTripsEveryKindOfEntry) {
  TempDir out(test::TmpfsDir());
  const std::string dest = out.Join("x");
  const CommandResult r = RunCryptex("extract " + Q(image_) + " " + Q(dest) + Trust());
  ASSERT_EQ(r.exit_code, kExitOk) << r.err;
  EXPECT_EQ(r.err, "") << "no warnings as root";
  const auto diffs = test::CompareTrees(src_->path(), dest);
  for (const auto& d : diffs) ADD_FAILURE() << d;
  // GNU diff as a second opinion. It calls special files equal only when even
  // their ctimes match (never, for a copy), so those four are left to
  // CompareTrees.
  const CommandResult diff =
      RunCommandCapture("diff -r --no-dereference -x fifo -x sock -x cdev -x bdev " +
                        Q(src_->path()) + " " + Q(dest));
  EXPECT_EQ(diff.exit_code, 0) << diff.out << diff.err;
  EXPECT_EQ(diff.out, "");
  // Holes stay holes.
  struct stat st;
  ASSERT_EQ(stat((dest + "/sparse").c_str(), &st), 0);
  EXPECT_LT(static_cast<uint64_t>(st.st_blocks) * 512, static_cast<uint64_t>(st.st_size) / 4);
  EXPECT_EQ(Leftovers(out.path()), std::vector<std::string>{});
}

TEST_F(CliTest, ExtractRefusesAnExistingDirectory) {
  TempDir out;
  const std::string dest = out.Join("x");
  ASSERT_EQ(mkdir(dest.c_str(), 0755), 0);
  WriteFile(dest + "/mine", "keep");
  const CommandResult r = RunCryptex("extract " + Q(image_) + " " + Q(dest) + Trust());
  EXPECT_EQ(r.exit_code, kExitExists);
  ExpectOneLineError(r, dest);
  EXPECT_EQ(ListDirNames(dest), std::vector<std::string>{"mine"});
  EXPECT_EQ(ListDirNames(out.path()), std::vector<std::string>{"x"});
  // Also with a trailing slash, and onto a file or a dangling symlink.
  EXPECT_EQ(RunCryptex("extract " + Q(image_) + " " + Q(dest + "/") + Trust()).exit_code,
            kExitExists);
  WriteFile(out.Join("file"), "f");
  EXPECT_EQ(RunCryptex("extract " + Q(image_) + " " + Q(out.Join("file")) + Trust()).exit_code,
            kExitExists);
  ASSERT_EQ(symlink("nowhere", out.Join("dangling").c_str()), 0);
  EXPECT_EQ(RunCryptex("extract " + Q(image_) + " " + Q(out.Join("dangling")) + Trust()).exit_code,
            kExitExists);
  EXPECT_EQ(ListDirNames(out.path()), (std::vector<std::string>{"dangling", "file", "x"}));
}

TEST_F(CliTest, ExtractOfACorruptImageLeavesNothing) {
  TempDir d, out(test::TmpfsDir());  // tmpfs: room for every xattr, so only the corruption fails
  const std::string bad = CopyImage(d);
  const SuperblockInfo sb = Superblock(bad);
  const RegionInfo& data = sb.regions[format::kRegionData];
  FlipByte(bad, data.offset + data.length / 2);
  const std::string dest = out.Join("x");
  const CommandResult r = RunCryptex("extract " + Q(bad) + " " + Q(dest) + Trust());
  EXPECT_EQ(r.exit_code, kExitIntegrity) << r.err;
  ExpectOneLineError(r, bad);
  EXPECT_TRUE(ListDirNames(out.path()).empty()) << "neither DIR nor DIR.tmp-*";
  // Signature failure: refused before anything is created.
  const CommandResult w =
      RunCryptex("extract " + Q(image_) + " " + Q(dest) + " --pubkey " + Q("/nonexistent/key.pub"));
  EXPECT_NE(w.exit_code, 0);
  EXPECT_TRUE(ListDirNames(out.path()).empty());
}

// Opens the directory `depth` levels of `comp` below `root`, one level at a
// time (the path is longer than PATH_MAX).
int OpenDeep(const std::string& root, const std::string& comp, int depth) {
  int fd = open(root.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  for (int i = 0; i < depth && fd >= 0; ++i) {
    const int next = openat(fd, comp.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    close(fd);
    fd = next;
  }
  return fd;
}

// Trees deeper than PATH_MAX build and extract (hard links across the depth
// included), and a failed extraction still leaves nothing behind.
TEST_F(CliTest, TreesDeeperThanPathMax) {
  TempDir src, out, d;
  const std::string comp(200, 'd');
  const int depth = 30;  // about 6 KB of path
  {
    const int fd = test::MakeDeepChain(src.path(), depth, comp);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(linkat(fd, "leaf", fd, "leaf2", 0), 0);
    ASSERT_EQ(symlinkat("leaf", fd, "sl"), 0);
    WriteFile(src.Join("top"), "top");
    ASSERT_EQ(linkat(AT_FDCWD, src.Join("top").c_str(), fd, "top-link", 0), 0);
    close(fd);
  }
  const std::string img = d.Join("deep.cryptex");
  CommandResult r = RunCryptex("build " + Q(src.path()) + " -o " + Q(img) + " --key " + Q(key_) +
                               " --name n --version 1 -q");
  ASSERT_EQ(r.exit_code, 0) << r.err.substr(0, 300);
  const std::string dest = out.Join("x");
  r = RunCryptex("extract " + Q(img) + " " + Q(dest) + Trust());
  ASSERT_EQ(r.exit_code, kExitOk) << r.err.substr(0, 300);
  const int fd = OpenDeep(dest, comp, depth);
  ASSERT_GE(fd, 0);
  struct stat leaf, leaf2, top, top_link;
  ASSERT_EQ(fstatat(fd, "leaf", &leaf, AT_SYMLINK_NOFOLLOW), 0);
  ASSERT_EQ(fstatat(fd, "leaf2", &leaf2, AT_SYMLINK_NOFOLLOW), 0);
  ASSERT_EQ(fstatat(fd, "top-link", &top_link, AT_SYMLINK_NOFOLLOW), 0);
  ASSERT_EQ(lstat((dest + "/top").c_str(), &top), 0);
  EXPECT_EQ(leaf.st_ino, leaf2.st_ino);
  EXPECT_EQ(leaf.st_nlink, 2u);
  EXPECT_EQ(top.st_ino, top_link.st_ino);
  EXPECT_EQ(leaf.st_size, 4);
  char target[16] = {};
  EXPECT_EQ(readlinkat(fd, "sl", target, sizeof target), 4);
  EXPECT_STREQ(target, "leaf");
  close(fd);

  // Corrupt content: the extraction fails deep down and must still clean up.
  const std::string bad = d.Join("bad.cryptex");
  std::filesystem::copy_file(img, bad);
  FlipByte(bad, Superblock(bad).regions[format::kRegionData].offset + 1);
  TempDir out2;
  r = RunCryptex("extract " + Q(bad) + " " + Q(out2.Join("x")) + Trust());
  EXPECT_EQ(r.exit_code, kExitIntegrity) << r.err.substr(0, 300);
  EXPECT_TRUE(ListDirNames(out2.path()).empty()) << "neither DIR nor DIR.tmp-*";
}

// ---- ls / cat -------------------------------------------------------------------------

TEST_F(CliTest, LsListsNamesInOrder) {
  CommandResult r = RunCryptex("ls " + Q(image_) + Trust());
  ASSERT_EQ(r.exit_code, kExitOk) << r.err;
  std::string want;
  for (const auto& n : ListDirNames(src_->path())) want += n + "\n";
  EXPECT_EQ(r.out, want);
  r = RunCryptex("ls " + Q(image_) + " /names" + Trust());
  ASSERT_EQ(r.exit_code, kExitOk) << r.err;
  want.clear();
  for (const auto& n : ListDirNames(src_->Join("names"))) want += n + "\n";
  EXPECT_EQ(r.out, want);
  r = RunCryptex("ls " + Q(image_) + " a/b" + Trust());
  EXPECT_EQ(r.out, "c\n");
  r = RunCryptex("ls " + Q(image_) + " /emptydir" + Trust());
  EXPECT_EQ(r.exit_code, kExitOk);
  EXPECT_EQ(r.out, "");
  r = RunCryptex("ls " + Q(image_) + " /a/b/c/deep" + Trust());
  EXPECT_EQ(r.exit_code, kExitOk);
  EXPECT_EQ(r.out, "/a/b/c/deep\n");
  r = RunCryptex("ls " + Q(image_) + " /no/such" + Trust());
  EXPECT_EQ(r.exit_code, kExitNotFound);
  ExpectOneLineError(r, "/no/such");
}

// `cryptex ls -l` agrees with GNU `ls -ln` on the source, field by field.
TEST_F(CliTest, LsLongMatchesGnuLs) {
  const std::vector<std::string> names = {
      "owned",     "setuid",   "setgid",   "sticky_dir", "cdev",    "bdev",
      "link_rel",  "fifo",     "sock",     "mode0000",   "allbits", "empty",
      "hardlinks", "dangling", "text.txt", "locked",     "link_abs"};
  const CommandResult all = RunCryptex("ls -l " + Q(image_) + Trust());
  ASSERT_EQ(all.exit_code, kExitOk) << all.err;
  std::map<std::string, std::string> mine;  // name -> line
  for (const auto& line : Lines(all.out)) {
    const auto w = Words(line);
    for (const auto& n : names) {
      // The name is the first word after the time (or "-> target" follows it).
      for (size_t i = 5; i < w.size(); ++i) {
        if (w[i] == n && (i + 1 == w.size() || w[i + 1] == "->")) mine[n] = line;
      }
    }
  }
  for (const auto& n : names) {
    SCOPED_TRACE(n);
    ASSERT_TRUE(mine.count(n)) << all.out;
    const CommandResult gnu = RunCommand("cd " + Q(src_->path()) +
                                         " && TZ=UTC ls -lnd --time-style='+%Y-%m-%d %H:%M' " + n);
    ASSERT_EQ(gnu.exit_code, 0);
    std::vector<std::string> a = Words(mine[n]), b = Words(gnu.out);
    if (!a.empty() && a[0][0] == 'd' && a.size() > 4 && b.size() > 4) {
      a.erase(a.begin() + 4);  // a directory's size is file-system specific
      b.erase(b.begin() + 4);
    }
    EXPECT_EQ(a, b) << "cryptex: " << mine[n] << "\nGNU ls:  " << gnu.out;
  }
  // A single file, by path.
  const CommandResult one = RunCryptex("ls -l " + Q(image_) + " /hardlinks/one" + Trust());
  ASSERT_EQ(one.exit_code, kExitOk);
  const auto w = Words(one.out);
  ASSERT_GE(w.size(), 2u);
  EXPECT_EQ(w[1], "3") << "three names within the tree: " << one.out;
}

TEST_F(CliTest, CatWritesExactBytes) {
  for (const char* p : {"sizes/f393233", "sizes/f1", "empty", "sparse", "text.txt", "dup2",
                        "hardlinks/two", "names/new\nline", "bigxattr"}) {
    SCOPED_TRACE(p);
    const CommandResult r = RunCryptex("cat " + Q(image_) + " " + Q(p) + Trust());
    EXPECT_EQ(r.exit_code, kExitOk) << r.err;
    EXPECT_TRUE(r.out == ReadFile(src_->Join(p))) << "got " << r.out.size() << " bytes";
    EXPECT_EQ(r.err, "");
  }
  CommandResult r = RunCryptex("cat " + Q(image_) + " /a" + Trust());
  ExpectOneLineError(r, "/a");
  EXPECT_EQ(r.out, "");
  r = RunCryptex("cat " + Q(image_) + " /link_rel" + Trust());  // symlinks are not followed
  ExpectOneLineError(r, "/link_rel");
  EXPECT_EQ(r.out, "");
  r = RunCryptex("cat " + Q(image_) + " /missing" + Trust());
  EXPECT_EQ(r.exit_code, kExitNotFound);
  ExpectOneLineError(r, "/missing");
}

// On corruption, cat stops: what it wrote is a prefix of the true content.
TEST_F(CliTest, CatOfACorruptFileNeverWritesWrongBytes) {
  TempDir src, d;
  const std::string content = test::RandomBytes(3 << 20, 3);  // stored as is
  WriteFile(src.Join("f"), content);
  const std::string img = d.Join("img");
  ASSERT_EQ(RunCryptex("build " + Q(src.path()) + " -o " + Q(img) + " --key " + Q(key_) +
                       " --name n --version 1 -q")
                .exit_code,
            0);
  const RegionInfo data = Superblock(img).regions[format::kRegionData];
  FlipByte(img, data.offset + (2 << 20) + 5);
  const CommandResult r = RunCryptex("cat " + Q(img) + " f" + Trust());
  EXPECT_EQ(r.exit_code, kExitIntegrity);
  ExpectOneLineError(r, img);
  EXPECT_LT(r.out.size(), content.size());
  EXPECT_TRUE(content.compare(0, r.out.size(), r.out) == 0)
      << "wrote bytes that are not the file's";
}

// ---- inspect ------------------------------------------------------------------------------

// Runs a python3 script that gets the JSON document in file `json_file` as
// `d`, and `args` as sys.argv[2:].
CommandResult Py(const std::string& json_file, const std::string& script,
                 const std::vector<std::string>& args = {}) {
  std::string cmd = "python3 -c " +
                    Q("import json,sys\nd=json.load(open(sys.argv[1]))\n" + script) + " " +
                    Q(json_file);
  // Two appends, not `cmd += " " + Q(a)`: GCC 12 at -O3 reports a false
  // -Wrestrict in that operator+ (GCC bug 105329).
  for (const auto& a : args) {
    cmd += ' ';
    cmd += Q(a);
  }
  return RunCommandCapture(cmd);
}

TEST_F(CliTest, InspectJsonParsesAndItsVeritysetupCommandIsAnOracle) {
  TempDir d;
  const std::string img = CopyImage(d);
  const CommandResult r = RunCryptex("inspect --json " + Q(img) + Trust());
  ASSERT_EQ(r.exit_code, kExitOk) << r.err;
  WriteFile(d.Join("inspect.json"), r.out);
  const SuperblockInfo sb = Superblock(img);
  const CommandResult f = Py(d.Join("inspect.json"),
                             "for k in ['name','version','release_counter','created_at','kind',"
                             "'format_version','root_hash','signer_key_id','image_bytes',"
                             "'chunk_size','other','symlinks']: print(k, d[k])\n"
                             "print('data_blocks', d['verity']['data_blocks'])\n"
                             "print('salt', d['verity']['salt'])\n");
  ASSERT_EQ(f.exit_code, 0) << "not valid JSON: " << f.err << r.out;
  const std::string want =
      "name org.example.every\nversion 2.0\nrelease_counter 9\n"
      "created_at 1700000000\nkind base\nformat_version 1\nroot_hash " +
      HexEncode(sb.root_hash) + "\nsigner_key_id " + HexEncode(sb.key_id) + "\nimage_bytes " +
      std::to_string(FileSize(img)) + "\nchunk_size 131072\nother 4\nsymlinks 7\ndata_blocks " +
      std::to_string(sb.data_blocks) + "\nsalt " + HexEncode(sb.salt) + "\n";
  EXPECT_EQ(f.out, want);

  const CommandResult cmd = Py(d.Join("inspect.json"), "print(d['veritysetup_command'])");
  ASSERT_EQ(cmd.exit_code, 0);
  ASSERT_TRUE(Contains(cmd.out, "veritysetup verify")) << cmd.out;
  const CommandResult ok = RunCommandCapture(cmd.out);
  EXPECT_EQ(ok.exit_code, 0) << cmd.out << ok.err;
  // One byte of the data region flipped: veritysetup itself refuses.
  FlipByte(img, sb.regions[format::kRegionData].offset + 12345);
  const CommandResult bad = RunCommandCapture(cmd.out);
  EXPECT_NE(bad.exit_code, 0) << "veritysetup accepted a corrupt image";
  FlipByte(img, sb.regions[format::kRegionData].offset + 12345);
  // The human-readable form prints the same command.
  const CommandResult text = RunCryptex("inspect " + Q(img) + Trust());
  ASSERT_EQ(text.exit_code, kExitOk);
  EXPECT_TRUE(Contains(text.out, cmd.out.substr(0, cmd.out.size() - 1))) << text.out;
  EXPECT_TRUE(Contains(text.out, "org.example.every"));
}

TEST_F(CliTest, InspectJsonKeepsArbitraryTextIntact) {
  TempDir src, d;
  WriteFile(src.Join("f"), "x");
  const std::string desc =
      "Navigateur s\xc3\xa9"
      "curis\xc3\xa9 \xe2\x9c\x93 \"quoted\" \\ tab\t"
      "new\nline \x01 end";
  const std::string img = d.Join("odd name \"q\" \xc3\xa9.cryptex");
  ASSERT_EQ(
      RunCryptex("build " + Q(src.path()) + " -o " + Q(img) + " --key " + Q(key_) +
                 " --name 'org.example.\xc3\xa9t\xc3\xa9' --version 1 -q --description " + Q(desc))
          .exit_code,
      0);
  const CommandResult r = RunCryptex("inspect --json " + Q(img) + Trust());
  ASSERT_EQ(r.exit_code, kExitOk) << r.err;
  WriteFile(d.Join("i.json"), r.out);
  WriteFile(d.Join("want-desc"), desc);
  WriteFile(d.Join("want-image"), img);
  const CommandResult f = Py(d.Join("i.json"),
                             "want_desc = open(sys.argv[2], encoding='utf-8').read()\n"
                             "want_image = open(sys.argv[3], encoding='utf-8').read()\n"
                             "assert d['description'] == want_desc, repr(d['description'])\n"
                             "assert d['name'] == 'org.example.\\u00e9t\\u00e9', repr(d['name'])\n"
                             "assert d['image'] == want_image, repr(d['image'])\n"
                             "print('ok')\n",
                             {d.Join("want-desc"), d.Join("want-image")});
  EXPECT_EQ(f.exit_code, 0) << f.err << r.out;
  EXPECT_EQ(f.out, "ok\n");
}

// ---- usage ----------------------------------------------------------------------------

TEST_F(CliTest, HelpOnEverySubcommand) {
  for (const std::string cmd :
       {"keygen", "build", "verify", "inspect", "ls", "cat", "extract", "mount", "umount"}) {
    for (const std::string flag : {"--help", "-h"}) {
      const CommandResult r = RunCryptex(cmd + " " + flag);
      EXPECT_EQ(r.exit_code, kExitOk) << cmd << " " << flag << ": " << r.err;
      EXPECT_TRUE(Contains(r.out, "usage: cryptex " + cmd)) << cmd << ": " << r.out;
      EXPECT_EQ(r.err, "") << cmd;
    }
  }
  CommandResult r = RunCryptex("--help");
  EXPECT_EQ(r.exit_code, kExitOk);
  for (const std::string cmd : {"keygen", "build", "verify", "inspect", "ls", "cat", "extract"}) {
    EXPECT_TRUE(Contains(r.out, "  " + cmd + " ")) << r.out;
  }
  EXPECT_EQ(RunCryptex("--version").exit_code, kExitOk);
  EXPECT_EQ(RunCryptex("").exit_code, kExitUsage);
  r = RunCryptex("frobnicate");
  EXPECT_EQ(r.exit_code, kExitUsage);
  EXPECT_TRUE(Contains(r.err, "frobnicate"));
}

TEST_F(CliTest, UnknownOptionsAndMissingArgumentsAreUsageErrors) {
  const std::string img = Q(image_);
  const std::vector<std::string> cases = {
      "keygen -o x --bogus",
      "build . -o x --key k --name n --version 1 --bogus",
      "verify " + img + " --bogus",
      "inspect " + img + " --bogus",
      "ls " + img + " --bogus",
      "cat " + img + " /empty --bogus",
      "extract " + img + " /tmp/never-created-by-cryptex-tests --bogus",
      "verify " + img + " -x",
  };
  for (const auto& c : cases) {
    const CommandResult r = RunCryptex(c);
    EXPECT_EQ(r.exit_code, kExitUsage) << c << ": " << r.err;
    EXPECT_EQ(Lines(r.err).size(), 1u) << c << ": " << r.err;
    EXPECT_TRUE(Contains(r.err, "--bogus") || Contains(r.err, "-x")) << c << ": " << r.err;
  }
  for (const std::string& c :
       std::vector<std::string>{"verify", "verify a b", "inspect", "ls", "ls a b c", "cat a",
                                "extract a", "verify " + img + " --trust"}) {
    const CommandResult r = RunCryptex(c);
    EXPECT_EQ(r.exit_code, kExitUsage) << c << ": " << r.err;
  }
  struct stat st;
  EXPECT_NE(lstat("/tmp/never-created-by-cryptex-tests", &st), 0);
}

}  // namespace
}  // namespace cryptex
