// Builder tests: ScanDirectory + WriteImage. What users rely on: the image
// holds exactly the source bytes for every chunk size (fs-verity digests
// checked with `fsverity digest`), holes stay cheap (a 3 GB sparse file gives
// a small image), identical content is stored once, builds are reproducible
// byte for byte, and a failed build never leaves a file behind.
#include "builder.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "format.h"
#include "image.h"
#include "keys.h"
#include "test_util.h"

namespace cryptex {
namespace {

using test::Contains;

using test::FileSize;
using test::ListDirNames;
using test::ReadFile;
using test::RunCommand;
using test::ShellQuote;
using test::TempDir;
using test::WriteFile;

// PREFIX followed by the decimal N ("f7"). Appends rather than writing
// `"f" + std::to_string(n)`: GCC 12 at -O3 reports a false -Wrestrict in
// that operator+ (GCC bug 105329), which -Werror turns into a failed Release
// build (scripts/ci-release.sh builds Release with -Werror).
std::string Numbered(std::string_view prefix, size_t n) {
  std::string name(prefix);
  name += std::to_string(n);
  return name;
}

class BuilderTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto k = PrivateKey::Generate();
    ASSERT_TRUE(k.ok()) << k.status().ToString();
    key_ = new PrivateKey(std::move(k).value());
    keydir_ = new TempDir;
    ASSERT_TRUE(key_->SavePair(keydir_->Join("vendor")).ok());
    auto t = TrustStore::LoadFile(keydir_->Join("vendor.pub"));
    ASSERT_TRUE(t.ok()) << t.status().ToString();
    trust_ = new TrustStore(std::move(t).value());
  }
  static void TearDownTestSuite() {
    delete trust_;
    delete keydir_;
    delete key_;
  }

  static BuildOptions Options(const std::string& out, uint32_t chunk_log2 = 17) {
    BuildOptions o;
    o.output_path = out;
    o.key = key_;
    o.manifest.name = std::string("org.example.builder-test");
    o.manifest.version = std::string("7");
    o.manifest.created_at = 1234567890;
    o.chunk_log2 = chunk_log2;
    o.threads = 2;
    return o;
  }

  static Result<BuildStats> Build(const std::string& src, const BuildOptions& opts) {
    CX_ASSIGN_OR_RETURN(SourceTree tree, ScanDirectory(src));
    return WriteImage(tree, opts);
  }

  static BuildStats BuildOrDie(const std::string& src, const BuildOptions& opts) {
    auto s = Build(src, opts);
    EXPECT_TRUE(s.ok()) << s.status().ToString();
    return s.ok() ? *s : BuildStats{};
  }

  static std::unique_ptr<Image> Open(const std::string& path) {
    ImageOptions o;
    o.trust = trust_;
    auto img = Image::Open(path, o);
    EXPECT_TRUE(img.ok()) << img.status().ToString();
    return img.ok() ? std::move(img).value() : nullptr;
  }

  static std::string ReadAll(const Image& img, const std::string& path) {
    auto in = img.Resolve(path);
    EXPECT_TRUE(in.ok()) << path << ": " << in.status().ToString();
    if (!in.ok()) return "";
    std::string out;
    std::vector<uint8_t> buf(1 << 20);
    for (;;) {
      auto n = img.Read(in->ino, out.size(), buf);
      EXPECT_TRUE(n.ok()) << path << ": " << n.status().ToString();
      if (!n.ok() || *n == 0) break;
      out.append(reinterpret_cast<const char*>(buf.data()), *n);
    }
    EXPECT_EQ(out.size(), in->size) << path;
    return out;
  }

  // `fsverity digest` of a source file, hex.
  static std::string OracleDigest(const std::string& path) {
    const auto r = RunCommand("fsverity digest " + ShellQuote(path));
    EXPECT_EQ(r.exit_code, 0) << path;
    if (r.out.size() < 7 + 64 || r.out.compare(0, 7, "sha256:") != 0) return "?" + r.out;
    return r.out.substr(7, 64);
  }

  static std::string ImageDigest(const Image& img, const std::string& path) {
    auto in = img.Resolve(path);
    EXPECT_TRUE(in.ok()) << path;
    return in.ok() ? HexEncode(in->digest) : "";
  }

  static PrivateKey* key_;
  static TempDir* keydir_;
  static TrustStore* trust_;
};
PrivateKey* BuilderTest::key_ = nullptr;
TempDir* BuilderTest::keydir_ = nullptr;
TrustStore* BuilderTest::trust_ = nullptr;

// ---- scanning ------------------------------------------------------------------

TEST_F(BuilderTest, ScanSortsChildrenAndGroupsHardLinks) {
  TempDir src;
  for (const char* n : {"b", "a", "\xff", "B", "a b"}) WriteFile(src.Join(n), n);
  ASSERT_EQ(mkdir(src.Join("dir").c_str(), 0755), 0);
  ASSERT_EQ(link(src.Join("a").c_str(), src.Join("dir/a2").c_str()), 0);
  auto tree = ScanDirectory(src.path());
  ASSERT_TRUE(tree.ok()) << tree.status().ToString();
  const auto& nodes = tree->nodes;
  ASSERT_FALSE(nodes.empty());
  std::vector<std::string> names;
  for (uint32_t c : nodes[0].children) names.push_back(nodes[c].name);
  EXPECT_EQ(names, (std::vector<std::string>{"B", "a", "a b", "b", "dir", "\xff"}));
  uint32_t a = 0, a2 = 0;
  for (uint32_t i = 0; i < nodes.size(); ++i) {
    if (nodes[i].name == "a") a = i;
    if (nodes[i].name == "a2") a2 = i;
  }
  ASSERT_NE(a, 0u);
  ASSERT_NE(a2, 0u);
  EXPECT_EQ(nodes[a].hardlink_of, -1);
  EXPECT_EQ(nodes[a2].hardlink_of, static_cast<int64_t>(a));
  EXPECT_EQ(tree->regular_files, 5u);  // the hard link counts once
  EXPECT_EQ(tree->total_file_bytes, 1u + 1 + 1 + 1 + 3);
}

TEST_F(BuilderTest, ScanErrorsNameThePath) {
  TempDir src;
  auto missing = ScanDirectory(src.Join("nope"));
  EXPECT_EQ(missing.status().code(), Code::kNotFound);
  EXPECT_TRUE(Contains(missing.status().message(), src.Join("nope")));
  WriteFile(src.Join("file"), "x");
  auto file = ScanDirectory(src.Join("file"));
  EXPECT_EQ(file.status().code(), Code::kNotDirectory);
  EXPECT_TRUE(Contains(file.status().message(), src.Join("file")));
}

