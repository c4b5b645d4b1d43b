// Hostile-but-signed images (gen.h): each must be refused with its specific
// error at the stage it names, within bounded time and memory, and no read
// may ever return bytes that differ from what the legit image returns.
#include <dirent.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <fstream>
#include <functional>
#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "gen.h"
#include "image.h"
#include "test_util.h"
#include "walk.h"

namespace cryptex::adversarial {
namespace {

// Peak resident set size of this process, in KiB (VmHWM).
uint64_t PeakRssKiB() {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind("VmHWM:", 0) == 0) return std::stoull(line.substr(6));
  }
  return 0;
}

class AdversarialTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new test::TempDir();
    auto b = BuildBase(dir_->Join("base"));
    ASSERT_TRUE(b.ok()) << b.status().ToString();
    base_ = new Base(std::move(*b));
    auto trust = TrustStore::LoadDir(base_->key.trust_dir);
    ASSERT_TRUE(trust.ok()) << trust.status().ToString();
    trust_ = new TrustStore(std::move(*trust));
    legit_ = new walk::Report(walk::Run(base_->image, *trust_));
  }
  static void TearDownTestSuite() {
    delete legit_;
    delete trust_;
    delete base_;
    delete dir_;
  }

  static test::TempDir* dir_;
  static Base* base_;
  static TrustStore* trust_;
  static walk::Report* legit_;
};
test::TempDir* AdversarialTest::dir_ = nullptr;
Base* AdversarialTest::base_ = nullptr;
TrustStore* AdversarialTest::trust_ = nullptr;
walk::Report* AdversarialTest::legit_ = nullptr;

TEST_F(AdversarialTest, LegitBaseIsClean) {
  ASSERT_TRUE(legit_->open.ok()) << legit_->Summary();
  EXPECT_TRUE(legit_->errors.empty()) << legit_->Summary();
  EXPECT_TRUE(legit_->walker_errors.empty()) << legit_->Summary();
  // verify is only meaningful if VerifyAll ran (a truncated walk skips it).
  EXPECT_TRUE(legit_->verified) << legit_->Summary();
  EXPECT_TRUE(legit_->verify.ok()) << legit_->Summary();
  // The walk saw every kind of entry the cases attack.
  for (const char* p : {"/a.txt", "/b.txt", "/big.bin", "/rand.bin", "/sparse.bin", "/empty",
                        "/hard1", "/sub/hard2", "/sub/c.txt", "/sub/deeper/file.txt"}) {
    EXPECT_TRUE(legit_->files.count(p)) << p;
  }
  EXPECT_EQ(legit_->links.at("/link"), "a.txt");
  EXPECT_EQ(legit_->links.at("/abs"), "/nonexistent/outside");
  EXPECT_EQ(legit_->files.at("/hard1"), legit_->files.at("/sub/hard2"));
  EXPECT_EQ(legit_->files.at("/sub/c.txt"), "in sub\n");
}

