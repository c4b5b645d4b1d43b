// `cryptex build` as users run it: arguments checked against the limits every
// reader enforces before any work, source problems reported as such (exit 1,
// naming the file) and never as integrity failures, a source directory given
// through a symlink sealed. Needs root (bind mounts) and a tmpfs at /dev/shm.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>
#include <vector>

#include "exit_codes.h"
#include "format.h"
#include "test_util.h"

namespace cryptex {
namespace {

using namespace cli;  // kExit*: the codes users see

using test::CommandResult;
using test::Contains;
using test::CryptexBin;
using test::ListDirNames;
using test::RunCommandCapture;
using test::RunCryptex;
using test::ShellQuote;
using test::TempDir;
using test::WriteFile;

std::string Q(const std::string& s) { return ShellQuote(s); }

int LineCount(const std::string& s) {
  int n = 0;
  for (char c : s) n += c == '\n';
  return n;
}

class BuildCliTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    work_ = new TempDir;
    key_ = work_->Join("k");
    const CommandResult k = RunCryptex("keygen -o " + Q(key_));
    ASSERT_EQ(k.exit_code, 0) << k.err;
  }
  static void TearDownTestSuite() { delete work_; }

  // `build SRC -o OUT` with the suite's key and `extra` arguments (which may
  // replace --name/--version).
  static CommandResult Build(const std::string& src, const std::string& out,
                             const std::string& extra = "--name n --version 1") {
    return RunCryptex("build " + Q(src) + " -o " + Q(out) + " --key " + Q(key_) + " " + extra +
                      " -q");
  }
  static CommandResult Verify(const std::string& image) {
    return RunCryptex("verify " + Q(image) + " --pubkey " + Q(key_ + ".pub"));
  }

  static TempDir* work_;
  static std::string key_;
};
TempDir* BuildCliTest::work_ = nullptr;
std::string BuildCliTest::key_;

// --name, --version and --description of exactly the manifest string limit
// build and verify; one byte more is refused up front (exit 2, naming the
// field and the limit), with nothing written.
TEST_F(BuildCliTest, ManifestArgumentsAtTheLimitBuildAndOneByteMoreIsRefused) {
  TempDir src, out;
  WriteFile(src.Join("f"), "x");
  const size_t limit = format::kMaxManifestStringLen;
  struct Case {
    const char* field;
    std::string args;
  };
  auto cases = [&](size_t len) {
    const std::string v(len, 'v');
    return std::vector<Case>{{"name", "--name " + v + " --version 1"},
                             {"version", "--name n --version " + v},
                             {"description", "--name n --version 1 --description " + v}};
  };
  int i = 0;
  for (const Case& c : cases(limit)) {
    SCOPED_TRACE(c.field);
    const std::string img = out.Join("ok" + std::to_string(i++));
    const CommandResult b = Build(src.path(), img, c.args);
    ASSERT_EQ(b.exit_code, kExitOk) << b.err;
    const CommandResult v = Verify(img);
    EXPECT_EQ(v.exit_code, kExitOk) << "built an image verify refuses: " << v.err;
  }
  for (const Case& c : cases(limit + 1)) {
    SCOPED_TRACE(c.field);
    const std::string img = out.Join("over");
    const CommandResult b = Build(src.path(), img, c.args);
    EXPECT_EQ(b.exit_code, kExitUsage) << b.err;
    EXPECT_EQ(LineCount(b.err), 1) << b.err;
    EXPECT_TRUE(Contains(b.err, std::string("manifest ") + c.field)) << b.err;
    EXPECT_TRUE(Contains(b.err, std::to_string(limit))) << b.err;
    EXPECT_NE(access(img.c_str(), F_OK), 0) << "output written";
  }
  EXPECT_EQ(ListDirNames(out.path()).size(), 3u) << "only the three good images";
}