// A source directory given through a symlink is sealed (like `ls DIR/`);
// symlinks below it are stored as symlinks, never followed.
TEST_F(BuilderTest, ASymlinkGivenAsTheSourceIsFollowedOnlyThere) {
  TempDir top, out;
  ASSERT_EQ(mkdir(top.Join("real").c_str(), 0755), 0);
  WriteFile(top.Join("real/f"), "content");
  ASSERT_EQ(symlink("f", top.Join("real/sl").c_str()), 0);
  ASSERT_EQ(symlink("real", top.Join("link").c_str()), 0);
  const std::string dest = out.Join("img");
  auto st = Build(top.Join("link"), Options(dest));
  ASSERT_TRUE(st.ok()) << st.status().ToString();
  auto img = Open(dest);
  ASSERT_NE(img, nullptr);
  EXPECT_EQ(ReadAll(*img, "/f"), "content");
  auto sl = img->Resolve("/sl");
  ASSERT_TRUE(sl.ok());
  EXPECT_TRUE(S_ISLNK(sl->mode));
}

// ---- option checks and failures leave nothing behind ------------------------------

TEST_F(BuilderTest, RejectsBadOptionsWithoutCreatingFiles) {
  TempDir src, out;
  WriteFile(src.Join("f"), "x");
  auto tree = ScanDirectory(src.path());
  ASSERT_TRUE(tree.ok());
  const std::string dest = out.Join("img");
  BuildOptions o = Options(dest);
  o.key = nullptr;
  EXPECT_EQ(WriteImage(*tree, o).status().code(), Code::kInvalidArgument);
  for (uint32_t c : {0u, 11u, 21u, 64u}) {
    o = Options(dest, c);
    EXPECT_EQ(WriteImage(*tree, o).status().code(), Code::kInvalidArgument) << "chunk 2^" << c;
  }
  for (int level : {0, -1, 23, 100}) {
    o = Options(dest);
    o.zstd_level = level;
    EXPECT_EQ(WriteImage(*tree, o).status().code(), Code::kInvalidArgument) << "level " << level;
  }
  EXPECT_TRUE(ListDirNames(out.path()).empty());
}

TEST_F(BuilderTest, RefusesAnExistingDestination) {
  TempDir src, out;
  WriteFile(src.Join("f"), "x");
  const std::string dest = out.Join("img");
  WriteFile(dest, "precious");
  auto st = Build(src.path(), Options(dest));
  EXPECT_EQ(st.status().code(), Code::kExists) << st.status().ToString();
  EXPECT_TRUE(Contains(st.status().message(), dest));
  EXPECT_EQ(ReadFile(dest), "precious");
  ASSERT_EQ(unlink(dest.c_str()), 0);
  ASSERT_EQ(symlink("dangling", dest.c_str()), 0);
  EXPECT_EQ(Build(src.path(), Options(dest)).status().code(), Code::kExists);
  EXPECT_EQ(ListDirNames(out.path()), std::vector<std::string>{"img"});
}

TEST_F(BuilderTest, SourceFileVanishingMidBuildLeavesNothing) {
  TempDir src, out;
  WriteFile(src.Join("a"), test::RandomBytes(300000, 1));
  WriteFile(src.Join("b"), "small");
  auto tree = ScanDirectory(src.path());
  ASSERT_TRUE(tree.ok());
  ASSERT_EQ(unlink(src.Join("b").c_str()), 0);
  const std::string dest = out.Join("img");
  auto st = WriteImage(*tree, Options(dest));
  EXPECT_FALSE(st.ok());
  EXPECT_TRUE(Contains(st.status().message(), src.Join("b"))) << st.status().message();
  EXPECT_TRUE(ListDirNames(out.path()).empty()) << "no image and no temporary file";
}

// Metadata changed between the scan and the read (here an xattr, so only
// ctime moves) would be sealed stale: the build fails instead.
TEST_F(BuilderTest, SourceFileMetadataChangedSinceTheScanFailsTheBuild) {
  TempDir src(test::TmpfsDir()), out;
  WriteFile(src.Join("f"), "same bytes");
  auto tree = ScanDirectory(src.path());
  ASSERT_TRUE(tree.ok());
  // File systems stamp ctime from a coarse clock (a jiffy): wait until that
  // clock has passed the scanned ctime, so that the change below moves it.
  struct stat scanned;
  ASSERT_EQ(stat(src.Join("f").c_str(), &scanned), 0);
  for (timespec now{};
       clock_gettime(CLOCK_REALTIME_COARSE, &now) == 0 &&
       (now.tv_sec < scanned.st_ctim.tv_sec ||
        (now.tv_sec == scanned.st_ctim.tv_sec && now.tv_nsec <= scanned.st_ctim.tv_nsec));) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  ASSERT_EQ(setxattr(src.Join("f").c_str(), "user.late", "v", 1, 0), 0) << strerror(errno);
  struct stat changed;
  ASSERT_EQ(stat(src.Join("f").c_str(), &changed), 0);
  ASSERT_NE(changed.st_ctim.tv_nsec + changed.st_ctim.tv_sec * 1000000000ll,
            scanned.st_ctim.tv_nsec + scanned.st_ctim.tv_sec * 1000000000ll)
      << "the file system did not move ctime";
  auto st = WriteImage(*tree, Options(out.Join("img")));
  ASSERT_FALSE(st.ok()) << "sealed metadata that no longer describes the file";
  EXPECT_EQ(st.status().code(), Code::kIOError);
  EXPECT_TRUE(Contains(st.status().message(), src.Join("f") + ": changed since the scan"))
      << st.status().message();
  EXPECT_TRUE(ListDirNames(out.path()).empty());
}

TEST_F(BuilderTest, SourceFileChangingSizeMidBuildLeavesNothing) {
  TempDir src, out;
  WriteFile(src.Join("grows"), "before");
  auto tree = ScanDirectory(src.path());
  ASSERT_TRUE(tree.ok());
  WriteFile(src.Join("grows"), "after the scan it is longer");
  const std::string dest = out.Join("img");
  auto st = WriteImage(*tree, Options(dest));
  EXPECT_FALSE(st.ok());
  EXPECT_TRUE(Contains(st.status().message(), src.Join("grows"))) << st.status().message();
  EXPECT_TRUE(ListDirNames(out.path()).empty());
}

