// Oracle round trips over real trees of the system: `cryptex build`, then
// `cryptex extract`, then checks written by nobody on this team:
//   * `diff -r --no-dereference` between the source and the extraction;
//   * a metadata walk (mode, uid, gid, size, nlink within the tree, mtime in
//     ns, rdev, symlink targets, every xattr) of both trees;
//   * `veritysetup verify` with the parameters `cryptex inspect` prints;
//   * `fsverity digest` of extracted files against the digest the image
//     records (read through the library).
//   * the same diff -r and metadata walk on a cryptexfs mount of the image.
// The system's multiarch library directory (/usr/lib/x86_64-linux-gnu on
// amd64, /usr/lib/aarch64-linux-gnu on arm64: where libc lives) is about
// 1 GB and is built with --level 1.
#include <dlfcn.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "image.h"
#include "keys.h"
#include "test_util.h"

namespace cryptex {
namespace {

using test::CryptexBin;

using test::CommandResult;
using test::ListDirNames;
using test::RunCommand;
using test::RunCommandCapture;
using test::RunCryptex;
using test::ShellQuote;
using test::TempDir;

std::string Q(const std::string& s) { return ShellQuote(s); }

struct Tree {
  const char* test_name;
  const char* path;
  const char* build_flags;
};

void PrintTo(const Tree& t, std::ostream* os) { *os << t.path; }

// Regular files of `root` (relative paths, walk order) with their sizes, and
// for every non-directory whether st_nlink equals its number of names.
struct Walk {
  std::vector<std::pair<std::string, uint64_t>> files;
  std::vector<std::string> nlink_mismatches;
};

Walk WalkTree(const std::string& root) {
  Walk w;
  std::map<std::pair<dev_t, ino_t>, std::pair<uint64_t, nlink_t>> names;  // -> (count, st_nlink)
  std::map<std::pair<dev_t, ino_t>, std::string> first;
  std::function<void(const std::string&)> walk = [&](const std::string& rel) {
    const std::string path = rel.empty() ? root : root + "/" + rel;
    struct stat st;
    ASSERT_EQ(lstat(path.c_str(), &st), 0) << path;
    if (S_ISDIR(st.st_mode)) {
      for (const auto& n : ListDirNames(path)) walk(rel.empty() ? n : rel + "/" + n);
      return;
    }
    auto& [count, nlink] = names[{st.st_dev, st.st_ino}];
    ++count;
    nlink = st.st_nlink;
    if (first.try_emplace({st.st_dev, st.st_ino}, rel).second && S_ISREG(st.st_mode)) {
      w.files.emplace_back(rel, static_cast<uint64_t>(st.st_size));
    }
  };
  walk("");
  for (const auto& [key, v] : names) {
    if (v.first != v.second) {
      w.nlink_mismatches.push_back(first[key] + ": " + std::to_string(v.second) + " links, " +
                                   std::to_string(v.first) + " names in the tree");
    }
  }
  return w;
}

// "sha256:HEX PATH" -> HEX.
std::string FsverityDigest(const std::string& path) {
  const CommandResult r = RunCommandCapture("fsverity digest " + Q(path));
  EXPECT_EQ(r.exit_code, 0) << path << ": " << r.err;
  if (r.out.size() < 7 + 64 || r.out.compare(0, 7, "sha256:") != 0) return "?" + r.out;
  return r.out.substr(7, 64);
}

class OracleRoundTrip : public ::testing::TestWithParam<Tree> {};

TEST_P(OracleRoundTrip, BuildExtractCompare) {
  const Tree& tree = GetParam();
  const std::string src = tree.path;
  struct stat st;
  ASSERT_EQ(lstat(src.c_str(), &st), 0) << src << " must exist on the test machine";
  ASSERT_TRUE(S_ISDIR(st.st_mode));
  TempDir work;
  auto clock = std::chrono::steady_clock::now();
  auto lap = [&](const char* what) {
    const auto now = std::chrono::steady_clock::now();
    std::printf("[ timing   ] %s: %.1f s\n", what,
                std::chrono::duration<double>(now - clock).count());
    std::fflush(stdout);
    clock = now;
  };

  const std::string key = work.Join("vendor"), trust = work.Join("keys");
  ASSERT_EQ(RunCryptex("keygen -o " + Q(key)).exit_code, 0);
  ASSERT_EQ(mkdir(trust.c_str(), 0755), 0);
  std::filesystem::copy_file(key + ".pub", trust + "/vendor.pub");
  const std::string image = work.Join("tree.cryptex");
  CommandResult r = RunCryptex("build " + Q(src) + " -o " + Q(image) + " --key " + Q(key) +
                               " --name org.example.oracle --version 1 --epoch 1700000000 -q " +
                               tree.build_flags);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  lap("build");

  // 1. cryptex's own full check.
  r = RunCryptex("verify -q " + Q(image) + " --trust " + Q(trust));
  EXPECT_EQ(r.exit_code, 0) << r.err;
  lap("cryptex verify");

  // 2. veritysetup, with the parameters inspect prints.
  r = RunCryptex("inspect --json " + Q(image) + " --trust " + Q(trust));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  test::WriteFile(work.Join("inspect.json"), r.out);
  const CommandResult cmd = RunCommandCapture(
      "python3 -c 'import json,sys; "
      "print(json.load(open(sys.argv[1]))[\"veritysetup_command\"])' " +
      Q(work.Join("inspect.json")));
  ASSERT_EQ(cmd.exit_code, 0) << cmd.err << r.out;
  ASSERT_EQ(cmd.out.rfind("veritysetup verify ", 0), 0u) << cmd.out;
  const CommandResult verity = RunCommandCapture(cmd.out);
  EXPECT_EQ(verity.exit_code, 0) << cmd.out << verity.out << verity.err;
  lap("veritysetup verify");

  // 3. Extract, then diff -r and the metadata walk.
  const std::string out = work.Join("extracted");
  r = RunCryptex("extract " + Q(image) + " " + Q(out) + " --trust " + Q(trust));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.err, "") << "no warnings as root";
  lap("extract");
  const CommandResult diff = RunCommandCapture("diff -r --no-dereference " + Q(src) + " " + Q(out));
  EXPECT_EQ(diff.exit_code, 0) << diff.err;
  EXPECT_EQ(diff.out, "");
  lap("diff -r");
  const auto diffs = test::CompareTrees(src, out, /*content=*/false);
  for (const auto& d : diffs) ADD_FAILURE() << d;
  const Walk extracted = WalkTree(out);
  EXPECT_TRUE(extracted.nlink_mismatches.empty())
      << extracted.nlink_mismatches.size() << " extracted inodes, e.g. "
      << extracted.nlink_mismatches.front();
  lap("metadata walk");

