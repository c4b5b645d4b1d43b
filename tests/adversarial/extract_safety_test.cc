// `cryptex extract` against hostile-but-signed images whose entries try to
// escape DEST: duplicate names (a symlink "evil" -> outside AND a directory
// "evil" with children), "..", names with '/', directory cycles and
// hard-linked directories. Whatever the image holds, nothing outside DEST may
// change (a sentinel directory next to it is snapshotted before and after),
// and a refused image leaves neither DEST nor a temporary behind.
#include <dirent.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <map>

#include "gen.h"
#include "surgery.h"
#include "test_util.h"

namespace cryptex::adversarial {
namespace {

namespace stdfs = std::filesystem;
using surgery::Bytes;
using surgery::Tables;

std::string CliPath() {
#ifdef CRYPTEX_CLI_PATH
  return CRYPTEX_CLI_PATH;
#else
  const char* b = std::getenv("CRYPTEX_BUILD_DIR");
  return std::string(b != nullptr ? b : ".") + "/cli/cryptex";
#endif
}

// Everything under `root` (not following symlinks): path -> type, mode,
// size, mtime, symlink target / content.
std::map<std::string, std::string> Snapshot(const std::string& root) {
  std::map<std::string, std::string> out;
  std::error_code ec;
  for (auto it = stdfs::recursive_directory_iterator(root, ec);
       !ec && it != stdfs::recursive_directory_iterator(); it.increment(ec)) {
    const std::string p = it->path().string();
    struct stat st;
    if (lstat(p.c_str(), &st) != 0) continue;
    std::string v = std::to_string(st.st_mode) + " " + std::to_string(st.st_size) + " " +
                    std::to_string(st.st_mtim.tv_sec) + "." + std::to_string(st.st_mtim.tv_nsec);
    // Appended piece by piece, not `v += " " + ...`: GCC 12 at -O3 reports a
    // false -Wrestrict in that operator+ (GCC bug 105329).
    if (S_ISLNK(st.st_mode)) v.append(" -> ").append(stdfs::read_symlink(p, ec).string());
    if (S_ISREG(st.st_mode)) v.append(" ").append(test::ReadFile(p));
    out[p.substr(root.size())] = v;
  }
  struct stat st;
  if (lstat(root.c_str(), &st) == 0) {
    out["."] = std::to_string(st.st_mode) + " " + std::to_string(st.st_mtim.tv_sec) + "." +
               std::to_string(st.st_mtim.tv_nsec);
  }
  return out;
}

std::vector<std::string> Names(const std::string& dir) {
  std::vector<std::string> out;
  for (const auto& e : stdfs::directory_iterator(dir)) out.push_back(e.path().filename().string());
  std::sort(out.begin(), out.end());
  return out;
}

class ExtractSafetyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (access(CliPath().c_str(), X_OK) != 0) GTEST_SKIP() << "no CLI at " << CliPath();
    sentinel_ = dir_.Join("sentinel");
    ASSERT_EQ(mkdir(sentinel_.c_str(), 0755), 0);
    test::WriteFile(sentinel_ + "/canary", "untouched\n");
    ASSERT_EQ(mkdir((sentinel_ + "/inner").c_str(), 0755), 0);
    const std::string src = dir_.Join("src");
    ASSERT_EQ(mkdir(src.c_str(), 0755), 0);
    ASSERT_EQ(symlink(sentinel_.c_str(), (src + "/evil").c_str()), 0);
    ASSERT_EQ(mkdir((src + "/evil2").c_str(), 0755), 0);
    test::WriteFile(src + "/evil2/x", "written through the symlink?\n");
    ASSERT_EQ(mkdir((src + "/evil2/inner").c_str(), 0755), 0);
    test::WriteFile(src + "/evil2/inner/canary", "overwritten?\n");
    test::WriteFile(src + "/ok.txt", "fine\n");
    test::WriteFile(src + "/hard", "two names\n");
    ASSERT_EQ(mkdir((src + "/d").c_str(), 0755), 0);
    ASSERT_EQ(link((src + "/hard").c_str(), (src + "/d/hardlink").c_str()), 0);
    auto b = BuildBase(dir_.Join("w"), 12, src);
    ASSERT_TRUE(b.ok()) << b.status().ToString();
    base_ = std::make_unique<Base>(std::move(*b));
  }