TEST_F(BuilderTest, MissingOutputDirectory) {
  TempDir src, out;
  WriteFile(src.Join("f"), "x");
  auto st = Build(src.path(), Options(out.Join("no/such/dir/img")));
  EXPECT_FALSE(st.ok());
  EXPECT_TRUE(Contains(st.status().message(), out.Join("no/such/dir/img")))
      << st.status().message();
  EXPECT_TRUE(ListDirNames(out.path()).empty());
}

// ---- content: chunk boundaries --------------------------------------------------

class ChunkSizeTest : public BuilderTest, public ::testing::WithParamInterface<uint32_t> {};

TEST_P(ChunkSizeTest, FilesAroundChunkBoundariesRoundTrip) {
  const uint32_t log2 = GetParam();
  const uint64_t c = uint64_t{1} << log2;
  TempDir src, out;
  std::vector<uint64_t> sizes = {0, 1, 4095, 4096, 4097, c - 1, c, c + 1, 3 * c, 3 * c + 4097};
  std::sort(sizes.begin(), sizes.end());
  sizes.erase(std::unique(sizes.begin(), sizes.end()), sizes.end());
  for (uint64_t n : sizes) {
    WriteFile(src.Join(Numbered("rand", n)), test::RandomBytes(n, n * 31 + log2));
    std::string text;
    while (text.size() < n) text += "compressible " + std::to_string(text.size()) + "\n";
    WriteFile(src.Join(Numbered("text", n)), text.substr(0, n));
  }
  const std::string dest = out.Join("img");
  const BuildStats stats = BuildOrDie(src.path(), Options(dest, log2));
  EXPECT_EQ(stats.files, 2 * sizes.size());
  auto img = Open(dest);
  ASSERT_NE(img, nullptr);
  EXPECT_EQ(img->superblock().chunk_log2, log2);
  EXPECT_EQ(img->superblock().chunk_size(), c);
  for (uint64_t n : sizes) {
    for (const std::string prefix : {"rand", "text"}) {
      const std::string name = prefix + std::to_string(n);
      SCOPED_TRACE(name);
      EXPECT_TRUE(ReadAll(*img, name) == ReadFile(src.Join(name))) << "content differs";
      EXPECT_EQ(ImageDigest(*img, name), OracleDigest(src.Join(name)));
    }
  }
  const Status v = img->VerifyAll();
  EXPECT_TRUE(v.ok()) << v.ToString();
  // Compressible content is stored compressed.
  EXPECT_LT(stats.stored_bytes, stats.content_bytes);
}

INSTANTIATE_TEST_SUITE_P(Chunks, ChunkSizeTest, ::testing::Values(12u, 13u, 16u, 17u, 20u),
                         [](const ::testing::TestParamInfo<uint32_t>& p) {
                           return std::to_string((uint64_t{1} << p.param) / 1024) + "K";
                         });

// ---- holes ------------------------------------------------------------------------

TEST_F(BuilderTest, ThreeGigabyteSparseFileGivesASmallImage) {
  TempDir src(test::TmpfsDir()), out;
  const uint64_t size = (3ull << 30) + 12345;
  const std::string path = src.Join("huge");
  const struct {
    uint64_t off;
    std::string bytes;
  } marks[] = {
      {0, "HEAD"}, {(3ull << 30) / 2 + 777, test::RandomBytes(200000, 8)}, {size - 4, "TAIL"}};
  {
    const int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(ftruncate(fd, static_cast<off_t>(size)), 0);
    for (const auto& m : marks) {
      ASSERT_EQ(pwrite(fd, m.bytes.data(), m.bytes.size(), static_cast<off_t>(m.off)),
                static_cast<ssize_t>(m.bytes.size()));
    }
    close(fd);
  }
  const std::string dest = out.Join("img");
  const BuildStats stats = BuildOrDie(src.path(), Options(dest));
  EXPECT_LT(FileSize(dest), 2u << 20) << "holes must not be stored";
  EXPECT_GT(stats.hole_chunks, size / (128 * 1024) - 10);
  EXPECT_EQ(stats.content_bytes, size);

  auto img = Open(dest);
  ASSERT_NE(img, nullptr);
  auto in = img->Resolve("huge");
  ASSERT_TRUE(in.ok());
  EXPECT_EQ(in->size, size);
  // The recorded digest is the one of the source (oracle: fsverity digest).
  EXPECT_EQ(HexEncode(in->digest), OracleDigest(path));
  // The data around and between holes.
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  std::mt19937_64 rng(3);
  std::vector<uint64_t> offsets = {0, size - 100000, marks[1].off - 1000};
  for (int i = 0; i < 40; ++i) offsets.push_back(rng() % size);
  std::vector<uint8_t> got(300000);
  std::string want(got.size(), '\0');
  for (uint64_t off : offsets) {
    auto n = img->Read(in->ino, off, got);
    ASSERT_TRUE(n.ok()) << n.status().ToString();
    const ssize_t m = pread(fd, want.data(), want.size(), static_cast<off_t>(off));
    ASSERT_EQ(static_cast<ssize_t>(*n), m) << off;
    EXPECT_EQ(std::memcmp(got.data(), want.data(), *n), 0) << "offset " << off;
  }
  close(fd);
  // VerifyAll reads every byte (3 GB of zeros) and checks the digest.
  const Status v = img->VerifyAll();
  EXPECT_TRUE(v.ok()) << v.ToString();
}

// Offsets and sizes past 4 GiB (32-bit boundaries in chunk and byte math).
TEST_F(BuilderTest, FileLargerThanFourGigabytes) {
  TempDir src(test::TmpfsDir()), out;
  const uint64_t size = (5ull << 30) + 3;
  const std::string path = src.Join("huge");
  const std::vector<std::pair<uint64_t, std::string>> marks = {
      {(4ull << 30) - 3, "across 4 GiB"},
      {(4ull << 30) + 128 * 1024 - 1, test::RandomBytes(300000, 4)},
      {size - 1, "!"}};
  {
    const int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(ftruncate(fd, static_cast<off_t>(size)), 0);
    for (const auto& [off, bytes] : marks) {
      ASSERT_EQ(pwrite(fd, bytes.data(), bytes.size(), static_cast<off_t>(off)),
                static_cast<ssize_t>(bytes.size()));
    }
    close(fd);
  }
  const std::string dest = out.Join("img");
  BuildOrDie(src.path(), Options(dest));
  EXPECT_LT(FileSize(dest), 2u << 20);
  auto img = Open(dest);
  ASSERT_NE(img, nullptr);
  auto in = img->Resolve("huge");
  ASSERT_TRUE(in.ok());
  EXPECT_EQ(in->size, size);
  for (const auto& [off, bytes] : marks) {
    std::vector<uint8_t> buf(bytes.size() + 20);
    auto n = img->Read(in->ino, off - 10, buf);
    ASSERT_TRUE(n.ok()) << n.status().ToString();
    const size_t want = static_cast<size_t>(std::min<uint64_t>(buf.size(), size - (off - 10)));
    ASSERT_EQ(*n, want) << off;
    EXPECT_EQ(std::string(10, '\0') + bytes,
              std::string(reinterpret_cast<const char*>(buf.data()), 10 + bytes.size()))
        << "offset " << off;
  }
  std::vector<uint8_t> one(1);
  auto past = img->Read(in->ino, size, one);
  ASSERT_TRUE(past.ok());
  EXPECT_EQ(*past, 0u);
}