  // 4. fs-verity digests: 50 files spread over the tree, and the largest.
  ASSERT_FALSE(extracted.files.empty());
  std::vector<std::pair<std::string, uint64_t>> sample;
  const size_t step = std::max<size_t>(1, extracted.files.size() / 50);
  for (size_t i = 0; i < extracted.files.size() && sample.size() < 50; i += step) {
    sample.push_back(extracted.files[i]);
  }
  sample.push_back(
      *std::max_element(extracted.files.begin(), extracted.files.end(),
                        [](const auto& a, const auto& b) { return a.second < b.second; }));
  auto ts = TrustStore::LoadDir(trust);
  ASSERT_TRUE(ts.ok()) << ts.status().ToString();
  ImageOptions opts;
  opts.trust = &*ts;
  auto img = Image::Open(image, opts);
  ASSERT_TRUE(img.ok()) << img.status().ToString();
  for (const auto& [rel, size] : sample) {
    SCOPED_TRACE(rel);
    auto in = (*img)->Resolve(rel);
    ASSERT_TRUE(in.ok()) << in.status().ToString();
    EXPECT_EQ(in->size, size);
    EXPECT_EQ(HexEncode(in->digest), FsverityDigest(out + "/" + rel));
  }
  std::printf("[ info     ] %zu files, largest %s (%llu bytes), image %llu bytes\n",
              extracted.files.size(), sample.back().first.c_str(),
              static_cast<unsigned long long>(sample.back().second),
              static_cast<unsigned long long>(test::FileSize(image)));
  lap("fsverity digests");

  // 5. The same checks on a cryptexfs mount of the image (issue: mounted
  //    tree equals the source tree).
  const std::string mnt = work.Join("mnt");
  ASSERT_EQ(mkdir(mnt.c_str(), 0755), 0);
  const std::string fs_bin = CryptexBin().substr(0, CryptexBin().size() - strlen("cli/cryptex")) +
                             "fs/cryptexfs/cryptexfs";
  r = RunCommandCapture(Q(fs_bin) + " " + Q(image) + " " + Q(mnt) + " -o trust=" + Q(trust));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  struct Unmount {
    std::string dir;
    ~Unmount() { RunCommand("fusermount3 -u -z " + ShellQuote(dir) + " 2>/dev/null"); }
  } unmount{mnt};
  lap("mount");
  const CommandResult mdiff =
      RunCommandCapture("diff -r --no-dereference " + Q(src) + " " + Q(mnt));
  EXPECT_EQ(mdiff.exit_code, 0) << mdiff.err;
  EXPECT_EQ(mdiff.out, "");
  lap("diff -r on the mount");
  for (const auto& d : test::CompareTrees(src, mnt, /*content=*/false)) ADD_FAILURE() << d;
  const Walk mounted = WalkTree(mnt);
  EXPECT_TRUE(mounted.nlink_mismatches.empty())
      << mounted.nlink_mismatches.size() << " mounted inodes, e.g. "
      << mounted.nlink_mismatches.front();
  EXPECT_EQ(mounted.files.size(), extracted.files.size());
  lap("metadata walk on the mount");
  r = RunCommandCapture(Q(CryptexBin()) + " status " + Q(mnt));
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("verify failures:  0"), std::string::npos) << r.out;
}

// The directory that holds this process's libc, under /usr (merged /usr):
// the multiarch library directory of whatever architecture runs the test.
const char* SystemLibDir() {
  static const std::string dir = [] {
    Dl_info info{};
    if (dladdr(reinterpret_cast<void*>(&std::strlen), &info) == 0 || info.dli_fname == nullptr) {
      return std::string("/usr/lib");
    }
    std::error_code ec;
    const std::filesystem::path lib = std::filesystem::canonical(info.dli_fname, ec);
    return ec ? std::string("/usr/lib") : lib.parent_path().string();
  }();
  return dir.c_str();
}

INSTANTIATE_TEST_SUITE_P(SystemTrees, OracleRoundTrip,
                         ::testing::Values(Tree{"UsrShareDoc", "/usr/share/doc", ""},
                                           Tree{"UsrLibMultiarch", SystemLibDir(), "--level 1"}),
                         [](const ::testing::TestParamInfo<Tree>& p) {
                           return std::string(p.param.test_name);
                         });

}  // namespace
}  // namespace cryptex