  // Extracts `image` into dir/dest_N, checks that nothing outside changed.
  // Returns the exit code.
  int Extract(const Bytes& image, bool* dest_exists) {
    const std::string img = dir_.Join("img" + std::to_string(n_) + ".cryptex");
    const std::string dest = dir_.Join("out" + std::to_string(n_));
    ++n_;
    EXPECT_TRUE(surgery::WriteAll(img, image).ok());
    const auto before = Snapshot(sentinel_);
    auto names_before = Names(dir_.path());
    const auto start = std::chrono::steady_clock::now();
    const test::CommandResult r =
        test::RunCommand("timeout -s KILL 60 " + test::ShellQuote(CliPath()) + " extract " +
                         test::ShellQuote(img) + " " + test::ShellQuote(dest) + " --trust " +
                         test::ShellQuote(base_->key.trust_dir) + " 2>&1");
    const double secs =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    EXPECT_LT(secs, 30.0) << "extract took too long";
    EXPECT_NE(r.exit_code, 128 + 9) << "extract hung (killed by timeout)";
    EXPECT_LT(r.exit_code, 128) << "extract crashed: " << r.out;
    last_output_ = r.out;
    EXPECT_EQ(Snapshot(sentinel_), before) << "the sentinel outside DEST changed!\n" << r.out;
    *dest_exists = access(dest.c_str(), F_OK) == 0;
    // Nothing else appeared next to DEST (no leftover temporary).
    auto names_after = Names(dir_.path());
    if (*dest_exists) names_before.push_back(stdfs::path(dest).filename().string());
    std::sort(names_before.begin(), names_before.end());
    EXPECT_EQ(names_after, names_before) << r.out;
    if (*dest_exists) {
      // Whatever was extracted stays inside DEST: no symlink was followed
      // while writing (evil is a symlink, not a directory).
      struct stat st;
      if (lstat((dest + "/evil").c_str(), &st) == 0) {
        EXPECT_TRUE(S_ISLNK(st.st_mode));
      }
    }
    return r.exit_code;
  }

  void ExpectRefused(const cryptex::Result<Bytes>& image, const std::string& expect) {
    ASSERT_TRUE(image.ok()) << image.status().ToString();
    bool exists = true;
    const int code = Extract(*image, &exists);
    EXPECT_EQ(code, 3) << "expected an integrity failure (exit 3):\n" << last_output_;
    EXPECT_FALSE(exists) << "DEST left behind after a refused extraction";
    EXPECT_NE(last_output_.find(expect), std::string::npos) << "expected \"" << expect << "\" in:\n"
                                                            << last_output_;
  }

  cryptex::Result<Bytes> EditTables(const std::function<Status(Tables&)>& fn) {
    CX_ASSIGN_OR_RETURN(Tables t, surgery::ReadTables(base_->bytes));
    CX_RETURN_IF_ERROR(fn(t));
    return surgery::Rebuild(base_->bytes, t, base_->key.key);
  }

  cryptex::Result<Bytes> RenameEntry(const std::string& path, const std::string& name) {
    return EditTables([&](Tables& t) -> Status {
      auto k = t.FindDirent(path);
      if (!k) return Status::Internal("no " + path);
      t.dirents[*k].name_offset.set(t.AddString(name));
      t.dirents[*k].name_len.set(static_cast<uint16_t>(name.size()));
      return Status::Ok();
    });
  }

  cryptex::Result<Bytes> PointAtDir(const std::string& path, const std::string& target) {
    return EditTables([&](Tables& t) -> Status {
      auto k = t.FindDirent(path);
      auto ino = t.FindInode(target);
      if (!k || !ino) return Status::Internal("no " + path + " or " + target);
      t.dirents[*k].inode.set(*ino);
      t.dirents[*k].type = format::kTypeDirectory;
      return Status::Ok();
    });
  }

  test::TempDir dir_;
  std::string sentinel_;
  std::unique_ptr<Base> base_;
  std::string last_output_;
  int n_ = 0;
};

TEST_F(ExtractSafetyTest, LegitImageExtractsAndFollowsNothing) {
  bool exists = false;
  EXPECT_EQ(Extract(base_->bytes, &exists), 0) << last_output_;
  ASSERT_TRUE(exists);
  const std::string dest = dir_.Join("out0");
  EXPECT_EQ(stdfs::read_symlink(dest + "/evil"), sentinel_);
  EXPECT_EQ(test::ReadFile(dest + "/evil2/x"), "written through the symlink?\n");
}

