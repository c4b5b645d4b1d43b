// `cryptex diff` and the --patch option of ls/cat/extract/verify/diff, as
// users run them. Needs root (ownership, device nodes, trusted.* xattrs) and
// a tmpfs at /dev/shm.
//
// Layout: a fixture with two base images OLD and NEW that differ in every
// kind of way tree_diff knows (diff A B); --patch refusals that need no
// working stack; then patches built with the library (kind patch, plain
// content and whiteouts: no mkpatch needed) read through the stack. The
// latter are DISABLED_ until the layer stack lands (OpenStack with patches
// is kUnsupported until then): enable them by removing the prefix. Tests of
// patches made by `cryptex mkpatch` belong in the last section.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "builder.h"
#include "exit_codes.h"
#include "format.h"
#include "image.h"
#include "keys.h"
#include "test_util.h"

namespace cryptex {
namespace {

using namespace cli;  // kExit*: the codes users see

using test::CommandResult;
using test::Contains;
using test::ListDirNames;
using test::ReadFile;
using test::RunCryptex;
using test::ShellQuote;
using test::TempDir;
using test::WriteFile;
namespace fs = std::filesystem;

std::string Q(const std::string& s) { return ShellQuote(s); }

std::vector<std::string> Lines(const std::string& s) {
  std::vector<std::string> out;
  std::istringstream in(s);
  for (std::string line; std::getline(in, line);) out.push_back(line);
  return out;
}

// A failure as users see it: one line on stderr naming `what`, exit `code`.
void ExpectRefusal(const CommandResult& r, int code, const std::vector<std::string>& what) {
  EXPECT_EQ(r.exit_code, code) << r.err;
  EXPECT_EQ(Lines(r.err).size(), 1u) << "stderr: " << r.err;
  for (const auto& w : what) EXPECT_TRUE(Contains(r.err, w)) << "no '" << w << "' in: " << r.err;
  EXPECT_EQ(r.out, "");
}

constexpr int64_t kTime = 1700000000;

void Mkdir(const std::string& p) { ASSERT_EQ(mkdir(p.c_str(), 0755), 0) << p; }

// Every entry of `dir` (the root included) gets mtime kTime.0.
void FixTimes(const std::string& dir) {
  struct timespec ts[2] = {{kTime, 0}, {kTime, 0}};
  for (const auto& e : fs::recursive_directory_iterator(dir)) {
    ASSERT_EQ(utimensat(AT_FDCWD, e.path().c_str(), ts, AT_SYMLINK_NOFOLLOW), 0) << e.path();
  }
  ASSERT_EQ(utimensat(AT_FDCWD, dir.c_str(), ts, AT_SYMLINK_NOFOLLOW), 0);
}

void SetXattr(const std::string& p, const std::string& name, const std::string& value) {
  ASSERT_EQ(lsetxattr(p.c_str(), name.c_str(), value.data(), value.size(), 0), 0) << p << name;
}

// What OLD and NEW share.
void CommonTree(const std::string& d) {
  WriteFile(d + "/content", "aaaa");
  WriteFile(d + "/modeonly", "m");
  WriteFile(d + "/owneronly", "o");
  WriteFile(d + "/xattronly", "x");
  SetXattr(d + "/xattronly", "user.a", "1");
  SetXattr(d + "/xattronly", "user.b", "1");
  WriteFile(d + "/mtimeonly", "t");
  WriteFile(d + "/fileToDir", "f");
  ASSERT_EQ(symlink("t1", (d + "/link").c_str()), 0);
  ASSERT_EQ(mknod((d + "/dev0").c_str(), S_IFCHR | 0600, makedev(1, 3)), 0);
  Mkdir(d + "/hl");
  WriteFile(d + "/hl/a", "same");
  ASSERT_EQ(link((d + "/hl/a").c_str(), (d + "/hl/b").c_str()), 0);
  Mkdir(d + "/join");
  WriteFile(d + "/join/x", "same");
  WriteFile(d + "/join/y", "same");
  WriteFile(d + "/unchanged", "u");
  WriteFile(d + "/\xff", "ff");
}

// OLD: the common tree and a directory that NEW removes.
void OldTree(const std::string& d) {
  CommonTree(d);
  Mkdir(d + "/removed");
  WriteFile(d + "/removed/f", "r");
  Mkdir(d + "/removed/sub");
  WriteFile(d + "/removed/sub/deep", "d");
}

// NEW: every kind of change to the common tree.
void NewTree(const std::string& d) {
  CommonTree(d);
  WriteFile(d + "/content", "bbbb");
  ASSERT_EQ(chmod((d + "/modeonly").c_str(), 0755), 0);
  ASSERT_EQ(chown((d + "/owneronly").c_str(), 1234, 5678), 0);
  SetXattr(d + "/xattronly", "user.a", "2");
  ASSERT_EQ(removexattr((d + "/xattronly").c_str(), "user.b"), 0);
  SetXattr(d + "/xattronly", "user.c", "1");
  ASSERT_EQ(unlink((d + "/fileToDir").c_str()), 0);
  Mkdir(d + "/fileToDir");
  WriteFile(d + "/fileToDir/inside", "i");
  ASSERT_EQ(unlink((d + "/link").c_str()), 0);
  ASSERT_EQ(symlink("t2", (d + "/link").c_str()), 0);
  ASSERT_EQ(unlink((d + "/dev0").c_str()), 0);
  ASSERT_EQ(mknod((d + "/dev0").c_str(), S_IFCHR | 0600, makedev(1, 5)), 0);
  ASSERT_EQ(unlink((d + "/hl/b").c_str()), 0);  // split
  WriteFile(d + "/hl/b", "same");
  ASSERT_EQ(unlink((d + "/join/y").c_str()), 0);  // joined
  ASSERT_EQ(link((d + "/join/x").c_str(), (d + "/join/y").c_str()), 0);
  WriteFile(d + "/odd\nname", "n");
  WriteFile(d + "/\x1b[31mred", "e");
  WriteFile(d + "/\xff", "FF");
}

// ---- fixture: a key, OLD and NEW ----------------------------------------------

class PatchCliTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    work_ = new TempDir(test::TmpfsDir());
    key_ = work_->Join("vendor");
    const CommandResult k = RunCryptex("keygen -o " + Q(key_));
    ASSERT_EQ(k.exit_code, 0) << k.err;
    old_ = Seal("old", OldTree, {});
    new_ = Seal("new", NewTree, [](const std::string& d) {
      struct timespec ts[2] = {{kTime, 5}, {kTime, 5}};
      ASSERT_EQ(utimensat(AT_FDCWD, (d + "/mtimeonly").c_str(), ts, 0), 0);
    });
  }
  static void TearDownTestSuite() { delete work_; }

