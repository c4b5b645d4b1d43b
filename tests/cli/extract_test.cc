// `cryptex extract` where it is hard: as an unprivileged user (setpriv to
// nobody) with read-only, 0600 and 0000 directories in the image, out of
// space on a small tmpfs mounted here, under `ulimit -n`, at and beyond
// format::kMaxDirDepth, with SIGTERM/SIGINT in the middle of a large file,
// and with bad arguments. After every failure the destination's parent holds
// exactly what it held before: neither DIR nor DIR.tmp-*.
//
// Needs root (mount, setpriv); skipped otherwise. Deep images are made from
// a small built image by adding directory levels and re-sealing
// (tests/adversarial/surgery.h), so that they can be deeper than the builder
// allows.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "exit_codes.h"
#include "format.h"
#include "gen.h"
#include "surgery.h"
#include "test_util.h"

namespace cryptex {
namespace {

using namespace cli;  // kExit*: the codes users see

using adversarial::Base;
using adversarial::BuildBase;
using surgery::Bytes;
using test::CommandResult;
using test::Contains;
using test::ListDirNames;
using test::ShellQuote;
using test::TempDir;

constexpr uid_t kNobody = 65534;

std::string Q(const std::string& s) { return ShellQuote(s); }

// `cmd` run as nobody:nogroup with no supplementary groups.
std::string AsNobody(const std::string& cmd) {
  return "setpriv --reuid=65534 --regid=65534 --clear-groups " + cmd;
}

bool Root() { return geteuid() == 0 && access("/usr/bin/setpriv", X_OK) == 0; }

// Makes `path` reachable and readable by everyone (work directories are 0700).
void OpenUp(const std::string& path) {
  struct stat st;
  ASSERT_EQ(stat(path.c_str(), &st), 0) << path;
  ASSERT_EQ(chmod(path.c_str(), S_ISDIR(st.st_mode) ? 0755 : 0644), 0) << path;
}

// The cryptex binary where nobody can run it: the build tree may sit under
// a 0700 home (/root/project/build), so a copy in a directory everyone can
// reach, made once per test binary.
const std::string& CryptexForAll() {
  static const TempDir dir;
  static const std::string bin = [] {
    OpenUp(dir.path());
    const std::string to = dir.Join("cryptex");
    std::filesystem::copy_file(test::CryptexBin(), to);
    chmod(to.c_str(), 0755);
    return to;
  }();
  return bin;
}

// A directory owned by nobody, for nobody to extract into.
std::string NobodysDir(const TempDir& work, const std::string& name) {
  const std::string d = work.Join(name);
  EXPECT_EQ(mkdir(d.c_str(), 0755), 0);
  EXPECT_EQ(chown(d.c_str(), kNobody, kNobody), 0);
  return d;
}

// Writes `bytes` to `path`, readable by everyone.
std::string WriteImage(const std::string& path, const Bytes& bytes) {
  EXPECT_TRUE(surgery::WriteAll(path, bytes).ok());
  chmod(path.c_str(), 0644);
  return path;
}

// A tmpfs of `size` mounted on a fresh directory, owned by nobody;
// unmounted when the object goes.
class Tmpfs final {
 public:
  Tmpfs(const std::string& path, const std::string& size) : path_(path) {
    EXPECT_EQ(mkdir(path.c_str(), 0755), 0);
    const std::string opts = "size=" + size + ",mode=0755,uid=65534,gid=65534";
    mounted_ = mount("tmpfs", path.c_str(), "tmpfs", 0, opts.c_str()) == 0;
    EXPECT_TRUE(mounted_) << "mount tmpfs on " << path << ": " << std::strerror(errno);
  }
  ~Tmpfs() {
    if (mounted_) {
      EXPECT_EQ(umount(path_.c_str()), 0) << std::strerror(errno);
    }
  }
  Tmpfs(const Tmpfs&) = delete;
  Tmpfs& operator=(const Tmpfs&) = delete;
  bool mounted() const { return mounted_; }

