// Oracle tests of patch images on real Debian security updates: the .debs of
// two versions of a package are unpacked (dpkg-deb -x) into OLD and NEW trees,
// then
//   base  = cryptex build OLD
//   patch = cryptex mkpatch --from base --to NEW
//   cryptex extract base --patch patch OUT
// and the checks are by tools not written here:
//   * `diff -r --no-dereference NEW OUT` and a metadata walk
//     (test::CompareTrees: modes, owners, mtimes, symlink targets, xattrs,
//     hard links);
//   * `fsverity digest` of every file whose content changed, in OUT and in
//     NEW, against the digest `cryptex inspect --json PATCH` records for it;
//   * `cryptex verify base --patch patch`.
// A chain of two patches (OLD -> MID -> NEW, the second made --on the first)
// is checked the same way, and stacking it wrongly must be refused with
// nothing written.
//
// Package versions are pinned (the SHA-256 of each amd64 .deb; other
// architectures rely on apt's signature checks alone). Each .deb is fetched
// once into a cache directory ($CRYPTEX_DEB_CACHE, else BUILD/deb-cache):
// `apt-get download PKG=VERSION`, else https://snapshot.debian.org/file/SHA1
// (Debian's archive of every file it ever published: the security archive
// drops superseded versions). Only when the network is unreachable (no name
// resolution, no route, no connection) does a test skip, saying so; every
// other fetch failure (a version gone from both, a hash mismatch) fails it.
// scripts/test.sh turns a skip into a failure when CI is set.
//
// Until `cryptex mkpatch` exists in the build, the patch tests fetch, unpack,
// build and extract the base (checked against OLD) and then skip; until
// `extract`/`verify` take --patch, they also make the patches and check the
// digests inspect records against NEW, then skip.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "test_util.h"