  // Builds tree `name` with `make`, fixes its times, applies `touch`, seals.
  static std::string Seal(const std::string& name, void (*make)(const std::string&),
                          const std::function<void(const std::string&)>& touch) {
    const std::string src = work_->Join(name);
    Mkdir(src);
    make(src);
    FixTimes(src);
    if (touch) touch(src);
    const std::string image = work_->Join(name + ".cryptex");
    const CommandResult b =
        RunCryptex("build " + Q(src) + " -o " + Q(image) + " --key " + Q(key_) +
                   " --name org.example.app --version " + name + " --epoch 1700000000 -q");
    EXPECT_EQ(b.exit_code, 0) << b.err;
    return image;
  }

  // Seals the existing directory `src` as work_/name.cryptex.
  static std::string SealDir(const std::string& src, const std::string& name) {
    const std::string image = work_->Join(name + ".cryptex");
    const CommandResult b =
        RunCryptex("build " + Q(src) + " -o " + Q(image) + " --key " + Q(key_) +
                   " --name org.example.app --version " + name + " --epoch 1700000000 -q");
    EXPECT_EQ(b.exit_code, 0) << b.err;
    return image;
  }

  static std::string Trust() { return " --pubkey " + Q(key_ + ".pub"); }

  static CommandResult Cx(const std::string& args) { return RunCryptex(args + Trust()); }

  static TempDir* work_;
  static std::string key_, old_, new_;
};
TempDir* PatchCliTest::work_ = nullptr;
std::string PatchCliTest::key_, PatchCliTest::old_, PatchCliTest::new_;

// ---- cryptex diff A B --------------------------------------------------------------