 private:
  std::string path_;
  bool mounted_ = false;
};

// A base image (built by the library's builder from `src`) with a test key,
// and everything a non-root extract needs made readable.
Result<Base> MakeBase(const TempDir& work, const std::string& src, const std::string& name) {
  OpenUp(work.path());
  auto b = BuildBase(work.Join(name), 17, src);
  if (!b.ok()) return b.status();
  OpenUp(b->dir);
  OpenUp(b->key.trust_dir);
  OpenUp(b->key.trust_dir + "/test.key.pub");
  OpenUp(b->image);
  return std::move(*b);
}

// `cryptex extract IMAGE DEST --trust ...` through bash, after
// `shell_prefix` (e.g. "ulimit -n 1024; "), as nobody if asked.
CommandResult Extract(const Base& b, const std::string& image, const std::string& dest,
                      bool as_nobody, const std::string& shell_prefix = "") {
  std::string cmd = Q(CryptexForAll()) + " extract " + Q(image) + " " + Q(dest) + " --trust " +
                    Q(b.key.trust_dir);
  cmd = "timeout -s KILL 120 bash -c " + Q(shell_prefix + "exec " + cmd);
  return test::RunCommandCapture(as_nobody ? AsNobody(cmd) : cmd);
}

// Opens `dir` and then `depth` levels of "a" below it; -1 on failure.
int OpenChain(const std::string& dir, int depth) {
  int fd = open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  for (int i = 0; i < depth && fd >= 0; ++i) {
    const int next = openat(fd, "a", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    close(fd);
    fd = next;
  }
  return fd;
}

// `base` with directory `dir_path` pushed `extra` levels down: it gets one
// entry, "a", a new directory, which gets one entry "a", ..., and the
// innermost new directory gets `dir_path`'s entries. With `link`, every new
// level but the innermost also gets "z", another name of dir_path/link.
// Re-sealed with the base's key: a valid image of any depth, whatever the
// builder allows.
Result<Bytes> Deepen(const Base& b, const std::string& dir_path, int extra,
                     const std::string& link = "") {
  CX_ASSIGN_OR_RETURN(surgery::Tables t, surgery::ReadTables(b.bytes));
  const auto top = t.FindInode(dir_path);
  if (!top) return Status::Internal("no directory " + dir_path);
  const format::DiskInode proto = t.Inode(*top);
  const uint64_t name = t.AddString("a");
  const uint64_t z = t.AddString("z");
  std::optional<uint32_t> linked;
  if (!link.empty()) {
    linked = t.FindInode(dir_path + "/" + link);
    if (!linked) return Status::Internal("no " + link);
  }
  uint32_t parent = *top;
  for (int i = 0; i < extra; ++i) {
    format::DiskInode child = proto;
    t.inodes.push_back(child);
    const auto child_ino = static_cast<uint32_t>(t.inodes.size());
    format::DiskDirent d{};
    d.name_offset.set(name);
    d.inode.set(child_ino);
    d.name_len.set(1);
    d.type = format::kTypeDirectory;
    t.dirents.push_back(d);
    uint32_t entries = 1;
    if (linked && i > 0) {
      format::DiskDirent l{};
      l.name_offset.set(z);
      l.inode.set(*linked);
      l.name_len.set(1);
      l.type = format::kTypeRegular;
      t.dirents.push_back(l);
      format::DiskInode& f = t.Inode(*linked);
      f.nlink.set(f.nlink.get() + 1);
      entries = 2;
    }
    format::DiskInode& p = t.Inode(parent);
    p.payload.set(t.dirents.size() - entries);
    p.payload_count.set(entries);
    p.size.set(entries);
    p.nlink.set(3);
    parent = child_ino;
  }
  // The innermost directory, a copy of proto, has the original entries:
  // no entry is left belonging to no directory.
  return surgery::Rebuild(b.bytes, t, b.key.key);
}

class ExtractTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!Root()) GTEST_SKIP() << "needs root and setpriv";
    OpenUp(work_.path());
  }