TEST_F(AdversarialTest, EveryCase) {
  const auto cases = AllCases();
  ASSERT_GE(cases.size(), 40u);
  std::set<std::string> names;
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name + ": " + c.what);
    ASSERT_TRUE(names.insert(c.name).second) << "duplicate case name";
    auto bytes = c.make(*base_);
    ASSERT_TRUE(bytes.ok()) << bytes.status().ToString();
    const std::string path = dir_->Join(c.name + ".cryptex");
    ASSERT_TRUE(surgery::WriteAll(path, *bytes).ok());

    const auto start = std::chrono::steady_clock::now();
    const walk::Report r = walk::Run(path, *trust_);
    const double secs =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    EXPECT_LT(secs, 20.0) << "not bounded in time";

    EXPECT_TRUE(r.walker_errors.empty()) << r.Summary();
    const auto diffs = walk::Differences(*legit_, r);
    EXPECT_TRUE(diffs.empty()) << diffs.front();

    switch (c.stage) {
      case Stage::kOpen:
        EXPECT_FALSE(r.open.ok()) << r.Summary();
        EXPECT_NE(r.open.message().find(c.expect), std::string::npos)
            << "expected \"" << c.expect << "\"\n"
            << r.Summary();
        break;
      case Stage::kAccess: {
        ASSERT_TRUE(r.open.ok()) << r.Summary();
        bool found = false;
        for (const auto& e : r.errors) found = found || e.find(c.expect) != std::string::npos;
        EXPECT_TRUE(found) << "expected an access error with \"" << c.expect << "\"\n"
                           << r.Summary();
        EXPECT_FALSE(r.verify.ok()) << "VerifyAll missed it\n" << r.Summary();
        break;
      }
      case Stage::kVerify:
        ASSERT_TRUE(r.open.ok()) << r.Summary();
        EXPECT_FALSE(r.verify.ok()) << r.Summary();
        EXPECT_NE(r.verify.message().find(c.expect), std::string::npos)
            << "expected \"" << c.expect << "\"\n"
            << r.Summary();
        break;
    }
    // Every failure is an integrity failure, reported as such.
    if (!r.open.ok()) {
      EXPECT_TRUE(r.open.code() == Code::kCorruption || r.open.code() == Code::kUnsupported)
          << r.open.ToString();
    }
    if (!r.verify.ok() && r.open.ok()) {
      EXPECT_EQ(r.verify.code(), Code::kCorruption) << r.verify.ToString();
    }
    std::printf("[case] %-32s %-6s %s\n", c.name.c_str(), StageName(c.stage),
                (r.open.ok() ? (r.errors.empty() ? r.verify.message() : r.errors.front())
                             : r.open.message())
                    .c_str());
  }
  // Bounded memory: the whole run (base, every case, caches) stays small.
  const uint64_t rss = PeakRssKiB();
  ASSERT_GT(rss, 0u) << "no VmHWM in /proc/self/status";
  EXPECT_LT(rss, 1024u * 1024u);
}

// The cases whose refusal depends on what the reader saw before (a
// directory's parent, a range's owner) through a second Image per case with
// default (large) caches and direct calls in odd orders: ReadDir of a deep
// directory before its parent, then everything from the root. Whatever the
// order, the reader must refuse the image somewhere with the case's error,
// and never serve a directory under two parents, the root as an entry, or
// one entry range in two directories.
TEST_F(AdversarialTest, RefusedWhateverTheAccessOrder) {
  size_t checked = 0;
  for (const Case& c : AllCases()) {
    if (c.expect != "is reachable from two places" &&
        c.expect != "overlap the entries of directory inode") {
      continue;
    }
    ++checked;
    SCOPED_TRACE(c.name);
    auto bytes = c.make(*base_);
    ASSERT_TRUE(bytes.ok());
    const std::string path = dir_->Join(c.name + "-order.cryptex");
    ASSERT_TRUE(surgery::WriteAll(path, *bytes).ok());
    auto t = surgery::ReadTables(*bytes);
    ASSERT_TRUE(t.ok());
    for (const char* start : {"sub/deeper", "sub", "z"}) {
      SCOPED_TRACE(std::string("first ReadDir: ") + start);
      ImageOptions opts;
      opts.trust = trust_;
      auto img = Image::Open(path, opts);
      ASSERT_TRUE(img.ok()) << img.status().ToString();
      auto ino = t->FindInode(start);
      ASSERT_TRUE(ino.has_value());
      // Walk from `start` without ever listing the root first, then from the
      // root.
      std::vector<uint64_t> queue{*ino, 1};
      std::set<uint64_t> queued{*ino, 1};
      std::map<uint64_t, uint64_t> parent;  // directory -> the directory that served it
      std::map<std::pair<uint64_t, uint64_t>, uint64_t> served;  // (dir, index) -> inode
      bool failed = false;
      for (size_t i = 0; i < queue.size() && i < 1000; ++i) {
        Status st = (*img)->ReadDir(queue[i], 0, [&](const DirEntry& e, uint64_t) {
          EXPECT_NE(e.ino, 1u) << "the root served as entry " << e.name;
          if (e.type != format::kTypeDirectory) return true;
          const auto [it, fresh] = parent.emplace(e.ino, queue[i]);
          EXPECT_TRUE(fresh || it->second == queue[i])
              << "directory " << e.ino << " (" << e.name << ") served by " << it->second << " and "
              << queue[i];
          if (queued.insert(e.ino).second) queue.push_back(e.ino);
          return true;
        });
        if (!st.ok()) {
          failed = true;
          EXPECT_NE(st.message().find(c.expect), std::string::npos) << st.ToString();
        }
      }
      EXPECT_LT(queue.size(), 1000u);
      EXPECT_TRUE(failed) << "every directory was served";
      // At most one directory lists the shared entries: the ranges of the
      // directories that read back are disjoint.
      std::vector<std::pair<uint64_t, uint64_t>> ranges;
      for (uint64_t d : queued) {
        if (!(*img)->ReadDir(d, 0, [](const DirEntry&, uint64_t) { return true; }).ok()) continue;
        auto in = (*img)->GetInode(d);
        ASSERT_TRUE(in.ok());
        if (in->payload_count > 0)
          ranges.emplace_back(in->payload, in->payload + in->payload_count);
      }
      std::sort(ranges.begin(), ranges.end());
      for (size_t r = 1; r < ranges.size(); ++r) {
        EXPECT_LE(ranges[r - 1].second, ranges[r].first) << "two directories served one entry";
      }
    }
  }
  EXPECT_GE(checked, 8u);
}