// Piped, names are written byte for byte (a newline in a name too), one line
// per path in tree order, every kind of change named.
TEST_F(PatchCliTest, DiffTwoBasesHuman) {
  const CommandResult r = Cx("diff " + Q(old_) + " " + Q(new_));
  ASSERT_EQ(r.exit_code, kExitOk) << r.err;
  EXPECT_EQ(r.err, "");
  EXPECT_EQ(r.out,
            "+ /\x1b[31mred\n"
            "M /content (content)\n"
            "M /dev0 (device 1,3->1,5)\n"
            "M /fileToDir (type file->dir)\n"
            "+ /fileToDir/inside\n"
            "M /hl/a (links 2->1)\n"
            "M /hl/b (links 2->1)\n"
            "M /join/x (links 1->2)\n"
            "M /join/y (links 1->2)\n"
            "M /link (target)\n"
            "M /modeonly (mode 0644->0755)\n"
            "M /mtimeonly (mtime)\n"
            "+ /odd\nname\n"
            "M /owneronly (owner 0:0->1234:5678)\n"
            "- /removed\n"
            "- /removed/f\n"
            "- /removed/sub\n"
            "- /removed/sub/deep\n"
            "M /xattronly (xattrs +user.c -user.b ~user.a)\n"
            "M /\xff (content)\n");
}

TEST_F(PatchCliTest, DiffOfAnImageWithItselfIsEmptyAndExitsZero) {
  const CommandResult r = Cx("diff " + Q(old_) + " " + Q(old_));
  EXPECT_EQ(r.exit_code, kExitOk) << r.err;
  EXPECT_EQ(r.out, "");
  const CommandResult j = Cx("diff --json " + Q(old_) + " " + Q(old_));
  ASSERT_EQ(j.exit_code, kExitOk) << j.err;
  EXPECT_EQ(nlohmann::json::parse(j.out)["changes"], nlohmann::json::array());
}

// On a terminal, names are quoted for bash as ls quotes them: no byte of a
// name reaches the terminal raw. (script(1) gives the command a pty.)
TEST_F(PatchCliTest, DiffEscapesNamesOnATerminal) {
  const std::string cmd = Q(test::CryptexBin()) + " diff " + Q(old_) + " " + Q(new_) + Trust();
  const CommandResult r = test::RunCommandCapture("script -qec " + Q(cmd) + " /dev/null");
  ASSERT_EQ(r.exit_code, kExitOk) << r.err;
  EXPECT_FALSE(Contains(r.out, "\x1b")) << r.out;
  EXPECT_FALSE(Contains(r.out, "\xff")) << r.out;
  EXPECT_TRUE(Contains(r.out, "$'\\033''[31mred'")) << r.out;
  EXPECT_TRUE(Contains(r.out, "'/odd'$'\\n''name'")) << r.out;
  EXPECT_TRUE(Contains(r.out, "$'\\377' (content)")) << r.out;
}