  // A source tree for a deep image: a/leaf ("deep"), top ("top") and its
  // second name a/top-link; with `extra` levels, a/leaf is at depth extra+1.
  Result<Base> DeepBase() {
    const std::string src = work_.Join("deep-src");
    EXPECT_EQ(mkdir(src.c_str(), 0755), 0);
    EXPECT_EQ(mkdir((src + "/a").c_str(), 0755), 0);
    test::WriteFile(src + "/a/leaf", "deep");
    test::WriteFile(src + "/top", "top");
    EXPECT_EQ(link((src + "/top").c_str(), (src + "/a/top-link").c_str()), 0);
    return MakeBase(work_, src, "deep");
  }

  std::string DeepImage(const Base& b, int depth, const std::string& link = "") {
    auto img = Deepen(b, "a", depth - 1, link);
    EXPECT_TRUE(img.ok()) << img.status().ToString();
    return WriteImage(work_.Join("deep" + std::to_string(depth) + ".cryptex"),
                      img.ok() ? *img : Bytes{});
  }

  TempDir work_{test::TmpfsDir()};  // fast for thousands of directories
};

// Checks the chain extracted at `dest`: `depth` levels of "a", the leaf and
// the hard link to /top at the bottom.
void ExpectChain(const std::string& dest, int depth) {
  const int fd = OpenChain(dest, depth);
  ASSERT_GE(fd, 0) << "chain of " << depth << " not extracted";
  char buf[8] = {};
  const int leaf = openat(fd, "leaf", O_RDONLY | O_CLOEXEC);
  EXPECT_EQ(read(leaf, buf, sizeof buf), 4);
  EXPECT_STREQ(buf, "deep");
  close(leaf);
  struct stat link_st, top_st;
  EXPECT_EQ(fstatat(fd, "top-link", &link_st, AT_SYMLINK_NOFOLLOW), 0);
  EXPECT_EQ(lstat((dest + "/top").c_str(), &top_st), 0);
  EXPECT_EQ(link_st.st_ino, top_st.st_ino);
  EXPECT_EQ(top_st.st_nlink, 2u);
  EXPECT_EQ(openat(fd, "a", O_RDONLY | O_DIRECTORY | O_CLOEXEC), -1) << "deeper than expected";
  close(fd);
}

// ---- item 7: one depth limit, format::kMaxDirDepth ---------------------------------

TEST_F(ExtractTest, ExactlyMaxDirDepthExtractsWithFewDescriptors) {
  auto made = DeepBase();
  ASSERT_TRUE(made.ok()) << made.status().ToString();
  const Base& b = *made;
  const std::string img = DeepImage(b, format::kMaxDirDepth);
  const std::string parent = NobodysDir(work_, "out");
  const std::string dest = parent + "/x";
  // 32 descriptors in all: the walk keeps a bounded number open.
  // A valid image: verify accepts it, so extract must too.
  const CommandResult v = test::RunCommandCapture(Q(CryptexForAll()) + " verify " + Q(img) +
                                                  " --trust " + Q(b.key.trust_dir));
  EXPECT_EQ(v.exit_code, 0) << v.err.substr(0, 500);
  const CommandResult r = Extract(b, img, dest, /*as_nobody=*/true, "ulimit -n 32; ");
  ASSERT_EQ(r.exit_code, 0) << r.err.substr(0, 500);
  EXPECT_EQ(r.err.find("corrupt"), std::string::npos) << r.err.substr(0, 500);
  ExpectChain(dest, static_cast<int>(format::kMaxDirDepth));
  EXPECT_EQ(ListDirNames(parent), std::vector<std::string>{"x"});
}