namespace cryptex {
namespace {

using test::CommandResult;
using test::Contains;
using test::CryptexBin;
using test::RunCommandCapture;
using test::RunCryptex;
using test::ShellQuote;
using test::TempDir;

std::string Q(const std::string& s) { return ShellQuote(s); }

// ---- the packages ----------------------------------------------------------------

struct Deb {
  const char* package;
  const char* version;
  // Of the amd64 .deb (as published by Debian; checked after every fetch).
  const char* sha256;
  const char* sha1;  // snapshot.debian.org/file/SHA1
};

constexpr Deb kCurlOld{"curl", "7.88.1-10+deb12u5",
                       "e3f80e7399b9ea2e78eaf68a96db7062ca1c22717f63437198464d2eee66d650",
                       "9e809cbfff69c87f843aab1bc872fcb86246d1f8"};
constexpr Deb kCurlNew{"curl", "7.88.1-10+deb12u15",
                       "0dd9b6bf7a0bd11af2d68a52ec44c2a223fa7c11f9104c36ce1047e1137d4a8f",
                       "5f00909b0cdc08a212299dcc0b96dd14febb2eb9"};
constexpr Deb kLibcurlOld{"libcurl4", "7.88.1-10+deb12u5",
                          "619b592d51c0e75be0b153dbb671e732739d306bf22f42f8e1bc103235299f0d",
                          "6ece4539dd8877c91ef07993cdb6dbcbac265a7c"};
constexpr Deb kLibcurlNew{"libcurl4", "7.88.1-10+deb12u15",
                          "3042904de01f9c4fbdcf1452b8f81abedcf2b015f9b9deba109063322b5bd68b",
                          "524d91597b7d48c3fd0954bec58b434bdc1ed1af"};
constexpr Deb kLibcOld{"libc6", "2.36-9+deb12u7",
                       "eba944bd99c2f5142baf573e6294a70f00758083bc3c2dca4c9e445943a3f8e6",
                       "370433cabd51dddecd7f601f6f31ff32e9388df2"};
constexpr Deb kLibcNew{"libc6", "2.36-9+deb12u14",
                       "ba4f88f73dbc3ae9055f3c20f4523bfdbaf1ad13ff95e258924f77d20b4fbedf",
                       "c534c6c7f912b61ca26b7cf4082235a0343b8751"};

// ---- fetching --------------------------------------------------------------------

std::string Arch() {
  const CommandResult r = RunCommandCapture("dpkg --print-architecture");
  std::string a = r.out;
  while (!a.empty() && (a.back() == '\n' || a.back() == ' ')) a.pop_back();
  return a;
}

std::string BuildDir() {
  const std::string bin = CryptexBin();
  return bin.substr(0, bin.size() - std::string("/cli/cryptex").size());
}

std::string CacheDir() {
  const char* env = std::getenv("CRYPTEX_DEB_CACHE");
  const std::string dir = env != nullptr && *env != '\0' ? env : BuildDir() + "/deb-cache";
  std::filesystem::create_directories(dir);
  return dir;
}

std::string Sha256(const std::string& path) {
  const CommandResult r = RunCommandCapture("sha256sum " + Q(path));
  return r.exit_code == 0 ? r.out.substr(0, 64) : "";
}

// True when `log` (apt's or Python's output) says the network itself failed:
// no name resolution, no route, nothing listening, a timeout.
bool NetworkUnreachable(const std::string& log) {
  for (const char* m :
       {"Temporary failure resolving", "Could not resolve", "Name or service not known",
        "Temporary failure in name resolution", "Network is unreachable", "No route to host",
        "Could not connect", "Connection refused", "Connection timed out", "timed out"}) {
    if (Contains(log, m)) return true;
  }
  return false;
}

// The outcome of fetching one .deb: its path, or why not.
struct Fetched {
  std::string path;          // set on success
  bool unreachable = false;  // the network failed (a skip, not a failure)
  std::string error;         // what was tried and what each said
};

// Fetches `deb` into the cache (once) and checks its SHA-256 on amd64.
Fetched FetchDeb(const Deb& deb) {
  const std::string arch = Arch();
  const bool pinned = arch == "amd64";
  const std::string cache = CacheDir();
  const std::string name = std::string(deb.package) + "_" + deb.version + "_" + arch + ".deb";
  const std::string path = cache + "/" + name;
  Fetched f;
  if (access(path.c_str(), R_OK) == 0 && (!pinned || Sha256(path) == deb.sha256)) {
    f.path = path;
    return f;
  }
  TempDir tmp(cache);
  const std::string spec = std::string(deb.package) + "=" + deb.version;
  CommandResult apt =
      RunCommandCapture("cd " + Q(tmp.path()) +
                        " && apt-get download -q -o APT::Sandbox::User=root " + Q(spec) + " 2>&1");
  std::string got;
  for (const auto& n : test::ListDirNames(tmp.path())) {
    if (n.size() > 4 && n.compare(n.size() - 4, 4, ".deb") == 0) got = tmp.Join(n);
  }
  f.error =
      "apt-get download " + spec + " (exit " + std::to_string(apt.exit_code) + "): " + apt.out;
  bool apt_unreachable = apt.exit_code != 0 && NetworkUnreachable(apt.out);
  if ((apt.exit_code != 0 || got.empty()) && pinned) {
    // The archive of everything Debian published, addressed by SHA-1.
    const std::string url = std::string("https://snapshot.debian.org/file/") + deb.sha1;
    got = tmp.Join(name);
    const CommandResult snap = RunCommandCapture(
        "python3 -c 'import sys, urllib.request\n"
        "try: data = urllib.request.urlopen(sys.argv[1], timeout=60).read()\n"
        "except Exception as e: sys.exit(str(e))\n"
        "open(sys.argv[2], \"wb\").write(data)' " +
        Q(url) + " " + Q(got) + " 2>&1");
    f.error += "\n" + url + " (exit " + std::to_string(snap.exit_code) + "): " + snap.out;
    if (snap.exit_code != 0) {
      f.unreachable = apt_unreachable && NetworkUnreachable(snap.out);
      return f;
    }
  } else if (apt.exit_code != 0 || got.empty()) {
    f.unreachable = apt_unreachable;
    return f;
  }
  if (pinned) {
    const std::string sum = Sha256(got);
    if (sum != deb.sha256) {
      f.error += "\n" + got + ": SHA-256 " + sum + ", expected " + deb.sha256;
      return f;
    }
  }
  if (rename(got.c_str(), path.c_str()) != 0) {
    f.error += "\ncannot move " + got + " to " + path;
    return f;
  }
  f.path = path;
  return f;
}

// Fetches every .deb of `debs` and unpacks them, in order, into the new
// directory `dir`. Skips the test if the network is unreachable and fails it
// on any other error (call through ASSERT_NO_FATAL_FAILURE, then return if
// IsSkipped()).
void Unpack(const std::vector<Deb>& debs, const std::string& dir) {
  ASSERT_EQ(mkdir(dir.c_str(), 0755), 0) << dir;
  for (const Deb& deb : debs) {
    const Fetched f = FetchDeb(deb);
    if (f.path.empty() && f.unreachable) {
      GTEST_SKIP() << "the Debian archive cannot be reached (network unreachable), so "
                   << deb.package << " " << deb.version << " cannot be fetched:\n"
                   << f.error;
    }
    ASSERT_FALSE(f.path.empty()) << "cannot fetch " << deb.package << " " << deb.version << ":\n"
                                 << f.error;
    const CommandResult r = RunCommandCapture("dpkg-deb -x " + Q(f.path) + " " + Q(dir));
    ASSERT_EQ(r.exit_code, 0) << f.path << ": " << r.err;
  }
}

// ---- the trees -------------------------------------------------------------------

// Relative paths of the regular files of `b` whose content is new: absent
// from `a`, not a regular file there, or different bytes.
std::vector<std::string> ContentChanged(const std::string& a, const std::string& b) {
  std::vector<std::string> out;
  namespace fs = std::filesystem;
  for (auto it = fs::recursive_directory_iterator(b); it != fs::recursive_directory_iterator();
       ++it) {
    if (!it->is_regular_file() || it->is_symlink()) continue;
    const std::string rel = fs::relative(it->path(), b).string();
    const std::string other = a + "/" + rel;
    struct stat st;
    if (lstat(other.c_str(), &st) != 0 || !S_ISREG(st.st_mode) ||
        test::ReadFile(other) != test::ReadFile(it->path().string())) {
      out.push_back(rel);
    }
  }
  std::sort(out.begin(), out.end());
  return out;
}

// "sha256:HEX PATH" -> HEX.
std::string FsverityDigest(const std::string& path) {
  const CommandResult r = RunCommandCapture("fsverity digest " + Q(path));
  EXPECT_EQ(r.exit_code, 0) << path << ": " << r.err;
  if (r.out.size() < 7 + 64 || r.out.compare(0, 7, "sha256:") != 0) return "?" + r.out;
  return r.out.substr(7, 64);
}

// ---- cryptex ---------------------------------------------------------------------

bool HaveMkpatch() { return RunCryptex("mkpatch --help").exit_code == 0; }

// A signing key and a trust directory that holds its public half.
struct Keys {
  std::string key, trust;
  explicit Keys(const TempDir& work) : key(work.Join("vendor")), trust(work.Join("keys")) {
    const CommandResult r = RunCryptex("keygen -o " + Q(key));
    EXPECT_EQ(r.exit_code, 0) << r.err;
    EXPECT_EQ(mkdir(trust.c_str(), 0755), 0);
    std::filesystem::copy_file(key + ".pub", trust + "/vendor.pub");
  }
};

// `--trust DIR` if `cryptex SUB --help` offers it (mkpatch may or may not
// check the signature of the images it reads), else "".
std::string TrustArg(const std::string& sub, const Keys& keys) {
  const CommandResult help = RunCryptex(sub + " --help");
  return Contains(help.out + help.err, "--trust") ? " --trust " + Q(keys.trust) : "";
}

void BuildBase(const std::string& dir, const std::string& out, const Keys& keys) {
  const CommandResult r = RunCryptex("build " + Q(dir) + " -o " + Q(out) + " --key " + Q(keys.key) +
                                     " --name org.debian.oracle --version 1 --epoch 1700000000 -q");
  ASSERT_EQ(r.exit_code, 0) << r.err;
}

// cryptex mkpatch --from BASE [--on P]... --to DIR -o OUT.
void MakePatch(const std::string& base, const std::vector<std::string>& on, const std::string& dir,
               const std::string& out, const std::string& id, int counter, const Keys& keys) {
  std::string cmd = "mkpatch --from " + Q(base);
  for (const auto& p : on) cmd += " --on " + Q(p);
  cmd += " --to " + Q(dir) + " -o " + Q(out) + " --key " + Q(keys.key) + " --id " + Q(id) +
         " --release-counter " + std::to_string(counter) + " --epoch 1700000000" +
         TrustArg("mkpatch", keys);
  const auto t0 = std::chrono::steady_clock::now();
  const CommandResult r = RunCryptex(cmd);
  ASSERT_EQ(r.exit_code, 0) << cmd << "\n" << r.out << r.err;
  std::printf("[ info     ] %s: %llu bytes, made in %.2f s\n", id.c_str(),
              static_cast<unsigned long long>(test::FileSize(out)),
              std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
}

std::string PatchArgs(const std::vector<std::string>& patches) {
  std::string s;
  for (const auto& p : patches) s += " --patch " + Q(p);
  return s;
}

CommandResult Extract(const std::string& base, const std::vector<std::string>& patches,
                      const std::string& out, const Keys& keys) {
  return RunCryptex("extract " + Q(base) + PatchArgs(patches) + " " + Q(out) + " --trust " +
                    Q(keys.trust));
}

// Every (path, digest) that `cryptex inspect --json PATCH` records: any
// object in the document with a string "path" (leading '/' dropped) and a
// string digest ("digest", "fsverity_digest" or "sha256"; a "sha256:"
// prefix dropped). The document's layout beyond that is not assumed.
std::map<std::string, std::string> RecordedDigests(const std::string& patch, const Keys& keys,
                                                   std::string* doc) {
  const CommandResult r = RunCryptex("inspect --json " + Q(patch) + " --trust " + Q(keys.trust));
  EXPECT_EQ(r.exit_code, 0) << r.err;
  *doc = r.out;
  std::map<std::string, std::string> out;
  const nlohmann::json j = nlohmann::json::parse(r.out, nullptr, /*allow_exceptions=*/false);
  EXPECT_FALSE(j.is_discarded()) << "inspect --json is not JSON:\n" << r.out;
  std::function<void(const nlohmann::json&)> walk = [&](const nlohmann::json& v) {
    if (v.is_array()) {
      for (const auto& e : v) walk(e);
      return;
    }
    if (!v.is_object()) return;
    const auto path = v.find("path");
    if (path != v.end() && path->is_string()) {
      for (const char* key : {"digest", "fsverity_digest", "sha256"}) {
        const auto d = v.find(key);
        if (d == v.end() || !d->is_string()) continue;
        std::string p = path->get<std::string>(), hex = d->get<std::string>();
        while (!p.empty() && p.front() == '/') p.erase(0, 1);
        if (hex.rfind("sha256:", 0) == 0) hex.erase(0, 7);
        out[p] = hex;
        break;
      }
    }
    for (const auto& [k, e] : v.items()) walk(e);
  };
  if (!j.is_discarded()) walk(j);
  return out;
}

// The files whose content differs between `lower` and `want` (relative
// paths) with the fs-verity digest `patch` records for each (inspect --json),
// checked against `fsverity digest` of the file in `want`. Every such file
// must have one.
std::map<std::string, std::string> ExpectRecordedDigests(const std::string& lower,
                                                         const std::string& want,
                                                         const std::string& patch,
                                                         const Keys& keys) {
  const std::vector<std::string> changed = ContentChanged(lower, want);
  EXPECT_FALSE(changed.empty()) << lower << " and " << want << " hold the same bytes";
  std::string doc;
  const auto recorded = RecordedDigests(patch, keys, &doc);
  std::map<std::string, std::string> out;
  std::string first_missing;
  for (const auto& rel : changed) {
    SCOPED_TRACE(rel);
    const auto it = recorded.find(rel);
    if (it == recorded.end()) {
      if (first_missing.empty()) first_missing = rel;
      continue;
    }
    EXPECT_EQ(FsverityDigest(want + "/" + rel), it->second) << "source file";
    out.insert(*it);
  }
  EXPECT_EQ(out.size(), changed.size())
      << changed.size() - out.size() << " of " << changed.size()
      << " changed files have no (path, digest) in inspect --json, e.g. " << first_missing << ":\n"
      << doc.substr(0, 4000);
  std::printf("[ info     ] %s: %zu files with new content, %zu recorded digests checked\n",
              patch.c_str(), changed.size(), out.size());
  return out;
}

// `out` (an extraction of base + patches) equals `want`: diff -r, the
// metadata walk, and `fsverity digest` of each file in `digests` (relative
// path -> the digest the top patch records).
void ExpectPatchedTree(const std::string& want, const std::string& out,
                       const std::map<std::string, std::string>& digests) {
  const CommandResult diff =
      RunCommandCapture("diff -r --no-dereference " + Q(want) + " " + Q(out));
  EXPECT_EQ(diff.exit_code, 0) << diff.err;
  EXPECT_EQ(diff.out, "");
  for (const auto& d : test::CompareTrees(want, out, /*content=*/false)) ADD_FAILURE() << d;
  for (const auto& [rel, digest] : digests) {
    EXPECT_EQ(FsverityDigest(out + "/" + rel), digest) << "extracted " << rel;
  }
}

// The base alone extracts to OLD (runs before any patch command is needed).
void ExpectBaseRoundTrip(const std::string& base, const std::string& old, const TempDir& work,
                         const Keys& keys) {
  const std::string out = work.Join("base.extracted");
  const CommandResult r = Extract(base, {}, out, keys);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const CommandResult diff = RunCommandCapture("diff -r --no-dereference " + Q(old) + " " + Q(out));
  EXPECT_EQ(diff.exit_code, 0) << diff.out << diff.err;
  for (const auto& d : test::CompareTrees(old, out, /*content=*/false)) ADD_FAILURE() << d;
  std::filesystem::remove_all(out);
}

#define SKIP_UNLESS_MKPATCH()                                                           \
  do {                                                                                  \
    if (!HaveMkpatch()) {                                                               \
      GTEST_SKIP() << "`" << CryptexBin() << " mkpatch` does not exist in this build; " \
                   << "the base was built and checked, the patch checks did not run";   \
    }                                                                                   \
  } while (0)

// True when `cryptex extract` and `cryptex verify` take --patch.
bool HavePatchOption() {
  for (const char* sub : {"extract", "verify"}) {
    const CommandResult help = RunCryptex(std::string(sub) + " --help");
    if (help.exit_code != 0 || !Contains(help.out + help.err, "--patch")) return false;
  }
  return true;
}

#define SKIP_UNLESS_PATCH_OPTION()                                                        \
  do {                                                                                    \
    if (!HavePatchOption()) {                                                             \
      GTEST_SKIP() << "`cryptex extract|verify --patch` do not exist in this build; the " \
                   << "patches were made and their recorded digests checked, the "        \
                   << "extraction checks did not run";                                    \
    }                                                                                     \
  } while (0)

// ---- one update ------------------------------------------------------------------

struct Update {
  const char* test_name;
  std::vector<Deb> old_debs, new_debs;
};

void PrintTo(const Update& u, std::ostream* os) { *os << u.test_name; }

class DebianPatch : public ::testing::TestWithParam<Update> {};

TEST_P(DebianPatch, ExtractWithPatchEqualsNew) {
  const Update& u = GetParam();
  TempDir work;
  const std::string old_dir = work.Join("old"), new_dir = work.Join("new");
  ASSERT_NO_FATAL_FAILURE(Unpack(u.old_debs, old_dir));
  if (IsSkipped()) return;
  ASSERT_NO_FATAL_FAILURE(Unpack(u.new_debs, new_dir));
  if (IsSkipped()) return;
  const Keys keys(work);
  const std::string base = work.Join("base.cryptex");
  ASSERT_NO_FATAL_FAILURE(BuildBase(old_dir, base, keys));
  ASSERT_NO_FATAL_FAILURE(ExpectBaseRoundTrip(base, old_dir, work, keys));
  SKIP_UNLESS_MKPATCH();

  const std::string patch = work.Join("update.cxpatch");
  ASSERT_NO_FATAL_FAILURE(
      MakePatch(base, {}, new_dir, patch, std::string("deb12-") + u.test_name, 1, keys));
  const auto digests = ExpectRecordedDigests(old_dir, new_dir, patch, keys);
  SKIP_UNLESS_PATCH_OPTION();
  CommandResult r =
      RunCryptex("verify -q " + Q(base) + PatchArgs({patch}) + " --trust " + Q(keys.trust));
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;

  const std::string out = work.Join("extracted");
  r = Extract(base, {patch}, out, keys);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  ExpectPatchedTree(new_dir, out, digests);
}

INSTANTIATE_TEST_SUITE_P(
    Bookworm, DebianPatch,
    ::testing::Values(Update{"Curl", {kCurlOld, kLibcurlOld}, {kCurlNew, kLibcurlNew}},
                      Update{"Libc6", {kLibcOld}, {kLibcNew}}),
    [](const ::testing::TestParamInfo<Update>& p) { return std::string(p.param.test_name); });

// ---- a chain of two --------------------------------------------------------------

// OLD = curl, libcurl4 and libc6 as first released in the security archive;
// MID = curl and libcurl4 updated (patch 1); NEW = libc6 updated too (patch 2,
// made --on patch 1).
TEST(DebianPatchChain, TwoUpdatesStacked) {
  TempDir work;
  const std::string old_dir = work.Join("old"), mid_dir = work.Join("mid"),
                    new_dir = work.Join("new");
  ASSERT_NO_FATAL_FAILURE(Unpack({kCurlOld, kLibcurlOld, kLibcOld}, old_dir));
  if (IsSkipped()) return;
  ASSERT_NO_FATAL_FAILURE(Unpack({kCurlNew, kLibcurlNew, kLibcOld}, mid_dir));
  if (IsSkipped()) return;
  ASSERT_NO_FATAL_FAILURE(Unpack({kCurlNew, kLibcurlNew, kLibcNew}, new_dir));
  if (IsSkipped()) return;
  const Keys keys(work);
  const std::string base = work.Join("base.cryptex");
  ASSERT_NO_FATAL_FAILURE(BuildBase(old_dir, base, keys));
  ASSERT_NO_FATAL_FAILURE(ExpectBaseRoundTrip(base, old_dir, work, keys));
  SKIP_UNLESS_MKPATCH();

  const std::string p1 = work.Join("1-curl.cxpatch"), p2 = work.Join("2-libc6.cxpatch");
  ASSERT_NO_FATAL_FAILURE(MakePatch(base, {}, mid_dir, p1, "deb12-curl", 1, keys));
  ASSERT_NO_FATAL_FAILURE(MakePatch(base, {p1}, new_dir, p2, "deb12-libc6", 2, keys));
  const auto digests1 = ExpectRecordedDigests(old_dir, mid_dir, p1, keys);
  const auto digests2 = ExpectRecordedDigests(mid_dir, new_dir, p2, keys);
  SKIP_UNLESS_PATCH_OPTION();
  CommandResult r =
      RunCryptex("verify -q " + Q(base) + PatchArgs({p1, p2}) + " --trust " + Q(keys.trust));
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;

  {
    SCOPED_TRACE("base + patch 1");
    const std::string out = work.Join("mid.extracted");
    r = Extract(base, {p1}, out, keys);
    ASSERT_EQ(r.exit_code, 0) << r.err;
    ExpectPatchedTree(mid_dir, out, digests1);
  }
  {
    SCOPED_TRACE("base + patch 1 + patch 2");
    const std::string out = work.Join("new.extracted");
    r = Extract(base, {p1, p2}, out, keys);
    ASSERT_EQ(r.exit_code, 0) << r.err;
    ExpectPatchedTree(new_dir, out, digests2);
  }
  // Patch 2 reads only on top of base + patch 1: alone, or under patch 1, it
  // is refused and nothing is written.
  for (const auto& stack : {std::vector<std::string>{p2}, std::vector<std::string>{p2, p1}}) {
    const std::string out = work.Join("wrong");
    r = Extract(base, stack, out, keys);
    EXPECT_NE(r.exit_code, 0) << "extract with patches in the wrong order succeeded";
    EXPECT_FALSE(r.err.empty());
    struct stat st;
    EXPECT_NE(lstat(out.c_str(), &st), 0) << out << " exists after a refused extraction";
    std::filesystem::remove_all(out);
  }
}

}  // namespace
}  // namespace cryptex