TEST_F(PatchCliTest, DiffTwoBasesJson) {
  const CommandResult r = Cx("diff --json " + Q(old_) + " " + Q(new_));
  ASSERT_EQ(r.exit_code, kExitOk) << r.err;
  const auto doc = nlohmann::json::parse(r.out);
  EXPECT_EQ(doc["old"]["image"], old_);
  EXPECT_EQ(doc["old"]["patches"], nlohmann::json::array());
  EXPECT_EQ(doc["new"]["image"], new_);
  const auto& ch = doc["changes"];
  ASSERT_EQ(ch.size(), 20u) << r.out;
  std::map<std::string, nlohmann::json> by_path;
  for (const auto& c : ch) by_path[c["path"].get<std::string>()] = c;

  EXPECT_EQ(
      by_path["/removed/sub/deep"],
      nlohmann::json::parse(R"({"path":"/removed/sub/deep","change":"removed","type":"file"})"));
  EXPECT_EQ(by_path["/fileToDir/inside"]["change"], "added");
  EXPECT_EQ(by_path["/removed/sub"]["type"], "dir");

  auto c = by_path["/content"];
  EXPECT_EQ(c["change"], "modified");
  EXPECT_EQ(c["what"], nlohmann::json::parse(R"(["content"])"));
  EXPECT_EQ(c["content"]["old"]["size"], 4);
  EXPECT_EQ(c["content"]["old"]["digest"].get<std::string>().size(), 64u);
  EXPECT_NE(c["content"]["old"]["digest"], c["content"]["new"]["digest"]);

  EXPECT_EQ(by_path["/modeonly"]["mode"], nlohmann::json::parse(R"({"old":"0644","new":"0755"})"));
  EXPECT_EQ(by_path["/owneronly"]["owner"],
            nlohmann::json::parse(R"({"old":{"uid":0,"gid":0},"new":{"uid":1234,"gid":5678}})"));
  EXPECT_EQ(
      by_path["/xattronly"]["xattrs"],
      nlohmann::json::parse(R"({"added":["user.c"],"removed":["user.b"],"changed":["user.a"]})"));
  EXPECT_EQ(by_path["/mtimeonly"]["mtime"],
            nlohmann::json::parse(
                R"({"old":{"sec":1700000000,"nsec":0},"new":{"sec":1700000000,"nsec":5}})"));
  EXPECT_EQ(by_path["/fileToDir"]["what"], nlohmann::json::parse(R"(["type"])"));
  EXPECT_EQ(by_path["/fileToDir"]["type"], nlohmann::json::parse(R"({"old":"file","new":"dir"})"));
  EXPECT_EQ(by_path["/link"]["target"], nlohmann::json::parse(R"({"old":"t1","new":"t2"})"));
  EXPECT_EQ(by_path["/dev0"]["device"],
            nlohmann::json::parse(R"({"old":{"major":1,"minor":3},"new":{"major":1,"minor":5}})"));
  EXPECT_EQ(by_path["/hl/b"]["links"],
            nlohmann::json::parse(R"({"old":["/hl/a","/hl/b"],"new":["/hl/b"]})"));
  EXPECT_EQ(by_path["/join/x"]["links"],
            nlohmann::json::parse(R"({"old":["/join/x"],"new":["/join/x","/join/y"]})"));
  EXPECT_EQ(by_path["/odd\nname"]["change"], "added");  // JSON escapes the newline
  EXPECT_EQ(by_path["/\x1b[31mred"]["change"], "added");
  // Not UTF-8: written as U+FFFD (cli/json.h).
  EXPECT_EQ(by_path["/\xef\xbf\xbd"]["what"], nlohmann::json::parse(R"(["content"])"));
  // The order is the human output's.
  EXPECT_EQ(ch[0]["path"], "/\x1b[31mred");
  EXPECT_EQ(ch[19]["path"], "/\xef\xbf\xbd");
}

TEST_F(PatchCliTest, DiffUsageErrors) {
  EXPECT_EQ(Cx("diff " + Q(old_)).exit_code, kExitUsage);
  EXPECT_EQ(Cx("diff").exit_code, kExitUsage);
  EXPECT_EQ(Cx("diff " + Q(old_) + " " + Q(new_) + " " + Q(new_)).exit_code, kExitUsage);
  // --patch stacks under OLD for --to-patch; two bases are compared as they are.
  ExpectRefusal(Cx("diff " + Q(old_) + " " + Q(new_) + " --patch " + Q(new_)), kExitUsage,
                {"--to-patch"});
  ExpectRefusal(Cx("diff " + Q(old_) + " " + Q(new_) + " --to-patch " + Q(new_)), kExitUsage,
                {"one image"});
  ExpectRefusal(Cx("diff " + Q(old_) + " --to-patch a --to-patch b"), kExitUsage,
                {"more than once"});
  ExpectRefusal(Cx("diff " + Q(old_) + " " + Q(work_->Join("nope.cryptex"))), kExitNotFound,
                {"nope.cryptex"});
}

