// Keys and trust stores as `cryptex` users meet them: which trust source a
// command uses (--trust vs --pubkey, and cryptexfs' trust=/pubkey=), unsafe
// trust directories and key files, a bad .pub among good ones, a large trust
// directory named by key id, and the messages around --key. Runs
// $CRYPTEX_BUILD_DIR/cli/cryptex (and, through `cryptex mount`, cryptexfs).
// Needs root (chown).
#include "keys.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <sstream>
#include <string>
#include <vector>

#include "exit_codes.h"
#include "test_util.h"

namespace cryptex {
namespace {

using namespace cli;  // kExit*: the codes users see

using test::CommandResult;
using test::Contains;
using test::CryptexBin;
using test::ReadFile;
using test::RunCommandCapture;
using test::RunCryptex;
using test::ShellQuote;
using test::TempDir;
using test::WriteFile;

std::string Q(const std::string& s) { return ShellQuote(s); }

size_t CountLines(const std::string& s, const std::string& needle) {
  std::istringstream in(s);
  size_t n = 0;
  for (std::string line; std::getline(in, line);) n += Contains(line, needle) ? 1 : 0;
  return n;
}

// The usage error both the commands and cryptexfs give for trust + pubkey.
std::string TrustSourceConflict() { return CheckTrustSource(true, true).message(); }

class CliKeysTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    work_ = new TempDir;
    key_ = work_->Join("vendor");
    const CommandResult k = RunCryptex("keygen -o " + Q(key_));
    ASSERT_EQ(k.exit_code, 0) << k.err;
    trust_ = work_->Join("keys");
    ASSERT_EQ(mkdir(trust_.c_str(), 0755), 0);
    std::filesystem::copy_file(key_ + ".pub", trust_ + "/vendor.pub");
    const std::string src = work_->Join("src");
    ASSERT_EQ(mkdir(src.c_str(), 0755), 0);
    WriteFile(src + "/hello", "hello\n");
    image_ = work_->Join("img.cryptex");
    const CommandResult b = RunCryptex("build " + Q(src) + " -o " + Q(image_) + " --key " +
                                       Q(key_) + " --name org.example.keys --version 1 -q");
    ASSERT_EQ(b.exit_code, 0) << b.err;
  }
  static void TearDownTestSuite() { delete work_; }

  // A fresh trust directory holding the vendor key as `name`.
  static std::string TrustDir(const TempDir& parent, const std::string& name = "vendor.pub") {
    const std::string d = parent.Join("trust");
    EXPECT_EQ(mkdir(d.c_str(), 0755), 0);
    std::filesystem::copy_file(key_ + ".pub", d + "/" + name);
    return d;
  }

  static TempDir* work_;
  static std::string key_, trust_, image_;
};
TempDir* CliKeysTest::work_ = nullptr;
std::string CliKeysTest::key_, CliKeysTest::trust_, CliKeysTest::image_;

// One rule: a trust directory and a single key exclude each other, refused
// as a usage error with the same words by every command and by cryptexfs
// (through `cryptex mount`; cryptexfs' usage errors exit 1, mount(8)'s
// "incorrect invocation").
TEST_F(CliKeysTest, TrustWithPubkeyIsAUsageErrorEverywhere) {
  TempDir out;
  const std::string both = " --trust " + Q(trust_) + " --pubkey " + Q(key_ + ".pub");
  const std::vector<std::string> cmds = {
      "verify " + Q(image_),
      "inspect " + Q(image_),
      "ls " + Q(image_),
      "cat " + Q(image_) + " /hello",
      "extract " + Q(image_) + " " + Q(out.Join("x")),
  };
  for (const std::string& cmd : cmds) {
    const CommandResult r = RunCryptex(cmd + both);
    EXPECT_EQ(r.exit_code, kExitUsage) << cmd << ": " << r.err;
    EXPECT_TRUE(Contains(r.err, TrustSourceConflict())) << cmd << ": " << r.err;
    EXPECT_TRUE(r.out.empty()) << cmd << ": " << r.out;
  }
  EXPECT_FALSE(std::filesystem::exists(out.Join("x")));
  // Either one alone is fine.
  EXPECT_EQ(RunCryptex("verify -q " + Q(image_) + " --trust " + Q(trust_)).exit_code, kExitOk);
  EXPECT_EQ(RunCryptex("verify -q " + Q(image_) + " --pubkey " + Q(key_ + ".pub")).exit_code,
            kExitOk);

  const std::string mnt = out.Join("mnt");
  ASSERT_EQ(mkdir(mnt.c_str(), 0755), 0);
  const CommandResult m = RunCryptex("mount " + Q(image_) + " " + Q(mnt) + " -o trust=" + trust_ +
                                     ",pubkey=" + key_ + ".pub");
  EXPECT_EQ(m.exit_code, kExitUsage) << m.err;
  EXPECT_TRUE(Contains(m.err, TrustSourceConflict())) << m.err;
}