TEST_F(ExtractTest, DeeperThanMaxDirDepthIsUnsupportedNotCorrupt) {
  auto made = DeepBase();
  ASSERT_TRUE(made.ok()) << made.status().ToString();
  const Base& b = *made;
  const std::string img = DeepImage(b, format::kMaxDirDepth + 1);
  const std::string parent = NobodysDir(work_, "out");
  const CommandResult r = Extract(b, img, parent + "/x", /*as_nobody=*/true);
  EXPECT_EQ(r.exit_code, kExitUnsupported) << r.err.substr(0, 500);
  EXPECT_EQ(r.err.find("corrupt"), std::string::npos) << r.err.substr(0, 500);
  EXPECT_TRUE(Contains(r.err, "depth " + std::to_string(format::kMaxDirDepth + 1)))
      << r.err.substr(0, 500);
  EXPECT_TRUE(Contains(r.err, std::to_string(format::kMaxDirDepth))) << r.err.substr(0, 500);
  // One readable line, not an 8 KB path.
  EXPECT_LT(r.err.size(), 500u) << r.err.substr(0, 500);
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err.substr(0, 500);
  EXPECT_EQ(ListDirNames(parent), std::vector<std::string>{});
  // verify agrees: unsupported (exit 4), not corrupt, on one short line.
  const CommandResult v = test::RunCommandCapture(Q(CryptexForAll()) + " verify " + Q(img) +
                                                  " --trust " + Q(b.key.trust_dir));
  EXPECT_EQ(v.exit_code, kExitUnsupported) << v.err.substr(0, 500);
  EXPECT_TRUE(Contains(v.err, "depth " + std::to_string(format::kMaxDirDepth + 1)))
      << v.err.substr(0, 500);
  EXPECT_LT(v.err.size(), 500u) << v.err.substr(0, 500);
}

// The walks cost O(1) system calls per level: a quadratic walk (re-resolving
// each directory from the root) would make millions for 4096 levels. Every
// level but the first and last also holds "z", another name of the
// innermost "leaf", made after the whole chain below it (entries are
// extracted in name order).
TEST_F(ExtractTest, DeepWalkIsLinear) {
  if (access("/usr/bin/strace", X_OK) != 0) GTEST_SKIP() << "no strace";
  auto made = DeepBase();
  ASSERT_TRUE(made.ok()) << made.status().ToString();
  const Base& b = *made;
  const std::string img = DeepImage(b, format::kMaxDirDepth, "leaf");
  const std::string out = work_.Join("out");
  ASSERT_EQ(mkdir(out.c_str(), 0755), 0);
  const std::string counts = work_.Join("strace.txt");
  // LeakSanitizer cannot run under ptrace: off for this one run (a no-op
  // without ASan; the other tests check leaks).
  const CommandResult r = test::RunCommandCapture(
      "ASAN_OPTIONS=\"${ASAN_OPTIONS:-}:detect_leaks=0\" timeout -s KILL 120 strace -f -c -o " +
      Q(counts) + " " + Q(CryptexForAll()) + " extract " + Q(img) + " " + Q(out + "/x") +
      " --trust " + Q(b.key.trust_dir));
  ASSERT_EQ(r.exit_code, 0) << r.err.substr(0, 500);
  // The "total" line of strace -c: "100.00 secs usecs/call CALLS [ERRORS] total".
  std::ifstream in(counts);
  uint64_t calls = 0;
  for (std::string line; std::getline(in, line);) {
    std::istringstream words(line);
    std::vector<std::string> w;
    for (std::string x; words >> x;) w.push_back(x);
    if (!w.empty() && w.back() == "total" && w.size() >= 4) calls = std::stoull(w[3]);
  }
  ASSERT_GT(calls, 0u) << test::ReadFile(counts);
  struct stat z, leaf;
  ASSERT_EQ(lstat((out + "/x/a/a/z").c_str(), &z), 0);
  const int fd = OpenChain(out + "/x", format::kMaxDirDepth);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(fstatat(fd, "leaf", &leaf, AT_SYMLINK_NOFOLLOW), 0);
  close(fd);
  EXPECT_EQ(z.st_ino, leaf.st_ino);
  EXPECT_EQ(leaf.st_nlink, format::kMaxDirDepth - 1);  // "leaf" and 4094 "z"
  EXPECT_LT(calls, 40u * format::kMaxDirDepth) << test::ReadFile(counts);
  std::printf("%llu system calls for %u levels\n", static_cast<unsigned long long>(calls),
              format::kMaxDirDepth);
}

// ---- item 4c: deeper than the descriptor limit --------------------------------------