// `cryptex verify` refuses every case: exit 3 (4 for an unknown feature),
// one line naming the image and, where only VerifyAll must notice, the
// case's error.
TEST_F(AdversarialTest, CliVerifyRefusesEveryCase) {
  const std::string cli = test::CryptexBin();
  ASSERT_EQ(access(cli.c_str(), X_OK), 0) << cli << " (build the cryptex target)";
  for (const Case& c : AllCases()) {
    SCOPED_TRACE(c.name);
    auto bytes = c.make(*base_);
    ASSERT_TRUE(bytes.ok());
    const std::string path = dir_->Join(c.name + "-cli.cryptex");
    ASSERT_TRUE(surgery::WriteAll(path, *bytes).ok());
    const auto r =
        test::RunCommandCapture(cli + " verify --trust " + test::ShellQuote(base_->key.trust_dir) +
                                " " + test::ShellQuote(path));
    const int want = c.expect == "unknown incompatible feature bits" ? 4 : 3;
    EXPECT_EQ(r.exit_code, want) << r.out << r.err;
    EXPECT_TRUE(test::Contains(r.err, path)) << r.err;
    if (c.stage != Stage::kAccess) {
      EXPECT_TRUE(test::Contains(r.err, c.expect)) << r.err;
    }
  }
}