// A trust directory someone else could write to is refused (the image with
// it: exit 3), by the commands and by cryptexfs, naming directory and mode.
TEST_F(CliKeysTest, WritableTrustDirectoryIsRefused) {
  TempDir t;
  const std::string dir = TrustDir(t);
  ASSERT_EQ(chmod(dir.c_str(), 0777), 0);
  const CommandResult r = RunCryptex("verify " + Q(image_) + " --trust " + Q(dir));
  EXPECT_EQ(r.exit_code, kExitIntegrity) << r.err;
  EXPECT_TRUE(Contains(r.err, dir + " is world-writable (mode 0777)")) << r.err;

  const std::string mnt = t.Join("mnt");
  ASSERT_EQ(mkdir(mnt.c_str(), 0755), 0);
  const CommandResult m = RunCryptex("mount " + Q(image_) + " " + Q(mnt) + " -o trust=" + dir);
  EXPECT_EQ(m.exit_code, kExitIntegrity) << m.err;
  EXPECT_TRUE(Contains(m.err, dir + " is world-writable (mode 0777)")) << m.err;

  // Owned by another user: refused too.
  ASSERT_EQ(chmod(dir.c_str(), 0755), 0);
  ASSERT_EQ(chown(dir.c_str(), 4321, 4321), 0);
  const CommandResult o = RunCryptex("verify " + Q(image_) + " --trust " + Q(dir));
  EXPECT_EQ(o.exit_code, kExitIntegrity) << o.err;
  EXPECT_TRUE(Contains(o.err, dir + " is owned by uid 4321")) << o.err;
}

// A key file someone else could write is not trusted: skipped with a
// warning naming it; as --pubkey it is refused.
TEST_F(CliKeysTest, WritableKeyFileIsNotTrusted) {
  TempDir t;
  const std::string dir = TrustDir(t);
  ASSERT_EQ(chmod((dir + "/vendor.pub").c_str(), 0666), 0);
  const CommandResult r = RunCryptex("verify " + Q(image_) + " --trust " + Q(dir));
  EXPECT_EQ(r.exit_code, kExitIntegrity) << r.err;
  EXPECT_TRUE(Contains(r.err, dir + "/vendor.pub: it is world-writable (mode 0666)")) << r.err;
  EXPECT_TRUE(Contains(r.err, "signed by unknown key")) << r.err;
  const CommandResult p = RunCryptex("verify " + Q(image_) + " --pubkey " + Q(dir + "/vendor.pub"));
  EXPECT_EQ(p.exit_code, kExitIntegrity) << p.err;
  EXPECT_TRUE(Contains(p.err, dir + "/vendor.pub is world-writable (mode 0666)")) << p.err;
}