TEST_F(ExtractTest, ChainDeeperThanTheDescriptorLimit) {
  auto made = DeepBase();
  ASSERT_TRUE(made.ok()) << made.status().ToString();
  const Base& b = *made;
  const int depth = 1500;
  const std::string img = DeepImage(b, depth);
  const std::string parent = NobodysDir(work_, "out");
  CommandResult r = Extract(b, img, parent + "/x", /*as_nobody=*/true, "ulimit -n 1024; ");
  EXPECT_EQ(r.exit_code, 0) << r.err.substr(0, 500);
  if (r.exit_code == 0) ExpectChain(parent + "/x", depth);

  // The same image with the leaf's signed digest changed: the extraction
  // fails at the bottom of the chain, and all 1500 directories are removed.
  auto bad = [&]() -> Result<Bytes> {
    CX_ASSIGN_OR_RETURN(Bytes deep, surgery::ReadAll(img));
    CX_ASSIGN_OR_RETURN(surgery::Tables t, surgery::ReadTables(deep));
    std::string leaf;
    for (int i = 0; i < depth; ++i) leaf += "a/";
    const auto ino = t.FindInode(leaf + "leaf");
    if (!ino) return Status::Internal("no leaf");
    t.Inode(*ino).digest[0] ^= 1;
    return surgery::Rebuild(deep, t, b.key.key);
  }();
  ASSERT_TRUE(bad.ok()) << bad.status().ToString();
  const std::string bad_img = WriteImage(work_.Join("bad.cryptex"), *bad);
  const std::string parent2 = NobodysDir(work_, "out2");
  r = Extract(b, bad_img, parent2 + "/x", /*as_nobody=*/true, "ulimit -n 1024; ");
  EXPECT_EQ(r.exit_code, kExitIntegrity) << r.err.substr(0, 500);
  EXPECT_TRUE(Contains(r.err, "leaf: content does not match")) << r.err.substr(0, 500);
  EXPECT_EQ(ListDirNames(parent2), std::vector<std::string>{}) << r.err.substr(0, 500);
}

// ---- items 4a/4b: unprivileged, with the image's restrictive modes ------------------

// A directory of the image that takes away its owner's write permission
// (0555) must not make the partial extraction undeletable when the disk
// fills up later.
TEST_F(ExtractTest, OutOfSpaceAfterAReadOnlyDirectoryLeavesNothing) {
  const std::string src = work_.Join("src");
  ASSERT_EQ(mkdir(src.c_str(), 0755), 0);
  ASSERT_EQ(mkdir((src + "/a-ro").c_str(), 0755), 0);
  test::WriteFile(src + "/a-ro/f", "in a read-only directory");
  ASSERT_EQ(mkdir((src + "/a-ro/inner").c_str(), 0755), 0);
  test::WriteFile(src + "/a-ro/inner/g", "deeper");
  ASSERT_EQ(mkdir((src + "/a-zero").c_str(), 0755), 0);
  test::WriteFile(src + "/a-zero/f", "in a 0000 directory");
  ASSERT_EQ(chmod((src + "/a-ro/inner").c_str(), 0555), 0);
  ASSERT_EQ(chmod((src + "/a-ro").c_str(), 0555), 0);
  ASSERT_EQ(chmod((src + "/a-zero").c_str(), 0), 0);
  test::WriteFile(src + "/z-big", test::RandomBytes(8 << 20, 1));  // does not fit
  auto made = MakeBase(work_, src, "img");
  ASSERT_TRUE(made.ok()) << made.status().ToString();
  const Base& b = *made;

  Tmpfs small(work_.Join("small"), "4m");
  ASSERT_TRUE(small.mounted());
  const std::string parent = work_.Join("small");
  test::WriteFile(parent + "/mine", "was here before");
  ASSERT_EQ(chown((parent + "/mine").c_str(), kNobody, kNobody), 0);
  const CommandResult r = Extract(b, b.image, parent + "/x", /*as_nobody=*/true);
  EXPECT_EQ(r.exit_code, kExitError) << r.err;
  EXPECT_TRUE(Contains(r.err, "z-big")) << r.err;
  EXPECT_TRUE(Contains(r.err, std::strerror(ENOSPC))) << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  // What nobody sees there now: exactly what was there before.
  const CommandResult ls = test::RunCommandCapture(AsNobody("ls -A " + Q(parent)));
  EXPECT_EQ(ls.out, "mine\n");
}