// The largest values the format allows: 255-byte names (also of xattrs),
// 4095-byte symlink targets and 64 KiB xattr values.
TEST_F(BuilderTest, FormatLimitsRoundTrip) {
  TempDir src(test::TmpfsDir()), out;
  const std::string name(255, 'n');
  WriteFile(src.Join(name), "x");
  const std::string xname = "user." + std::string(250, 'x');
  const std::string xvalue = test::RandomBytes(65536, 65536);
  ASSERT_EQ(lsetxattr(src.Join(name).c_str(), xname.c_str(), xvalue.data(), xvalue.size(), 0), 0)
      << std::strerror(errno);
  const std::string target = std::string(4094, 't') + "\xff";
  ASSERT_EQ(symlink(target.c_str(), src.Join("link").c_str()), 0);
  const std::string dest = out.Join("img");
  BuildOrDie(src.path(), Options(dest));
  auto img = Open(dest);
  ASSERT_NE(img, nullptr);
  auto f = img->Resolve(name);
  ASSERT_TRUE(f.ok());
  auto v = img->GetXattr(f->ino, xname);
  ASSERT_TRUE(v.ok()) << v.status().ToString();
  EXPECT_TRUE(*v == xvalue);
  auto l = img->Resolve("link");
  ASSERT_TRUE(l.ok());
  auto t = img->ReadLink(l->ino);
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(*t, target);
  EXPECT_TRUE(img->VerifyAll().ok());
}

// Nesting deeper than PATH_MAX (4096 bytes of path): the format has no path
// length limit, so neither may the builder.
TEST_F(BuilderTest, TreeDeeperThanPathMax) {
  TempDir src, out;
  const std::string comp(200, 'd');
  const int depth = 30;  // about 6 KB of path
  const int fd = test::MakeDeepChain(src.path(), depth, comp);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(symlinkat("leaf", fd, "leaflink"), 0);
  close(fd);
  const std::string dest = out.Join("img");
  auto st = Build(src.path(), Options(dest));
  ASSERT_TRUE(st.ok()) << st.status().ToString().substr(0, 300);
  auto img = Open(dest);
  ASSERT_NE(img, nullptr);
  std::string path;
  for (int i = 0; i < depth; ++i) path += "/" + comp;
  EXPECT_EQ(ReadAll(*img, path + "/leaf"), "deep");
  auto l = img->Resolve(path + "/leaflink");
  ASSERT_TRUE(l.ok());
  EXPECT_EQ(*img->ReadLink(l->ino), "leaf");
}

TEST_F(BuilderTest, ZeroFilledFilesAreStoredAsHoles) {
  TempDir src, out;
  WriteFile(src.Join("zeros"), std::string(16 << 20, '\0'));  // written, not sparse
  WriteFile(src.Join("tail"), std::string(1 << 20, '\0') + "x");
  const std::string dest = out.Join("img");
  const BuildStats stats = BuildOrDie(src.path(), Options(dest));
  EXPECT_LT(FileSize(dest), 256u << 10);
  EXPECT_GE(stats.hole_chunks, 128u + 8u);
  auto img = Open(dest);
  ASSERT_NE(img, nullptr);
  EXPECT_TRUE(ReadAll(*img, "zeros") == std::string(16 << 20, '\0'));
  EXPECT_TRUE(ReadAll(*img, "tail") == std::string(1 << 20, '\0') + "x");
  EXPECT_EQ(ImageDigest(*img, "zeros"), OracleDigest(src.Join("zeros")));
  EXPECT_EQ(ImageDigest(*img, "tail"), OracleDigest(src.Join("tail")));
}

// ---- deduplication ------------------------------------------------------------------

TEST_F(BuilderTest, IdenticalContentIsStoredOnce) {
  TempDir src, out;
  const std::string big = test::RandomBytes(3 << 20, 4);  // incompressible
  WriteFile(src.Join("copy1"), big);
  ASSERT_EQ(mkdir(src.Join("sub").c_str(), 0755), 0);
  WriteFile(src.Join("sub/copy2"), big);
  WriteFile(src.Join("sub/copy3"), big);
  // Same content as the first 2 MiB of the others: whole chunks are shared.
  WriteFile(src.Join("prefix"), big.substr(0, 2 << 20));
  // Small identical files (packed, then deduplicated).
  const std::string small = test::RandomBytes(5000, 5);
  for (int i = 0; i < 20; ++i) WriteFile(src.Join(Numbered("small", i)), small);
  // One chunk repeated inside a file.
  const std::string chunk = test::RandomBytes(128 * 1024, 6);
  WriteFile(src.Join("repeats"), chunk + chunk + chunk + chunk);
  const std::string dest = out.Join("img");
  const BuildStats stats = BuildOrDie(src.path(), Options(dest));
  const uint64_t unique = big.size() + small.size() + chunk.size();
  EXPECT_LT(FileSize(dest), unique + (unique / 10)) << "duplicates must not be stored again";
  EXPECT_LT(stats.stored_bytes, unique + 4096);
  EXPECT_GE(stats.dedup_hits, 2 * 24u + 16 + 19 + 3);
  auto img = Open(dest);
  ASSERT_NE(img, nullptr);
  for (const char* p : {"copy1", "sub/copy2", "sub/copy3"}) EXPECT_TRUE(ReadAll(*img, p) == big);
  EXPECT_TRUE(ReadAll(*img, "prefix") == big.substr(0, 2 << 20));
  for (int i = 0; i < 20; ++i) EXPECT_TRUE(ReadAll(*img, Numbered("small", i)) == small);
  EXPECT_TRUE(ReadAll(*img, "repeats") == chunk + chunk + chunk + chunk);
  EXPECT_TRUE(img->VerifyAll().ok());
}