// The reference cases the reader refuses (Stage::kAccess) through a real
// cryptexfs mount: the kernel gets EIO for the bad directory or entry, and
// the mount never serves more entries than the image holds (no
// amplification).
TEST_F(AdversarialTest, ReferenceCasesThroughTheMount) {
  if (geteuid() != 0 || access("/dev/fuse", R_OK | W_OK) != 0) {
    GTEST_SKIP() << "needs root and /dev/fuse";
  }
  const std::string cli = test::CryptexBin();  // BUILD/cli/cryptex
  const std::string cryptexfs = cli.substr(0, cli.rfind("/cli/")) + "/fs/cryptexfs/cryptexfs";
  ASSERT_EQ(access(cryptexfs.c_str(), X_OK), 0) << cryptexfs << " (build the cryptexfs target)";
  size_t checked = 0;
  for (const Case& c : AllCases()) {
    if (c.name.rfind("ref_", 0) != 0 || c.stage != Stage::kAccess) continue;
    ++checked;
    SCOPED_TRACE(c.name);
    auto bytes = c.make(*base_);
    ASSERT_TRUE(bytes.ok());
    const std::string path = dir_->Join(c.name + "-mnt.cryptex");
    const std::string mnt = dir_->Join(c.name + "-mnt");
    ASSERT_TRUE(surgery::WriteAll(path, *bytes).ok());
    ASSERT_EQ(mkdir(mnt.c_str(), 0755), 0);
    const auto m =
        test::RunCommand(cryptexfs + " " + test::ShellQuote(path) + " " + test::ShellQuote(mnt) +
                         " -o trust=" + test::ShellQuote(base_->key.trust_dir));
    ASSERT_EQ(m.exit_code, 0) << m.out;
    uint64_t entries = 0;
    std::vector<std::string> eio;
    std::function<void(const std::string&, int)> walk = [&](const std::string& d, int depth) {
      DIR* dir = opendir(d.c_str());
      if (dir == nullptr) {
        if (errno == EIO) eio.push_back(d);
        return;
      }
      std::vector<std::string> subdirs;
      errno = 0;
      while (dirent* de = readdir(dir)) {
        const std::string n = de->d_name;
        if (n == "." || n == "..") continue;
        ++entries;
        struct stat st;
        if (lstat((d + "/" + n).c_str(), &st) != 0) {
          if (errno == EIO) eio.push_back(d + "/" + n);
        } else if (S_ISDIR(st.st_mode) && depth < 8) {
          subdirs.push_back(d + "/" + n);
        }
        errno = 0;
      }
      if (errno == EIO) eio.push_back(d);
      closedir(dir);
      for (const auto& s : subdirs) walk(s, depth + 1);
    };
    walk(mnt, 0);
    EXPECT_FALSE(eio.empty()) << "nothing refused through the mount";
    // The largest case holds 200 + 1,000 entries more than the base.
    EXPECT_LT(entries, 1300u) << "more entries served than the image holds";
    // The kernel may still hold the directories just closed until cryptexfs
    // has answered their asynchronous RELEASEDIR: a busy unmount is retried
    // for up to 5 s (a mount still busy after that is a failure).
    test::CommandResult u;
    for (int tries = 0; tries < 50; ++tries) {
      u = test::RunCommand("fusermount3 -u " + test::ShellQuote(mnt) + " 2>&1");
      if (u.exit_code == 0 || !test::Contains(u.out, "busy")) break;
      usleep(100 * 1000);
    }
    EXPECT_EQ(u.exit_code, 0) << u.out;
  }
  EXPECT_GE(checked, 5u);
}

// Symlink loops are legal content: they read back as symlinks, nothing
// follows them.
TEST(AdversarialSymlinks, LoopsReadBackAsSymlinks) {
  test::TempDir dir;
  const std::string src = dir.Join("src");
  ASSERT_EQ(mkdir(src.c_str(), 0755), 0);
  ASSERT_EQ(symlink("b", (src + "/a").c_str()), 0);
  ASSERT_EQ(symlink("a", (src + "/b").c_str()), 0);
  ASSERT_EQ(symlink("self", (src + "/self").c_str()), 0);
  ASSERT_EQ(symlink("../../../../../../../../etc/passwd", (src + "/up").c_str()), 0);
  auto base = BuildBase(dir.Join("w"), 12, src);
  ASSERT_TRUE(base.ok()) << base.status().ToString();
  auto trust = TrustStore::LoadDir(base->key.trust_dir);
  ASSERT_TRUE(trust.ok());
  const walk::Report r = walk::Run(base->image, *trust);
  ASSERT_TRUE(r.open.ok()) << r.Summary();
  EXPECT_TRUE(r.errors.empty()) << r.Summary();
  EXPECT_TRUE(r.verified) << r.Summary();
  EXPECT_TRUE(r.verify.ok()) << r.Summary();
  EXPECT_EQ(r.links.at("/a"), "b");
  EXPECT_EQ(r.links.at("/b"), "a");
  EXPECT_EQ(r.links.at("/self"), "self");
  EXPECT_EQ(r.links.at("/up"), "../../../../../../../../etc/passwd");
  ImageOptions opts;
  opts.trust = &*trust;
  auto img = Image::Open(base->image, opts);
  ASSERT_TRUE(img.ok());
  auto a = (*img)->Resolve("/a");
  ASSERT_TRUE(a.ok());
  EXPECT_TRUE(a->is_symlink());
  EXPECT_EQ((*img)->Resolve("/a/x").status().code(), Code::kNotDirectory);
}

}  // namespace
}  // namespace cryptex::adversarial