// As non-root: a 0600 directory's mode must not be applied before a hard
// link to a file inside it is made elsewhere (the link needs to search it),
// and a 0000 directory's after its content.
TEST_F(ExtractTest, UnprivilegedHardLinkIntoA0600Directory) {
  const std::string src = work_.Join("src");
  ASSERT_EQ(mkdir(src.c_str(), 0755), 0);
  ASSERT_EQ(mkdir((src + "/d").c_str(), 0755), 0);
  test::WriteFile(src + "/d/f", "two names");
  ASSERT_EQ(link((src + "/d/f").c_str(), (src + "/z").c_str()), 0);
  ASSERT_EQ(mkdir((src + "/n").c_str(), 0755), 0);
  test::WriteFile(src + "/n/g", "in a 0000 directory");
  ASSERT_EQ(mkdir((src + "/n/sub").c_str(), 0755), 0);
  ASSERT_EQ(chmod((src + "/d").c_str(), 0600), 0);
  ASSERT_EQ(chmod((src + "/n/sub").c_str(), 0500), 0);
  ASSERT_EQ(chmod((src + "/n").c_str(), 0), 0);
  auto made = MakeBase(work_, src, "img");
  ASSERT_TRUE(made.ok()) << made.status().ToString();
  const Base& b = *made;
  const std::string parent = NobodysDir(work_, "out");
  const std::string dest = parent + "/x";
  const CommandResult r = Extract(b, b.image, dest, /*as_nobody=*/true);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(ListDirNames(parent), std::vector<std::string>{"x"});
  struct stat d, f, z, n, sub;
  ASSERT_EQ(lstat((dest + "/d").c_str(), &d), 0);
  ASSERT_EQ(lstat((dest + "/d/f").c_str(), &f), 0);
  ASSERT_EQ(lstat((dest + "/z").c_str(), &z), 0);
  ASSERT_EQ(lstat((dest + "/n").c_str(), &n), 0);
  ASSERT_EQ(lstat((dest + "/n/sub").c_str(), &sub), 0);
  EXPECT_EQ(d.st_mode & 07777, 0600u);
  EXPECT_EQ(n.st_mode & 07777, 0u);
  EXPECT_EQ(sub.st_mode & 07777, 0500u);
  EXPECT_EQ(f.st_ino, z.st_ino);
  EXPECT_EQ(f.st_nlink, 2u);
  EXPECT_EQ(d.st_uid, kNobody);
  EXPECT_EQ(test::ReadFile(dest + "/z"), "two names");
  EXPECT_EQ(test::ReadFile(dest + "/n/g"), "in a 0000 directory");
  // And the directory times are the source's (set after their content).
  struct stat sd;
  ASSERT_EQ(lstat((src + "/d").c_str(), &sd), 0);
  EXPECT_EQ(d.st_mtim.tv_sec, sd.st_mtim.tv_sec);
  EXPECT_EQ(d.st_mtim.tv_nsec, sd.st_mtim.tv_nsec);
}

// ---- item 10: arguments are checked before any work ---------------------------------