// One unreadable or garbage .pub does not break every command: skipped with
// a warning naming it, the good key still verifies.
TEST_F(CliKeysTest, BadPubFileIsSkippedWithAWarning) {
  TempDir t;
  const std::string dir = TrustDir(t, "zz-vendor.pub");
  WriteFile(dir + "/garbage.pub", "not a key\n");
  ASSERT_EQ(symlink((dir + "/gone").c_str(), (dir + "/dangling.pub").c_str()), 0);
  const CommandResult r = RunCryptex("verify " + Q(image_) + " --trust " + Q(dir));
  EXPECT_EQ(r.exit_code, kExitOk) << r.err;
  EXPECT_EQ(CountLines(r.err, "warning: skipping trusted key " + dir + "/garbage.pub"), 1u)
      << r.err;
  EXPECT_EQ(CountLines(r.err, "warning: skipping trusted key " + dir + "/dangling.pub"), 1u)
      << r.err;
  EXPECT_TRUE(Contains(r.out, "OK")) << r.out;
}

// A directory of key files named by key id: the lookup reads only the
// signer's file, so thousands of other (here: garbage) files cost nothing
// and give no warning. (Timing: tests/bench/trust_bench.py.)
TEST_F(CliKeysTest, KeyIdNamedFileIsTheOnlyOneRead) {
  TempDir t;
  // The short key id verify prints ("signed by key 0123456789abcdef").
  const std::string out = RunCryptex("verify " + Q(image_) + " --trust " + Q(trust_)).out;
  const size_t at = out.find("signed by key ");
  ASSERT_NE(at, std::string::npos) << out;
  const std::string id = out.substr(at + 14, 16);
  const std::string dir = TrustDir(t, id + ".pub");
  for (int i = 0; i < 1000; ++i) WriteFile(dir + "/k" + std::to_string(i) + ".pub", "garbage");
  const CommandResult r = RunCryptex("verify " + Q(image_) + " --trust " + Q(dir));
  EXPECT_EQ(r.exit_code, kExitOk) << r.err;
  EXPECT_TRUE(r.err.empty()) << r.err.substr(0, 500);
}

// A private key others can read still signs, with a warning naming the file
// and its mode.
TEST_F(CliKeysTest, PrivateKeyReadableByOthersIsWarnedAbout) {
  TempDir t;
  const std::string key = t.Join("k");
  std::filesystem::copy_file(key_, key);
  ASSERT_EQ(chmod(key.c_str(), 0644), 0);
  const CommandResult r = RunCryptex("build " + Q(work_->Join("src")) + " -o " + Q(t.Join("img")) +
                                     " --key " + Q(key) + " --name n --version 1 -q");
  EXPECT_EQ(r.exit_code, kExitOk) << r.err;
  EXPECT_EQ(
      CountLines(r.err, "warning: private key " + key + " is accessible by others (mode 0644)"), 1u)
      << r.err;
  // 0600: quiet.
  ASSERT_EQ(chmod(key.c_str(), 0600), 0);
  const CommandResult q = RunCryptex("build " + Q(work_->Join("src")) + " -o " + Q(t.Join("img2")) +
                                     " --key " + Q(key) + " --name n --version 1 -q");
  EXPECT_EQ(q.exit_code, kExitOk) << q.err;
  EXPECT_TRUE(q.err.empty()) << q.err;
}

TEST_F(CliKeysTest, PublicKeyAsKeyIsNamedAsSuch) {
  TempDir t;
  const CommandResult r = RunCryptex("build " + Q(work_->Join("src")) + " -o " + Q(t.Join("img")) +
                                     " --key " + Q(key_ + ".pub") + " --name n --version 1 -q");
  EXPECT_EQ(r.exit_code, kExitUsage) << r.err;
  EXPECT_TRUE(Contains(r.err, key_ + ".pub is a public key; --key needs the private key (the "
                                     "file without .pub)"))
      << r.err;
  EXPECT_FALSE(Contains(r.err, "DECODER")) << r.err;
  EXPECT_FALSE(std::filesystem::exists(t.Join("img")));
}

}  // namespace
}  // namespace cryptex