// An oracle for both diff and extract (which now reads through View): a
// tree with every kind of entry, extracted and sealed again, has no
// difference from the original; one chmod in the copy is the one line.
TEST_F(PatchCliTest, ExtractedAndResealedTreeHasNoDifference) {
  TempDir src(test::TmpfsDir());
  test::MakeEveryKindTree(src.path());
  const std::string a = SealDir(src.path(), "every-a");
  TempDir out(test::TmpfsDir());
  const std::string copy = out.Join("x");
  const CommandResult x = Cx("extract " + Q(a) + " " + Q(copy));
  ASSERT_EQ(x.exit_code, kExitOk) << x.err;
  const std::string b = SealDir(copy, "every-b");
  const CommandResult r = Cx("diff " + Q(a) + " " + Q(b));
  EXPECT_EQ(r.exit_code, kExitOk) << r.err;
  EXPECT_EQ(r.out, "");

  struct stat st;
  ASSERT_EQ(stat(copy.c_str(), &st), 0);
  ASSERT_EQ(chmod(copy.c_str(), (st.st_mode & 07777) ^ 0001), 0);
  const std::string c = SealDir(copy, "every-c");
  const CommandResult r2 = Cx("diff " + Q(a) + " " + Q(c));
  EXPECT_EQ(r2.exit_code, kExitOk) << r2.err;
  char want[64];
  std::snprintf(want, sizeof want, "M / (mode %04o->%04o)\n", st.st_mode & 07777,
                (st.st_mode & 07777) ^ 0001);
  EXPECT_EQ(r2.out, want);
}

// diff reads every inode of both trees: a corrupt one is an integrity error
// naming the image, not a difference.
TEST_F(PatchCliTest, DiffOfACorruptImageFails) {
  TempDir d;
  const std::string bad = d.Join("bad.cryptex");
  fs::copy_file(new_, bad);
  auto trust = TrustStore::LoadFile(key_ + ".pub");
  ASSERT_TRUE(trust.ok());
  ImageOptions o;
  o.trust = &*trust;
  auto img = Image::Open(bad, o);
  ASSERT_TRUE(img.ok()) << img.status().ToString();
  const RegionInfo inodes = (*img)->superblock().regions[format::kRegionInodes];
  img->reset();
  test::FlipByte(bad, inodes.offset + inodes.length / 2);
  ExpectRefusal(Cx("diff " + Q(old_) + " " + Q(bad)), kExitIntegrity, {bad});
  ExpectRefusal(Cx("diff --json " + Q(bad) + " " + Q(old_)), kExitIntegrity, {bad});
}

// ---- --patch refusals that need no stack --------------------------------------

// Every reading command names a missing patch (and which option named it),
// and refuses a base image given as a patch, before reading anything.
TEST_F(PatchCliTest, MissingPatchIsNamed) {
  const std::string missing = work_->Join("missing.cxpatch");
  const std::string p = " --patch " + Q(missing);
  TempDir out;
  for (const std::string& args :
       {"ls " + Q(old_) + p, "cat " + Q(old_) + " /content" + p,
        "extract " + Q(old_) + " " + Q(out.Join("x")) + p, "verify " + Q(old_) + p,
        "diff " + Q(old_) + p + " --to-patch " + Q(missing)}) {
    SCOPED_TRACE(args);
    ExpectRefusal(Cx(args), kExitNotFound, {"--patch", missing});
  }
  ExpectRefusal(Cx("diff " + Q(old_) + " --to-patch " + Q(missing)), kExitNotFound,
                {"--to-patch", missing});
  EXPECT_EQ(ListDirNames(out.path()), std::vector<std::string>{}) << "extract left something";
}

TEST_F(PatchCliTest, BaseImageGivenAsPatchIsRefused) {
  const std::string p = " --patch " + Q(new_);
  TempDir out;
  for (const std::string& args :
       {"ls " + Q(old_) + p, "cat " + Q(old_) + " /content" + p,
        "extract " + Q(old_) + " " + Q(out.Join("x")) + p, "verify " + Q(old_) + p,
        "diff " + Q(old_) + p + " --to-patch " + Q(new_)}) {
    SCOPED_TRACE(args);
    ExpectRefusal(Cx(args), kExitUsage, {"--patch " + new_, "base image, not a patch"});
  }
  ExpectRefusal(Cx("diff " + Q(old_) + " --to-patch " + Q(new_)), kExitUsage,
                {"--to-patch " + new_, "not a patch"});
  EXPECT_EQ(ListDirNames(out.path()), std::vector<std::string>{}) << "extract left something";
}

// ---- patches built with the library (plain content, whiteouts) ----------------