TEST_F(ExtractTest, BadDestinationsAreRefusedBeforeAnyWork) {
  const std::string src = work_.Join("src");
  ASSERT_EQ(mkdir(src.c_str(), 0755), 0);
  test::WriteFile(src + "/f", "x");
  auto made = MakeBase(work_, src, "img");
  ASSERT_TRUE(made.ok()) << made.status().ToString();
  const Base& b = *made;
  const std::string cwd = NobodysDir(work_, "cwd");
  const std::string cryptex = Q(CryptexForAll());
  const std::string trust = " --trust " + Q(b.key.trust_dir);

  // An empty DIR: a usage error, and nothing created in the working directory.
  CommandResult r = test::RunCommandCapture(
      "cd " + Q(cwd) + " && " + AsNobody(cryptex + " extract " + Q(b.image) + " ''" + trust));
  EXPECT_EQ(r.exit_code, kExitUsage) << r.err;
  EXPECT_TRUE(Contains(r.err, "DIR")) << r.err;
  EXPECT_EQ(ListDirNames(cwd), std::vector<std::string>{});
  r = test::RunCommandCapture("cd " + Q(cwd) + " && " +
                              AsNobody(cryptex + " extract '' x" + trust));
  EXPECT_EQ(r.exit_code, kExitUsage) << r.err;
  EXPECT_EQ(ListDirNames(cwd), std::vector<std::string>{});

  // A parent nobody may not write to: an I/O-class error (1), not integrity.
  const std::string root_owned = work_.Join("root-owned");
  ASSERT_EQ(mkdir(root_owned.c_str(), 0755), 0);
  r = Extract(b, b.image, root_owned + "/x", /*as_nobody=*/true);
  EXPECT_EQ(r.exit_code, kExitError) << r.err;
  EXPECT_TRUE(Contains(r.err, root_owned)) << r.err;
  EXPECT_EQ(ListDirNames(root_owned), std::vector<std::string>{});
  // A parent that is a file, or missing.
  test::WriteFile(work_.Join("file"), "f");
  r = Extract(b, b.image, work_.Join("file") + "/x", /*as_nobody=*/false);
  EXPECT_EQ(r.exit_code, kExitError) << r.err;
  r = Extract(b, b.image, work_.Join("missing") + "/x", /*as_nobody=*/false);
  EXPECT_EQ(r.exit_code, kExitNotFound) << r.err;
  EXPECT_TRUE(Contains(r.err, work_.Join("missing"))) << r.err;
}

// ---- signals and the final rename: a slow extraction --------------------------------

