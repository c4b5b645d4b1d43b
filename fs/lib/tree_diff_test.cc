// DiffTrees on two base images sealed from directories (on a tmpfs: every
// xattr namespace, device nodes; needs root for ownership and mknod): each
// kind of change alone, the order of the result, and hard-link groups.
#include "tree_diff.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "image.h"
#include "test_util.h"
#include "view.h"

namespace cryptex {
namespace {

using test::TempDir;
using test::WriteFile;
namespace fs = std::filesystem;

constexpr int64_t kTime = 1700000000;

// Every entry of `dir` (the root included) gets mtime kTime.0, so only what
// a test changes afterwards differs between two trees.
void FixTimes(const std::string& dir) {
  struct timespec ts[2] = {{kTime, 0}, {kTime, 0}};
  for (const auto& e : fs::recursive_directory_iterator(dir)) {
    ASSERT_EQ(utimensat(AT_FDCWD, e.path().c_str(), ts, AT_SYMLINK_NOFOLLOW), 0) << e.path();
  }
  ASSERT_EQ(utimensat(AT_FDCWD, dir.c_str(), ts, AT_SYMLINK_NOFOLLOW), 0);
}

void Mkdir(const std::string& p) { ASSERT_EQ(mkdir(p.c_str(), 0755), 0) << p; }

// Seals `dir` and opens it as a View.
std::unique_ptr<View> SealView(const std::string& dir, const std::string& image) {
  auto trust = test::SealForTest(dir, image);
  EXPECT_TRUE(trust.ok()) << trust.status().ToString();
  if (!trust.ok()) return nullptr;
  ImageOptions opts;
  opts.trust = trust->get();
  auto img = Image::Open(image, opts);
  EXPECT_TRUE(img.ok()) << img.status().ToString();
  if (!img.ok()) return nullptr;
  auto view = OpenImageView(std::move(*img));
  EXPECT_TRUE(view.ok()) << view.status().ToString();
  return view.ok() ? std::move(*view) : nullptr;
}

// Two trees: `common` made in both, then `edit` applied to the new one, then
// every mtime fixed, then `touch` applied to the new one (for mtime
// changes). Returns DiffTrees(old, new).
std::vector<TreeChange> DiffOf(const std::function<void(const std::string&)>& common,
                               const std::function<void(const std::string&)>& edit,
                               const std::function<void(const std::string&)>& touch = {}) {
  TempDir tmp(test::TmpfsDir());
  const std::string a = tmp.Join("a"), b = tmp.Join("b");
  Mkdir(a);
  Mkdir(b);
  common(a);
  common(b);
  edit(b);
  FixTimes(a);
  FixTimes(b);
  if (touch) touch(b);
  auto va = SealView(a, tmp.Join("a.img"));
  auto vb = SealView(b, tmp.Join("b.img"));
  if (!va || !vb) return {};
  auto d = DiffTrees(*va, *vb);
  EXPECT_TRUE(d.ok()) << d.status().ToString();
  return d.ok() ? *d : std::vector<TreeChange>{};
}

// "+ /p", "- /p", "M /p" lines, to compare whole results at a glance.
std::vector<std::string> Summary(const std::vector<TreeChange>& changes) {
  std::vector<std::string> out;
  for (const auto& c : changes) {
    const char* k = c.kind == TreeChange::Kind::kAdded     ? "+ "
                    : c.kind == TreeChange::Kind::kRemoved ? "- "
                                                           : "M ";
    out.push_back(k + c.path);
  }
  return out;
}

void Base(const std::string& d) {
  WriteFile(d + "/f", "hello");
  Mkdir(d + "/dir");
  WriteFile(d + "/dir/x", "x");
  ASSERT_EQ(symlink("target", (d + "/link").c_str()), 0);
}

std::vector<std::string> V(std::initializer_list<std::string> l) { return l; }

TEST(TreeDiff, IdenticalTreesHaveNoDifferences) {
  auto d = DiffOf(Base, [](const std::string&) {});
  EXPECT_TRUE(d.empty()) << testing::PrintToString(Summary(d));
}

TEST(TreeDiff, ContentOnlySameSize) {
  auto d = DiffOf(Base, [](const std::string& b) { WriteFile(b + "/f", "HELLO"); });
  ASSERT_EQ(Summary(d), V({"M /f"}));
  EXPECT_EQ(d[0].what, kChangeContent);
  EXPECT_NE(d[0].old_info.digest, d[0].new_info.digest);
}

TEST(TreeDiff, ModeOnly) {
  auto d =
      DiffOf(Base, [](const std::string& b) { ASSERT_EQ(chmod((b + "/f").c_str(), 04711), 0); });
  ASSERT_EQ(Summary(d), V({"M /f"}));
  EXPECT_EQ(d[0].what, kChangeMode);
  EXPECT_EQ(d[0].old_info.mode & 07777, 0644u);
  EXPECT_EQ(d[0].new_info.mode & 07777, 04711u);
}

TEST(TreeDiff, OwnerOnly) {
  auto d = DiffOf(
      Base, [](const std::string& b) { ASSERT_EQ(lchown((b + "/link").c_str(), 1234, 5678), 0); });
  ASSERT_EQ(Summary(d), V({"M /link"}));
  EXPECT_EQ(d[0].what, kChangeOwner);
  EXPECT_EQ(d[0].new_info.uid, 1234u);
  EXPECT_EQ(d[0].new_info.gid, 5678u);
}

TEST(TreeDiff, XattrsAddedRemovedChanged) {
  auto common = [](const std::string& d) {
    Base(d);
    ASSERT_EQ(setxattr((d + "/dir").c_str(), "user.keep", "1", 1, 0), 0);
    ASSERT_EQ(setxattr((d + "/dir").c_str(), "user.gone", "1", 1, 0), 0);
    ASSERT_EQ(setxattr((d + "/dir").c_str(), "trusted.val", "1", 1, 0), 0);
  };
  auto d = DiffOf(common, [](const std::string& b) {
    ASSERT_EQ(removexattr((b + "/dir").c_str(), "user.gone"), 0);
    ASSERT_EQ(setxattr((b + "/dir").c_str(), "user.new", "", 0, 0), 0);
    ASSERT_EQ(setxattr((b + "/dir").c_str(), "trusted.val", "2", 1, 0), 0);
  });
  ASSERT_EQ(Summary(d), V({"M /dir"}));
  EXPECT_EQ(d[0].what, kChangeXattrs);
  EXPECT_EQ(d[0].xattrs_added, V({"user.new"}));
  EXPECT_EQ(d[0].xattrs_removed, V({"user.gone"}));
  EXPECT_EQ(d[0].xattrs_changed, V({"trusted.val"}));
}

TEST(TreeDiff, MtimeOnlyToTheNanosecond) {
  auto d = DiffOf(
      Base, [](const std::string&) {},
      [](const std::string& b) {
        struct timespec ts[2] = {{kTime, 1}, {kTime, 1}};
        ASSERT_EQ(utimensat(AT_FDCWD, (b + "/dir/x").c_str(), ts, 0), 0);
      });
  ASSERT_EQ(Summary(d), V({"M /dir/x"}));
  EXPECT_EQ(d[0].what, kChangeMtime);
  EXPECT_EQ(d[0].new_info.mtime_nsec, 1u);
}

TEST(TreeDiff, SymlinkTarget) {
  auto d = DiffOf(Base, [](const std::string& b) {
    ASSERT_EQ(unlink((b + "/link").c_str()), 0);
    ASSERT_EQ(symlink("other\ntarget", (b + "/link").c_str()), 0);
  });
  ASSERT_EQ(Summary(d), V({"M /link"}));
  EXPECT_EQ(d[0].what, kChangeTarget);
  EXPECT_EQ(d[0].old_target, "target");
  EXPECT_EQ(d[0].new_target, "other\ntarget");
}

TEST(TreeDiff, DeviceNumber) {
  auto common = [](const std::string& d) {
    ASSERT_EQ(mknod((d + "/null").c_str(), S_IFCHR | 0600, makedev(1, 3)), 0);
  };
  auto d = DiffOf(common, [](const std::string& b) {
    ASSERT_EQ(unlink((b + "/null").c_str()), 0);
    ASSERT_EQ(mknod((b + "/null").c_str(), S_IFCHR | 0600, makedev(1, 5)), 0);
  });
  ASSERT_EQ(Summary(d), V({"M /null"}));
  EXPECT_EQ(d[0].what, kChangeRdev);
  EXPECT_EQ(d[0].new_info.rdev, makedev(1, 5));
}

// A type change is reported alone; what the old directory held is removed
// and what the new one holds is added, below it.
TEST(TreeDiff, FileBecomesDirectoryAndBack) {
  auto d = DiffOf(Base, [](const std::string& b) {
    ASSERT_EQ(unlink((b + "/f").c_str()), 0);
    Mkdir(b + "/f");
    WriteFile(b + "/f/inner", "i");
    fs::remove_all(b + "/dir");
    WriteFile(b + "/dir", "now a file");
    ASSERT_EQ(chmod((b + "/dir").c_str(), 0600), 0);
  });
  ASSERT_EQ(Summary(d), V({"M /dir", "- /dir/x", "M /f", "+ /f/inner"}));
  EXPECT_EQ(d[0].what, kChangeType);
  EXPECT_TRUE(S_ISDIR(d[0].old_info.mode));
  EXPECT_TRUE(S_ISREG(d[0].new_info.mode));
  EXPECT_EQ(d[2].what, kChangeType);
  EXPECT_EQ(std::string(FileTypeName(d[2].old_info.mode)), "file");
  EXPECT_EQ(std::string(FileTypeName(d[2].new_info.mode)), "dir");
}

TEST(TreeDiff, AddedAndRemovedDirectoriesListEverythingBelow) {
  auto common = [](const std::string& d) {
    Base(d);
    Mkdir(d + "/old");
    Mkdir(d + "/old/sub");
    WriteFile(d + "/old/sub/a", "a");
    WriteFile(d + "/old/b", "b");
  };
  auto d = DiffOf(common, [](const std::string& b) {
    fs::remove_all(b + "/old");
    Mkdir(b + "/new");
    Mkdir(b + "/new/empty");
    ASSERT_EQ(symlink("x", (b + "/new/s").c_str()), 0);
  });
  EXPECT_EQ(Summary(d), V({"+ /new", "+ /new/empty", "+ /new/s", "- /old", "- /old/b", "- /old/sub",
                           "- /old/sub/a"}));
  EXPECT_TRUE(S_ISLNK(d[2].new_info.mode));
  EXPECT_TRUE(S_ISDIR(d[5].old_info.mode));
}

// Tree order: a directory's entries come right after it, whatever bytes the
// names hold ("a-x" sorts before "a/b" as a string, but comes after "a"'s
// entries), and names compare as unsigned bytes (0xff last).
TEST(TreeDiff, TreeOrderAndAnyBytes) {
  auto d = DiffOf([](const std::string&) {},
                  [](const std::string& b) {
                    Mkdir(b + "/a");
                    WriteFile(b + "/a/b", "");
                    WriteFile(b + "/a-x", "");
                    WriteFile(b + "/\xff", "");
                    WriteFile(b + "/new\nline", "");
                    WriteFile(b + "/\x01", "");
                  });
  EXPECT_EQ(Summary(d), V({"+ /\x01", "+ /a", "+ /a/b", "+ /a-x", "+ /new\nline", "+ /\xff"}));
}

TEST(TreeDiff, RootAttributes) {
  auto d = DiffOf(Base, [](const std::string& b) { ASSERT_EQ(chmod(b.c_str(), 0700), 0); });
  ASSERT_EQ(Summary(d), V({"M /"}));
  EXPECT_EQ(d[0].what, kChangeMode);
}

TEST(TreeDiff, HardLinkGroupSplit) {
  auto common = [](const std::string& d) {
    Base(d);
    WriteFile(d + "/l1", "same");
    ASSERT_EQ(link((d + "/l1").c_str(), (d + "/dir/l2").c_str()), 0);
  };
  auto d = DiffOf(common, [](const std::string& b) {
    ASSERT_EQ(unlink((b + "/dir/l2").c_str()), 0);
    WriteFile(b + "/dir/l2", "same");
  });
  ASSERT_EQ(Summary(d), V({"M /dir/l2", "M /l1"}));
  for (const auto& c : d) {
    EXPECT_EQ(c.what, kChangeLinks) << c.path;
    EXPECT_EQ(c.old_links, V({"/dir/l2", "/l1"})) << c.path;
    EXPECT_EQ(c.new_links, V({c.path})) << c.path;
  }
}

TEST(TreeDiff, HardLinkGroupJoinedWithOtherChanges) {
  auto common = [](const std::string& d) {
    Base(d);
    WriteFile(d + "/l1", "one");
    WriteFile(d + "/l2", "two");
  };
  auto d = DiffOf(common, [](const std::string& b) {
    ASSERT_EQ(unlink((b + "/l2").c_str()), 0);
    ASSERT_EQ(link((b + "/l1").c_str(), (b + "/l2").c_str()), 0);
  });
  ASSERT_EQ(Summary(d), V({"M /l1", "M /l2"}));
  EXPECT_EQ(d[0].what, kChangeLinks);
  EXPECT_EQ(d[1].what, kChangeContent | kChangeLinks);
  EXPECT_EQ(d[1].old_links, V({"/l2"}));
  EXPECT_EQ(d[1].new_links, V({"/l1", "/l2"}));
}

TEST(TreeDiff, UnchangedHardLinkGroupIsNotReported) {
  auto common = [](const std::string& d) {
    Base(d);
    WriteFile(d + "/l1", "same");
    ASSERT_EQ(link((d + "/l1").c_str(), (d + "/dir/l2").c_str()), 0);
  };
  auto d = DiffOf(common, [](const std::string& b) { WriteFile(b + "/g", "new"); });
  EXPECT_EQ(Summary(d), V({"+ /g"}));
}

// A name added to a group: the new name is added, and the names the group
// had are reported with their new group.
TEST(TreeDiff, HardLinkGroupGrows) {
  auto common = [](const std::string& d) {
    Base(d);
    WriteFile(d + "/l1", "same");
  };
  auto d = DiffOf(common, [](const std::string& b) {
    ASSERT_EQ(link((b + "/l1").c_str(), (b + "/l3").c_str()), 0);
  });
  ASSERT_EQ(Summary(d), V({"M /l1", "+ /l3"}));
  EXPECT_EQ(d[0].what, kChangeLinks);
  EXPECT_EQ(d[0].new_links, V({"/l1", "/l3"}));
}

}  // namespace
}  // namespace cryptex