TEST_F(BuilderTest, SimilarButDifferentSmallFilesAreNotConfused) {
  // Same length, one byte apart; and one file a prefix of another.
  TempDir src, out;
  const std::string base = test::RandomBytes(3000, 9);
  for (int i = 0; i < 50; ++i) {
    std::string s = base;
    s[static_cast<size_t>(i * 37)] ^= 1;
    WriteFile(src.Join(Numbered("v", i)), s);
  }
  WriteFile(src.Join("short"), base.substr(0, 2999));
  WriteFile(src.Join("base"), base);
  const std::string dest = out.Join("img");
  BuildOrDie(src.path(), Options(dest, 12));
  auto img = Open(dest);
  ASSERT_NE(img, nullptr);
  for (const auto& name : ListDirNames(src.path())) {
    EXPECT_TRUE(ReadAll(*img, name) == ReadFile(src.Join(name))) << name;
  }
}

// ---- reproducibility -----------------------------------------------------------------

TEST_F(BuilderTest, BuildsAreByteIdentical) {
  TempDir src(test::TmpfsDir()), out;
  test::MakeEveryKindTree(src.path());
  auto build = [&](const std::string& from, const std::string& name, int threads) {
    BuildOptions o = Options(out.Join(name));
    o.threads = threads;
    BuildOrDie(from, o);
    return ReadFile(out.Join(name));
  };
  const std::string one = build(src.path(), "t1", 1);
  ASSERT_GT(one.size(), 4096u);
  EXPECT_TRUE(one == build(src.path(), "t1-again", 1)) << "same tree, same options";
  EXPECT_TRUE(one == build(src.path(), "t2", 2)) << "--threads 2";
  EXPECT_TRUE(one == build(src.path(), "t7", 7)) << "--threads 7";
  // A copy of the tree (other inode numbers, other readdir order) is the same tree.
  TempDir copy(test::TmpfsDir());
  const auto cp =
      RunCommand("cp -a " + ShellQuote(src.path() + "/.") + " " + ShellQuote(copy.path()));
  ASSERT_EQ(cp.exit_code, 0);
  ASSERT_TRUE(test::CompareTrees(src.path(), copy.path()).empty());
  EXPECT_TRUE(one == build(copy.path(), "copy", 2)) << "a cp -a copy of the tree";

  // Anything that is recorded changes the bytes.
  BuildOptions o = Options(out.Join("epoch"));
  o.manifest.created_at += 1;
  BuildOrDie(src.path(), o);
  EXPECT_FALSE(one == ReadFile(out.Join("epoch")));
  auto other = PrivateKey::Generate();
  ASSERT_TRUE(other.ok());
  o = Options(out.Join("key"));
  o.key = &other.value();
  BuildOrDie(src.path(), o);
  EXPECT_FALSE(one == ReadFile(out.Join("key")));
  struct timespec ts[2] = {{0, UTIME_OMIT}, {1000, 1}};
  ASSERT_EQ(utimensat(AT_FDCWD, src.Join("empty").c_str(), ts, AT_SYMLINK_NOFOLLOW), 0);
  EXPECT_FALSE(one == build(src.path(), "mtime", 2)) << "an mtime is part of the image";
}

// ---- statistics and progress -------------------------------------------------------------

TEST_F(BuilderTest, StatsAndProgress) {
  TempDir src, out;
  for (int i = 0; i < 30; ++i) {
    WriteFile(src.Join(Numbered("f", i)), test::RandomBytes(i * 50000, i));
  }
  ASSERT_EQ(mkdir(src.Join("d").c_str(), 0755), 0);
  ASSERT_EQ(mkdir(src.Join("d/e").c_str(), 0755), 0);
  ASSERT_EQ(symlink("f1", src.Join("l").c_str()), 0);
  ASSERT_EQ(mkfifo(src.Join("p").c_str(), 0644), 0);
  auto tree = ScanDirectory(src.path());
  ASSERT_TRUE(tree.ok());
  const std::string dest = out.Join("img");
  BuildOptions o = Options(dest);
  std::vector<BuildProgress> seen;
  o.progress = [&](const BuildProgress& p) { seen.push_back(p); };
  auto stats = WriteImage(*tree, o);
  ASSERT_TRUE(stats.ok()) << stats.status().ToString();
  EXPECT_EQ(stats->files, 30u);
  EXPECT_EQ(stats->directories, 3u);
  EXPECT_EQ(stats->symlinks, 1u);
  EXPECT_EQ(stats->other, 1u);
  EXPECT_EQ(stats->content_bytes, tree->total_file_bytes);
  EXPECT_EQ(stats->image_size, FileSize(dest));
  ASSERT_FALSE(seen.empty());
  for (size_t i = 1; i < seen.size(); ++i) {
    EXPECT_GE(seen[i].bytes_done, seen[i - 1].bytes_done);
    EXPECT_GE(seen[i].files_done, seen[i - 1].files_done);
  }
  EXPECT_EQ(seen.back().bytes_done, tree->total_file_bytes);
  EXPECT_EQ(seen.back().bytes_total, tree->total_file_bytes);
  EXPECT_EQ(seen.back().files_done, 30u);
  EXPECT_EQ(seen.back().files_total, 30u);
}

TEST_F(BuilderTest, EmptyTree) {
  TempDir src, out;
  ASSERT_EQ(chmod(src.path().c_str(), 0700), 0);
  const std::string dest = out.Join("img");
  const BuildStats stats = BuildOrDie(src.path(), Options(dest));
  EXPECT_EQ(stats.directories, 1u);
  EXPECT_EQ(stats.files, 0u);
  auto img = Open(dest);
  ASSERT_NE(img, nullptr);
  EXPECT_EQ(img->inode_count(), 1u);
  auto root = img->GetInode(1);
  ASSERT_TRUE(root.ok());
  EXPECT_EQ(root->mode, S_IFDIR | 0700u);
  EXPECT_EQ(root->size, 0u);
  EXPECT_TRUE(img->VerifyAll().ok());
  const auto v = RunCommand(img->superblock().VeritysetupCommand(dest) + " >/dev/null");
  EXPECT_EQ(v.exit_code, 0);
}

}  // namespace
}  // namespace cryptex