TEST_F(ExtractSafetyTest, DuplicateNameSymlinkThenDirectory) {
  // "evil" (symlink -> sentinel) followed by "evil" (directory with x and
  // inner/canary): a naive extractor creates the symlink, then writes
  // evil/x and evil/inner/canary through it into the sentinel.
  ExpectRefused(RenameEntry("evil2", "evil"), "entries not sorted or duplicated");
}

TEST_F(ExtractSafetyTest, DuplicateNameDirectoryThenSymlink) {
  ExpectRefused(EditTables([](Tables& t) -> Status {
                  auto sym = t.FindDirent("evil");
                  auto dir = t.FindDirent("evil2");
                  if (!sym || !dir) return Status::Internal("base layout");
                  const uint64_t off = t.AddString("evil");
                  t.dirents[*dir].name_offset.set(off);
                  t.dirents[*dir].name_len.set(4);
                  std::swap(t.dirents[*sym], t.dirents[*dir]);
                  return Status::Ok();
                }),
                "entries not sorted or duplicated");
}

TEST_F(ExtractSafetyTest, FileNamedLikeTheSymlink) {
  ExpectRefused(RenameEntry("ok.txt", "evil"), "entries not sorted or duplicated");
}

TEST_F(ExtractSafetyTest, DotDotDirectory) {
  // A directory named ".." whose children would land next to DEST.
  ExpectRefused(RenameEntry("evil2", ".."), "has an invalid name");
}

TEST_F(ExtractSafetyTest, DotDirectory) {
  ExpectRefused(RenameEntry("evil2", "."), "has an invalid name");
}

TEST_F(ExtractSafetyTest, NameWithSlashes) {
  ExpectRefused(RenameEntry("ok.txt", "../sentinel/owned"), "has an invalid name");
  ExpectRefused(RenameEntry("ok.txt", sentinel_ + "/owned"), "has an invalid name");
}

TEST_F(ExtractSafetyTest, DirectoryCycle) {
  // evil2/inner becomes the root again: a naive extractor recurses forever.
  ExpectRefused(PointAtDir("evil2/inner", ""), "is reachable from two places");
}

TEST_F(ExtractSafetyTest, HardLinkedDirectory) {
  ExpectRefused(PointAtDir("ok.txt", "evil2"), "is reachable from two places");
}

TEST_F(ExtractSafetyTest, DirectoryEntryForTheSymlinkInode) {
  // "evil2" names the symlink's inode but claims to be a directory.
  ExpectRefused(EditTables([](Tables& t) -> Status {
                  auto dir = t.FindDirent("evil2");
                  auto sym = t.FindDirent("evil");
                  if (!dir || !sym) return Status::Internal("base layout");
                  t.dirents[*dir].inode.set(t.dirents[*sym].inode.get());
                  return Status::Ok();
                }),
                "entry type disagrees with inode");
}

TEST_F(ExtractSafetyTest, SecondNameOfTheSymlinkIsJustASymlink) {
  // A correctly typed second entry for the symlink inode: extracted as a
  // second symlink, never followed.
  auto img = EditTables([](Tables& t) -> Status {
    auto dir = t.FindDirent("evil2");
    auto sym = t.FindDirent("evil");
    if (!dir || !sym) return Status::Internal("base layout");
    t.dirents[*dir].inode.set(t.dirents[*sym].inode.get());
    t.dirents[*dir].type = format::kTypeSymlink;
    return Status::Ok();
  });
  ASSERT_TRUE(img.ok());
  bool exists = false;
  const int code = Extract(*img, &exists);
  if (code == 0) {
    EXPECT_EQ(stdfs::read_symlink(dir_.Join("out0/evil2")), sentinel_);
  } else {
    EXPECT_FALSE(exists) << last_output_;
  }
}

TEST_F(ExtractSafetyTest, HardLinkSourcePathCannotBeRedirected) {
  // d/hardlink and hard share an inode; making "d" a second entry for
  // directory evil2 (whose "x" could be replaced) must be refused, not
  // resolved through whatever "d" became.
  ExpectRefused(PointAtDir("d", "evil2"), "is reachable from two places");
}

}  // namespace
}  // namespace cryptex::adversarial