// Arguments are checked before the key is loaded and the source is read.
TEST_F(BuildCliTest, ArgumentsAreCheckedBeforeAnyWork) {
  TempDir out;
  const std::string missing = out.Join("no-such-source");
  // An over-long name is reported even though the key and source are missing.
  CommandResult r = RunCryptex(
      "build " + Q(missing) + " -o " + Q(out.Join("img")) + " --key " + Q(out.Join("no-key")) +
      " --name " + std::string(format::kMaxManifestStringLen + 1, 'n') + " --version 1");
  EXPECT_EQ(r.exit_code, kExitUsage) << r.err;
  EXPECT_TRUE(Contains(r.err, "manifest name")) << r.err;
  // An existing destination is reported before the source is scanned.
  const std::string existing = out.Join("existing");
  WriteFile(existing, "precious");
  r = Build(missing, existing);
  EXPECT_EQ(r.exit_code, kExitExists) << r.err;
  EXPECT_TRUE(Contains(r.err, existing)) << r.err;
}

// A source directory given through a symlink is sealed, like `ls DIR/`.
TEST_F(BuildCliTest, SourceDirectoryGivenThroughASymlinkBuilds) {
  TempDir top, out;
  ASSERT_EQ(mkdir(top.Join("real").c_str(), 0755), 0);
  WriteFile(top.Join("real/f"), "content");
  ASSERT_EQ(symlink("real", top.Join("link").c_str()), 0);
  const std::string img = out.Join("img");
  const CommandResult b = Build(top.Join("link"), img);
  ASSERT_EQ(b.exit_code, kExitOk) << b.err;
  EXPECT_EQ(Verify(img).exit_code, kExitOk);
  const CommandResult cat = RunCryptex("cat " + Q(img) + " /f --pubkey " + Q(key_ + ".pub"));
  EXPECT_EQ(cat.exit_code, kExitOk) << cat.err;
  EXPECT_EQ(cat.out, "content");
}

// Files whose stat size is not their size (procfs: 0; sysfs: 4096) are a
// source problem: exit 1 naming the file, never the integrity exit code,
// never sealed empty or short.
TEST_F(BuildCliTest, PseudoFilesAreASourceErrorNamingTheFile) {
  for (const char* pseudo : {"/proc/version", "/sys/kernel/mm/transparent_hugepage/enabled"}) {
    SCOPED_TRACE(pseudo);
    TempDir src, out;
    const std::string f = src.Join("pseudo");
    WriteFile(f, "");
    ASSERT_EQ(mount(pseudo, f.c_str(), nullptr, MS_BIND, nullptr), 0) << strerror(errno);
    const std::string img = out.Join("img");
    const CommandResult b = Build(src.path(), img);
    umount2(f.c_str(), MNT_DETACH);
    EXPECT_EQ(b.exit_code, kExitError) << b.err;
    EXPECT_EQ(LineCount(b.err), 1) << b.err;
    EXPECT_TRUE(Contains(b.err, f)) << b.err;
    EXPECT_TRUE(Contains(b.err, "not a regular on-disk file")) << b.err;
    EXPECT_TRUE(ListDirNames(out.path()).empty()) << "nothing written";
  }
}

// A tree deeper than format::kMaxDirDepth is refused before anything is
// written, with a short message naming the path (prefix) and the limit.
TEST_F(BuildCliTest, TreeDeeperThanTheFormatLimitIsRefused) {
  TempDir src(test::TmpfsDir()), out;
  const int fd = test::MakeDeepChain(src.path(), static_cast<int>(format::kMaxDirDepth) + 1, "d");
  ASSERT_GE(fd, 0);
  close(fd);
  const std::string img = out.Join("img");
  const CommandResult b = Build(src.path(), img);
  EXPECT_EQ(b.exit_code, kExitError) << "a source problem: exit 1";
  EXPECT_NE(b.exit_code, 3) << "not an integrity failure";
  EXPECT_EQ(LineCount(b.err), 1) << b.err.substr(0, 500);
  EXPECT_LT(b.err.size(), 1000u);
  EXPECT_TRUE(Contains(b.err, src.path() + "/d/d")) << b.err;
  EXPECT_TRUE(Contains(b.err, "deeper than " + std::to_string(format::kMaxDirDepth))) << b.err;
  EXPECT_TRUE(ListDirNames(out.path()).empty());
}

}  // namespace
}  // namespace cryptex