// An image whose extraction takes seconds: "big", 2 GiB of which 4 KiB in
// every MiB are random (little to store, but every byte is hashed), then
// directories of mode 0000, 0555 and 0500, and a 0555 root.
class ExtractSlowTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (!Root()) return;
    work_ = new TempDir;
    const std::string src = work_->Join("src");
    ASSERT_EQ(mkdir(src.c_str(), 0755), 0);
    {
      const int fd = open((src + "/big").c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
      ASSERT_GE(fd, 0);
      const std::string block = test::RandomBytes(4096, 7);
      for (uint64_t off = 0; off < (2ull << 30); off += 1 << 20) {
        ASSERT_EQ(pwrite(fd, block.data(), block.size(), static_cast<off_t>(off)), 4096);
      }
      ASSERT_EQ(ftruncate(fd, 2ll << 30), 0);
      close(fd);
    }
    for (const char* d : {"/d0000", "/r0555", "/r0555/sub"}) {
      ASSERT_EQ(mkdir((src + d).c_str(), 0755), 0);
    }
    test::WriteFile(src + "/d0000/f", "f");
    test::WriteFile(src + "/r0555/f", "f");
    test::WriteFile(src + "/r0555/sub/g", "g");
    ASSERT_EQ(chmod((src + "/d0000").c_str(), 0), 0);
    ASSERT_EQ(chmod((src + "/r0555/sub").c_str(), 0500), 0);
    ASSERT_EQ(chmod((src + "/r0555").c_str(), 0555), 0);
    ASSERT_EQ(chmod(src.c_str(), 0555), 0);
    auto made = MakeBase(*work_, src, "img");
    ASSERT_TRUE(made.ok()) << made.status().ToString();
    base_ = new Base(std::move(*made));
    ASSERT_EQ(chmod(src.c_str(), 0755), 0);
    ASSERT_EQ(unlink((src + "/big").c_str()), 0);
  }
  static void TearDownTestSuite() {
    delete base_;
    delete work_;
    base_ = nullptr;
    work_ = nullptr;
  }
  void SetUp() override {
    if (!Root()) GTEST_SKIP() << "needs root and setpriv";
    ASSERT_NE(base_, nullptr);
  }

  // Starts `cryptex extract` of the slow image into parent/x (as nobody
  // if asked); returns its pid.
  static pid_t Start(const std::string& parent, bool as_nobody) {
    std::vector<std::string> args;
    if (as_nobody) {
      args = {"/usr/bin/setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"};
    }
    for (const std::string& a : {CryptexForAll(), std::string("extract"), base_->image,
                                 parent + "/x", std::string("--trust"), base_->key.trust_dir}) {
      args.push_back(a);
    }
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    const pid_t pid = fork();
    if (pid == 0) {
      execv(argv[0], argv.data());
      _exit(127);
    }
    return pid;
  }

  // Waits until the extraction has written into parent/x.tmp-*/big; returns
  // that temporary directory ("" on timeout or if the process ended).
  static std::string WaitUntilWriting(pid_t pid, const std::string& parent) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (std::chrono::steady_clock::now() < deadline) {
      if (waitpid(pid, nullptr, WNOHANG) != 0) return "";
      for (const auto& n : ListDirNames(parent)) {
        struct stat st;
        if (n.rfind("x.tmp-", 0) == 0 && lstat((parent + "/" + n + "/big").c_str(), &st) == 0 &&
            st.st_blocks > 0) {
          return parent + "/" + n;
        }
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    return "";
  }

  // Waits for `pid` for up to `limit`; returns the wait status, or -1 (and
  // kills it) if it was still running.
  static int WaitFor(pid_t pid, std::chrono::milliseconds limit, double* seconds) {
    const auto start = std::chrono::steady_clock::now();
    int status = 0;
    while (true) {
      const pid_t w = waitpid(pid, &status, WNOHANG);
      *seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      if (w == pid) return status;
      if (std::chrono::steady_clock::now() - start > limit) {
        kill(pid, SIGKILL);
        waitpid(pid, &status, 0);
        return -1;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
  }

  void InterruptMidFile(int sig, bool as_nobody) {
    TempDir scratch;
    OpenUp(scratch.path());
    const std::string parent = NobodysDir(scratch, "out");
    test::WriteFile(parent + "/mine", "was here before");
    const pid_t pid = Start(parent, as_nobody);
    ASSERT_GT(pid, 0);
    const std::string tmp = WaitUntilWriting(pid, parent);
    ASSERT_NE(tmp, "") << "the extraction never started writing big (or ended first)";
    ASSERT_EQ(kill(pid, sig), 0);
    double secs = 0;
    const int status = WaitFor(pid, std::chrono::milliseconds(10000), &secs);
    ASSERT_NE(status, -1) << "still running 10 s after the signal";
    EXPECT_LT(secs, 1.0) << "the signal was honoured only after " << secs << " s";
    EXPECT_TRUE(WIFEXITED(status)) << "status " << status;
    EXPECT_EQ(WEXITSTATUS(status), 128 + sig);
    EXPECT_EQ(ListDirNames(parent), std::vector<std::string>{"mine"});
  }

  static TempDir* work_;
  static Base* base_;
};
TempDir* ExtractSlowTest::work_ = nullptr;
Base* ExtractSlowTest::base_ = nullptr;

TEST_F(ExtractSlowTest, SigtermDuringALargeFile) { InterruptMidFile(SIGTERM, false); }

TEST_F(ExtractSlowTest, SigintDuringALargeFileAsNobody) { InterruptMidFile(SIGINT, true); }

// DIR appears while the extraction runs: the final rename fails after every
// directory got its mode (0000, 0555, 0500, and the root's 0555), and the
// unprivileged user must still remove the whole temporary tree.
TEST_F(ExtractSlowTest, FailedRenameAfterModesAppliedLeavesNothing) {
  TempDir scratch;
  OpenUp(scratch.path());
  const std::string parent = NobodysDir(scratch, "out");
  const pid_t pid = Start(parent, /*as_nobody=*/true);
  ASSERT_GT(pid, 0);
  ASSERT_NE(WaitUntilWriting(pid, parent), "");
  ASSERT_EQ(mkdir((parent + "/x").c_str(), 0755), 0);  // someone else's DIR
  test::WriteFile(parent + "/x/theirs", "keep");
  double secs = 0;
  const int status = WaitFor(pid, std::chrono::milliseconds(120000), &secs);
  ASSERT_NE(status, -1);
  EXPECT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), kExitExists);
  EXPECT_EQ(ListDirNames(parent), std::vector<std::string>{"x"});
  EXPECT_EQ(ListDirNames(parent + "/x"), std::vector<std::string>{"theirs"});
}

}  // namespace
}  // namespace cryptex