// A patch of OLD: /content replaced ("patched"), /modeonly whited out,
// /added new, /hl opaque and holding only "c". The root keeps OLD's
// attributes. Written with BuildOptions::kind = patch; needs no mkpatch.
class LibraryPatchTest : public PatchCliTest {
 protected:
  static void SetUpTestSuite() {
    PatchCliTest::SetUpTestSuite();
    patch_ = work_->Join("p1.cxpatch");
    auto key = PrivateKey::LoadPem(key_);
    ASSERT_TRUE(key.ok()) << key.status().ToString();
    auto trust = TrustStore::LoadFile(key_ + ".pub");
    ASSERT_TRUE(trust.ok());
    ImageOptions o;
    o.trust = &*trust;
    auto base = Image::Open(old_, o);
    ASSERT_TRUE(base.ok()) << base.status().ToString();
    // The attributes (mode, owner, mtime) of `path` in OLD, so that only
    // what the test means to change differs.
    auto like = [&](SourceNode& n, const std::string& path) {
      auto in = (*base)->Resolve(path);
      ASSERT_TRUE(in.ok()) << in.status().ToString();
      n.mode = in->mode;
      n.uid = in->uid;
      n.gid = in->gid;
      n.mtime_sec = in->mtime_sec;
      n.mtime_nsec = in->mtime_nsec;
    };

    SourceTree t;
    auto node = [&](const std::string& name, uint32_t parent, uint32_t mode) -> SourceNode& {
      SourceNode n;
      n.name = name;
      n.parent = parent;
      n.mode = mode;
      n.mtime_sec = kTime;
      t.nodes.push_back(std::move(n));
      if (!name.empty()) t.nodes[parent].children.push_back(uint32_t(t.nodes.size() - 1));
      return t.nodes.back();
    };
    auto file = [&](const std::string& name, uint32_t parent,
                    const std::string& bytes) -> SourceNode& {
      SourceNode& n = node(name, parent, S_IFREG | 0644);
      n.size = bytes.size();
      n.content = std::make_shared<const std::string>(bytes);
      return n;
    };
    like(node("", 0, S_IFDIR), "/");
    // Children of the root in name order (bytes).
    file("added", 0, "new file");
    like(file("content", 0, "patched"), "/content");
    SourceNode& hl = node("hl", 0, S_IFDIR);
    like(hl, "/hl");
    hl.flags = format::kInodeOpaque;
    node("modeonly", 0, S_IFCHR).flags = format::kInodeWhiteout;
    file("c", 3, "only me");

    BuildOptions b;
    b.output_path = patch_;
    b.key = &*key;
    b.kind = format::kKindPatch;
    b.manifest.name = "org.example.app";
    b.manifest.version = "old+p1";
    b.manifest.patch_id = "p1";
    b.manifest.base_root_digest = (*base)->superblock().root_hash;
    auto st = WriteImage(t, b);
    ASSERT_TRUE(st.ok()) << st.status().ToString();
  }

  static std::string patch_;
};
std::string LibraryPatchTest::patch_;

// No stack needed: a patch on its own has its container checked, and is
// refused where a base is expected.
TEST_F(LibraryPatchTest, VerifyPatchAloneChecksTheContainer) {
  const CommandResult r = Cx("verify " + Q(patch_));
  EXPECT_EQ(r.exit_code, kExitOk) << r.err;
  EXPECT_TRUE(Contains(r.out, patch_ + ": OK (org.example.app old+p1")) << r.out;
}

TEST_F(LibraryPatchTest, PatchGivenAsImageIsRefused) {
  ExpectRefusal(Cx("ls " + Q(patch_)), kExitUsage, {patch_, "--patch"});
  ExpectRefusal(Cx("cat " + Q(patch_) + " /content"), kExitUsage, {patch_, "--patch"});
  ExpectRefusal(Cx("diff " + Q(old_) + " " + Q(patch_)), kExitUsage, {patch_, "--patch"});
}

// ---- through the layer stack (enable when OpenStack stacks patches) -------------