namespace cryptex {
namespace {

// ---- source files changing while they are read ---------------------------------

using OptionsFn = BuildOptions (*)(const std::string&, uint32_t);

enum class Change { kShrink, kGrow, kRewriteSameSize };

// Builds a tree holding `size` bytes in "f" with 4 KiB chunks; the builder's
// read hook changes "f" right after the first read of it. The build must
// fail naming the file, and leave nothing.
void ExpectChangeWhileReadingFails(OptionsFn options, size_t size, Change change) {
  TempDir src, out;
  const std::string f = src.Join("f");
  WriteFile(f, test::RandomBytes(size, 5));
  auto tree = ScanDirectory(src.path());
  ASSERT_TRUE(tree.ok()) << tree.status().ToString();
  const std::string dest = out.Join("img");
  BuildOptions o = options(dest, 12);
  int calls = 0;
  o.after_source_read = [&](const std::string& path, uint64_t) {
    if (path != f || calls++ > 0) return;
    switch (change) {
      case Change::kShrink:
        ASSERT_EQ(truncate(f.c_str(), static_cast<off_t>(size / 4)), 0);
        break;
      case Change::kGrow: {
        const int fd = open(f.c_str(), O_WRONLY | O_APPEND | O_CLOEXEC);
        ASSERT_GE(fd, 0);
        ASSERT_EQ(write(fd, "more", 4), 4);
        close(fd);
        break;
      }
      case Change::kRewriteSameSize: {
        const int fd = open(f.c_str(), O_WRONLY | O_CLOEXEC);
        ASSERT_GE(fd, 0);
        ASSERT_EQ(pwrite(fd, "XXXX", 4, static_cast<off_t>(size - 4)), 4);
        const struct timespec later[2] = {{0, UTIME_OMIT}, {2000000000, 0}};
        ASSERT_EQ(futimens(fd, later), 0);
        close(fd);
        break;
      }
    }
  };
  auto st = WriteImage(*tree, o);
  EXPECT_GE(calls, 1) << "the hook never ran";
  ASSERT_FALSE(st.ok()) << "sealed a file that changed while being read";
  EXPECT_EQ(st.status().code(), Code::kIOError) << st.status().ToString();
  EXPECT_TRUE(Contains(st.status().message(), f)) << st.status().message();
  EXPECT_TRUE(Contains(st.status().message(), "changed while reading")) << st.status().message();
  EXPECT_TRUE(ListDirNames(out.path()).empty()) << "no image and no temporary file";
}

TEST_F(BuilderTest, LargeFileShrinkingWhileReadFailsTheBuild) {
  ExpectChangeWhileReadingFails(&Options, 64 << 10, Change::kShrink);
}
TEST_F(BuilderTest, LargeFileGrowingWhileReadFailsTheBuild) {
  ExpectChangeWhileReadingFails(&Options, 64 << 10, Change::kGrow);
}
TEST_F(BuilderTest, LargeFileRewrittenWhileReadFailsTheBuild) {
  ExpectChangeWhileReadingFails(&Options, 64 << 10, Change::kRewriteSameSize);
}
TEST_F(BuilderTest, SmallFileShrinkingWhileReadFailsTheBuild) {
  ExpectChangeWhileReadingFails(&Options, 3000, Change::kShrink);
}
TEST_F(BuilderTest, SmallFileGrowingWhileReadFailsTheBuild) {
  ExpectChangeWhileReadingFails(&Options, 3000, Change::kGrow);
}
TEST_F(BuilderTest, SmallFileRewrittenWhileReadFailsTheBuild) {
  ExpectChangeWhileReadingFails(&Options, 3000, Change::kRewriteSameSize);
}

// A sparse file that is truncated while read: SEEK_DATA's ENXIO past the new
// end must not be taken for "hole to the end of the file".
TEST_F(BuilderTest, SparseFileTruncatedWhileReadFailsTheBuild) {
  TempDir src(test::TmpfsDir()), out;
  const std::string f = src.Join("sparse");
  WriteFile(f, test::RandomBytes(8192, 9));
  ASSERT_EQ(truncate(f.c_str(), 1 << 20), 0);
  auto tree = ScanDirectory(src.path());
  ASSERT_TRUE(tree.ok());
  BuildOptions o = Options(out.Join("img"), 12);
  bool done = false;
  o.after_source_read = [&](const std::string&, uint64_t) {
    if (!done) {
      ASSERT_EQ(truncate(f.c_str(), 4096), 0);
    }
    done = true;
  };
  auto st = WriteImage(*tree, o);
  ASSERT_FALSE(st.ok()) << "sealed a truncated file with a zero tail";
  EXPECT_EQ(st.status().code(), Code::kIOError);
  EXPECT_TRUE(Contains(st.status().message(), "changed while reading")) << st.status().message();
  EXPECT_TRUE(ListDirNames(out.path()).empty());
}

// ---- files whose stat size is not their size (procfs, sysfs) -------------------

// Bind-mounts `file` over an empty regular file "f" in a new tree, builds it
// and expects a kIOError naming "f".
void ExpectPseudoFileRefused(OptionsFn options, const std::string& file) {
  TempDir src, out;
  const std::string f = src.Join("f");
  WriteFile(f, "");
  ASSERT_EQ(mount(file.c_str(), f.c_str(), nullptr, MS_BIND, nullptr), 0) << strerror(errno);
  struct Unmount {
    std::string p;
    ~Unmount() { umount2(p.c_str(), MNT_DETACH); }
  } unmount{f};
  auto tree = ScanDirectory(src.path());
  ASSERT_TRUE(tree.ok()) << tree.status().ToString();
  auto st = WriteImage(*tree, options(out.Join("img"), 17));
  ASSERT_FALSE(st.ok()) << file << " sealed as if its stat size were right";
  EXPECT_EQ(st.status().code(), Code::kIOError) << st.status().ToString();
  EXPECT_TRUE(Contains(st.status().message(), f)) << st.status().message();
  EXPECT_TRUE(Contains(st.status().message(), "not a regular on-disk file"))
      << st.status().message();
  EXPECT_TRUE(ListDirNames(out.path()).empty());
}

TEST_F(BuilderTest, ProcFileWithSizeZeroIsRefusedNotSealedEmpty) {
  ExpectPseudoFileRefused(&Options, "/proc/version");  // st_size 0, has bytes
}
TEST_F(BuilderTest, SysfsFileWithAWrongSizeIsAnIOErrorNotCorruption) {
  ExpectPseudoFileRefused(&Options, "/sys/kernel/mm/transparent_hugepage/enabled");  // st_size 4096
}

// ---- every reader limit is enforced by the writer --------------------------------

// Builds `tree` with `o`; expects `code` (kInvalidArgument: a manifest the
// caller gave; kBadSource: a tree the format cannot hold) mentioning each of
// `words`, and no file written.
void ExpectRefused(const SourceTree& tree, const BuildOptions& o, const TempDir& out,
                   const std::vector<std::string>& words, Code code = Code::kInvalidArgument) {
  auto st = WriteImage(tree, o);
  ASSERT_FALSE(st.ok()) << "wrote an image readers refuse";
  EXPECT_EQ(st.status().code(), code) << st.status().ToString();
  for (const auto& w : words) {
    EXPECT_TRUE(Contains(st.status().message(), w))
        << "'" << w << "' not in: " << st.status().message().substr(0, 400);
  }
  EXPECT_TRUE(ListDirNames(out.path()).empty()) << "nothing may be written";
}

TEST_F(BuilderTest, ManifestStringsAtTheLimitBuildAndOneMoreIsRefused) {
  TempDir src;
  WriteFile(src.Join("f"), "x");
  auto tree = ScanDirectory(src.path());
  ASSERT_TRUE(tree.ok());
  const size_t limit = format::kMaxManifestStringLen;
  struct Field {
    const char* name;
    std::string Manifest::*member;
  };
  for (const Field& fld :
       {Field{"name", &Manifest::name}, Field{"version", &Manifest::version},
        Field{"description", &Manifest::description}, Field{"patch id", &Manifest::patch_id},
        Field{"severity", &Manifest::severity}, Field{"activation", &Manifest::activation}}) {
    SCOPED_TRACE(fld.name);
    TempDir out;
    BuildOptions o = Options(out.Join("img"));
    if (fld.member == &Manifest::patch_id || fld.member == &Manifest::activation) {
      o.kind = format::kKindPatch;
    }
    o.manifest.*fld.member = std::string(limit, 'v');
    auto st = WriteImage(*tree, o);
    ASSERT_TRUE(st.ok()) << st.status().ToString();
    auto img = Open(out.Join("img"));
    ASSERT_NE(img, nullptr);
    EXPECT_EQ(img->manifest().*fld.member, std::string(limit, 'v'));
    EXPECT_TRUE(img->VerifyAll().ok());
    TempDir out2;
    o = Options(out2.Join("img"));
    o.manifest.*fld.member = std::string(limit + 1, 'v');
    ExpectRefused(*tree, o, out2, {fld.name, std::to_string(limit)});
  }
  // Repeated fields: the same per-string limit, and no empty entry (which
  // the encoder would silently drop).
  TempDir out;
  BuildOptions o = Options(out.Join("img"));
  o.manifest.cves = {"CVE-1", std::string(limit + 1, 'c')};
  ExpectRefused(*tree, o, out, {"cve[1]", std::to_string(limit)});
  o.manifest.cves = {"CVE-1", ""};
  ExpectRefused(*tree, o, out, {"cve[1]", "empty"});
  o.manifest.cves.clear();
  o.manifest.requires_patches = {std::string(limit + 1, 'r')};
  ExpectRefused(*tree, o, out, {"requires[0]", std::to_string(limit)});
}

TEST_F(BuilderTest, ManifestRecordCountAtTheLimitBuildsAndOneMoreIsRefused) {
  TempDir src, out, out2;
  WriteFile(src.Join("f"), "x");
  auto tree = ScanDirectory(src.path());
  ASSERT_TRUE(tree.ok());
  BuildOptions o = Options(out.Join("img"));
  // name, version, release counter, created_at: 4 records, then CVEs.
  o.manifest.cves.assign(format::kMaxManifestRecords - 4, "CVE-2024-0001");
  auto st = WriteImage(*tree, o);
  ASSERT_TRUE(st.ok()) << st.status().ToString();
  auto img = Open(out.Join("img"));
  ASSERT_NE(img, nullptr);
  EXPECT_EQ(img->manifest().cves.size(), format::kMaxManifestRecords - 4);
  o.output_path = out2.Join("img");
  o.manifest.cves.push_back("CVE-2024-0002");
  ExpectRefused(*tree, o, out2, {"records", std::to_string(format::kMaxManifestRecords)});
}

TEST_F(BuilderTest, ManifestOfExactlyTheSizeLimitBuildsAndLargerIsRefused) {
  TempDir src, out, out2;
  WriteFile(src.Join("f"), "x");
  auto tree = ScanDirectory(src.path());
  ASSERT_TRUE(tree.ok());
  BuildOptions o = Options(out.Join("img"));
  const size_t limit = format::kMaxManifestBytes;
  const size_t big = format::kMaxManifestStringLen;
  while (o.manifest.Encode().size() + 8 + big <= limit) o.manifest.cves.emplace_back(big, 'c');
  const size_t rest = limit - o.manifest.Encode().size() - 8;  // a multiple of 8
  ASSERT_GT(rest, 0u);
  o.manifest.cves.emplace_back(rest, 'c');
  ASSERT_EQ(o.manifest.Encode().size(), limit);
  auto st = WriteImage(*tree, o);
  ASSERT_TRUE(st.ok()) << st.status().ToString();
  auto img = Open(out.Join("img"));
  ASSERT_NE(img, nullptr);
  EXPECT_TRUE(img->VerifyAll().ok());
  o.output_path = out2.Join("img");
  o.manifest.cves.back().push_back('c');  // the next size: limit + 8
  ExpectRefused(*tree, o, out2, {"encodes to", std::to_string(limit)});
}

// Names, symlink targets and xattrs: a file system cannot hold one over the
// limit (NAME_MAX, PATH_MAX, XATTR_SIZE_MAX are the format's numbers), so the
// writer's own check is exercised with a scanned tree edited past the limit.
TEST_F(BuilderTest, EntryLimitsAtTheLimitBuildAndOverAreRefused) {
  TempDir src(test::TmpfsDir()), out;
  const std::string name(format::kMaxNameLen, 'n');
  WriteFile(src.Join(name), "x");
  const std::string target(format::kMaxSymlinkLen, 't');
  ASSERT_EQ(symlink(target.c_str(), src.Join("sl").c_str()), 0);
  const std::string xname = "user." + std::string(format::kMaxXattrNameLen - 5, 'x');
  const std::string xvalue(format::kMaxXattrValueLen, 'v');
  ASSERT_EQ(lsetxattr(src.Join(name).c_str(), xname.c_str(), xvalue.data(), xvalue.size(), 0), 0)
      << strerror(errno);
  auto tree = ScanDirectory(src.path());
  ASSERT_TRUE(tree.ok()) << tree.status().ToString();
  ASSERT_TRUE(WriteImage(*tree, Options(out.Join("img"))).ok());
  auto img = Open(out.Join("img"));
  ASSERT_NE(img, nullptr);
  EXPECT_TRUE(img->VerifyAll().ok());
  auto sl = img->Resolve("/sl");
  ASSERT_TRUE(sl.ok());
  EXPECT_EQ(*img->ReadLink(sl->ino), target);
  auto file = img->Resolve("/" + name);
  ASSERT_TRUE(file.ok());
  EXPECT_EQ(*img->GetXattr(file->ino, xname), xvalue);

  auto refused = [&](SourceTree t, const std::vector<std::string>& words) {
    TempDir o;
    ExpectRefused(t, Options(o.Join("img")), o, words, Code::kBadSource);
  };
  {
    SourceTree t = *tree;
    for (auto& sn : t.nodes)
      if (sn.name == name) sn.name += 'n';
    refused(t, {"name of 256 bytes", "1..255"});
  }
  {
    SourceTree t = *tree;
    for (auto& sn : t.nodes)
      if (sn.name == "sl") sn.symlink_target += 't', sn.size += 1;
    refused(t, {"/sl", "symlink target of 4096 bytes", "1..4095"});
  }
  {
    SourceTree t = *tree;
    for (auto& sn : t.nodes)
      if (sn.name == name) sn.xattrs[0].first += 'x';
    refused(t, {name, "xattr", "name 1..255"});
  }
  {
    SourceTree t = *tree;
    for (auto& sn : t.nodes)
      if (sn.name == name) sn.xattrs[0].second += 'v';
    refused(t, {name, "xattr", "value 65536"});
  }
  {
    // Per inode: at most 8 MiB of values (128 values of 64 KiB fit, one byte more does not).
    SourceTree t = *tree;
    for (auto& sn : t.nodes) {
      if (sn.name != name) continue;
      sn.xattrs.clear();
      for (int i = 0; i < 128; ++i) {
        sn.xattrs.emplace_back("user." + std::to_string(1000 + i), xvalue);
      }
    }
    TempDir o;
    ASSERT_TRUE(WriteImage(t, Options(o.Join("img"))).ok()) << "8 MiB of values is the limit";
    auto img2 = Open(o.Join("img"));
    ASSERT_NE(img2, nullptr);
    auto f2 = img2->Resolve("/" + name);
    ASSERT_TRUE(f2.ok());
    EXPECT_TRUE(img2->GetXattr(f2->ino, "user.1127").ok());
    for (auto& sn : t.nodes)
      if (sn.name == name) sn.xattrs.emplace_back("user.2000", "v");
    refused(t, {name, "values", std::to_string(format::kMaxXattrValuesBytes)});
  }
  {
    // Extents per file: a file needing more than 2^32-1 chunks.
    SourceTree t = *tree;
    for (auto& sn : t.nodes)
      if (sn.name == name) sn.size = (uint64_t{0xFFFFFFFF} << 17) + 1;
    refused(t, {name, "extents", "4294967295"});
  }
}

// The depth limit: kMaxDirDepth nested directories below the source build
// and verify; one more is refused before anything is written, naming the
// path (prefix) and the limit.
TEST_F(BuilderTest, DirectoryDepthAtTheLimitBuildsAndOneMoreIsRefused) {
  TempDir src(test::TmpfsDir()), out;  // tmpfs: removing 4096 levels is quick
  int fd = test::MakeDeepChain(src.path(), static_cast<int>(format::kMaxDirDepth), "d");
  ASSERT_GE(fd, 0);
  auto tree = ScanDirectory(src.path());
  ASSERT_TRUE(tree.ok()) << tree.status().ToString().substr(0, 300);
  ASSERT_TRUE(WriteImage(*tree, Options(out.Join("img"))).ok());
  auto img = Open(out.Join("img"));
  ASSERT_NE(img, nullptr);
  EXPECT_TRUE(img->VerifyAll().ok());
  std::string path;
  for (uint32_t i = 0; i < format::kMaxDirDepth; ++i) path += "/d";
  EXPECT_EQ(ReadAll(*img, path + "/leaf"), "deep");

  ASSERT_EQ(mkdirat(fd, "d", 0755), 0);
  close(fd);
  auto deeper = ScanDirectory(src.path());
  ASSERT_FALSE(deeper.ok()) << "a tree extract calls corrupt was scanned";
  EXPECT_EQ(deeper.status().code(), Code::kBadSource);
  EXPECT_TRUE(Contains(deeper.status().message(), src.path() + "/d/d/d"))
      << deeper.status().message().substr(0, 400);
  EXPECT_TRUE(Contains(deeper.status().message(), "deeper than 4096"));
  EXPECT_LT(deeper.status().message().size(), 1000u) << "a short message, not an 8 KB path";
  // The writer refuses the same tree made by hand.
  SourceTree t = *tree;
  for (auto& n : t.nodes) {
    if (n.name == "leaf") {
      n = SourceNode{};
      n.name = "d";
      n.mode = S_IFDIR | 0755;
      n.parent = static_cast<uint32_t>(&n - t.nodes.data()) - 1;
    }
  }
  TempDir out2;
  ExpectRefused(t, Options(out2.Join("img")), out2, {"deeper than 4096"}, Code::kBadSource);
}

// The walks are linear in depth: the path components handed to the kernel
// (SourceTree/BuildStats::components_resolved) grow in proportion to the
// tree, also past PATH_MAX -- not with depth squared, as re-resolving each
// path from the root would.
TEST_F(BuilderTest, ScanAndReadsResolveALinearNumberOfPathComponents) {
  auto measure = [&](int depth, uint64_t* scan, uint64_t* read) {
    TempDir src(test::TmpfsDir()), out;
    const int fd = test::MakeDeepChain(src.path(), depth, "d");
    ASSERT_GE(fd, 0);
    close(fd);
    auto tree = ScanDirectory(src.path());
    ASSERT_TRUE(tree.ok()) << tree.status().ToString().substr(0, 300);
    auto st = WriteImage(*tree, Options(out.Join("img")));
    ASSERT_TRUE(st.ok()) << st.status().ToString().substr(0, 300);
    *scan = tree->components_resolved;
    *read = st->components_resolved;
  };
  uint64_t scan1, read1, scan4, read4;
  measure(1000, &scan1, &read1);
  measure(4000, &scan4, &read4);
  // Each level costs a handful of lookups (stat, open, "..", xattrs).
  EXPECT_LT(scan4, 4000u * 16) << "scan: " << scan1 << " at depth 1000";
  EXPECT_LT(read4, 4000u * 4) << "reads: " << read1 << " at depth 1000";
  EXPECT_LT(static_cast<double>(scan4), 4.5 * static_cast<double>(scan1));
  EXPECT_LT(static_cast<double>(read4), 4.5 * static_cast<double>(read1));
}

}  // namespace
}  // namespace cryptex