TEST_F(LibraryPatchTest, LsCatExtractVerifyReadThePatchedTree) {
  const std::string p = " --patch " + Q(patch_);
  const CommandResult ls = Cx("ls " + Q(old_) + p);
  ASSERT_EQ(ls.exit_code, kExitOk) << ls.err;
  EXPECT_FALSE(Contains(ls.out, "modeonly")) << ls.out;  // whited out
  EXPECT_TRUE(Contains(ls.out, "added\n")) << ls.out;
  EXPECT_TRUE(Contains(ls.out, "unchanged\n")) << ls.out;  // from the base
  EXPECT_EQ(Cx("ls " + Q(old_) + " /hl" + p).out, "c\n");  // opaque
  EXPECT_EQ(Cx("cat " + Q(old_) + " /content" + p).out, "patched");
  EXPECT_EQ(Cx("cat " + Q(old_) + " /unchanged" + p).out, "u");
  ExpectRefusal(Cx("cat " + Q(old_) + " /modeonly" + p), kExitNotFound, {"/modeonly"});

  TempDir out;
  const CommandResult x = Cx("extract " + Q(old_) + " " + Q(out.Join("x")) + p);
  ASSERT_EQ(x.exit_code, kExitOk) << x.err;
  EXPECT_EQ(ReadFile(out.Join("x/content")), "patched");
  EXPECT_EQ(ReadFile(out.Join("x/added")), "new file");
  EXPECT_EQ(ListDirNames(out.Join("x/hl")), std::vector<std::string>{"c"});
  EXPECT_FALSE(fs::exists(fs::symlink_status(out.Join("x/modeonly"))));

  const CommandResult v = Cx("verify " + Q(old_) + p);
  EXPECT_EQ(v.exit_code, kExitOk) << v.err;
  EXPECT_TRUE(Contains(v.out, old_ + ": OK")) << v.out;
  EXPECT_TRUE(Contains(v.out, patch_ + ": OK")) << v.out;
}

TEST_F(LibraryPatchTest, DiffToPatchListsWhatThePatchChanges) {
  const CommandResult r = Cx("diff " + Q(old_) + " --to-patch " + Q(patch_));
  ASSERT_EQ(r.exit_code, kExitOk) << r.err;
  EXPECT_EQ(r.out,
            "+ /added\n"
            "M /content (content)\n"
            "- /hl/a\n"
            "- /hl/b\n"
            "+ /hl/c\n"
            "- /modeonly\n");
  const CommandResult j = Cx("diff --json " + Q(old_) + " --to-patch " + Q(patch_));
  ASSERT_EQ(j.exit_code, kExitOk) << j.err;
  const auto doc = nlohmann::json::parse(j.out);
  EXPECT_EQ(doc["old"]["patches"], nlohmann::json::array());
  EXPECT_EQ(doc["new"]["patches"], nlohmann::json::array({patch_}));
}

// A patch does not diff against itself: OLD+P to OLD+P+P is refused by the
// stack (P's required patches are not what is below it).
TEST_F(LibraryPatchTest, PatchStackedOnItselfIsRefused) {
  const CommandResult r =
      Cx("diff " + Q(old_) + " --patch " + Q(patch_) + " --to-patch " + Q(patch_));
  EXPECT_NE(r.exit_code, kExitOk);
  EXPECT_TRUE(Contains(r.err, patch_)) << r.err;
}

// A patch applies to exactly the base it was made for: on another base it is
// refused, naming the patch, and nothing is read or written.
TEST_F(LibraryPatchTest, PatchOnTheWrongBaseIsRefused) {
  TempDir out;
  for (const std::string& args :
       {"ls " + Q(new_), "cat " + Q(new_) + " /content", "verify " + Q(new_),
        "extract " + Q(new_) + " " + Q(out.Join("x"))}) {
    SCOPED_TRACE(args);
    const CommandResult r = Cx(args + " --patch " + Q(patch_));
    EXPECT_NE(r.exit_code, kExitOk);
    EXPECT_LT(r.exit_code, 128);
    EXPECT_TRUE(Contains(r.err, patch_)) << r.err;
    EXPECT_EQ(r.out, "");
  }
  EXPECT_EQ(ListDirNames(out.path()), std::vector<std::string>{});
}

// ---- patches made by `cryptex mkpatch` (to come with mkpatch) -------------------

}  // namespace
}  // namespace cryptex
