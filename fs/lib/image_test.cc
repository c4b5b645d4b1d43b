// Reader tests: images built from real trees (every kind of entry, on a
// tmpfs) are opened with Image::Open and must return exactly the source's
// data and metadata through Resolve/Lookup/ReadDir/GetInode/Read/ReadLink/
// ListXattrs; `fsverity digest` is the oracle for the recorded file digests.
// Then everything that must fail: wrong keys, files that are not (whole)
// images, and one flipped byte anywhere.
#include "image.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <filesystem>
#include <functional>
#include <map>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "builder.h"
#include "format.h"
#include "image_impl.h"
#include "keys.h"
#include "superblock.h"
#include "test_util.h"

namespace cryptex {
namespace {

using test::Contains;

using test::FileSize;
using test::FlipByte;
using test::ReadFile;
using test::RunCommand;
using test::ShellQuote;
using test::TempDir;
using test::WriteFile;

// A signing key and a trust store holding exactly its public half.
struct Signer {
  TempDir dir;
  std::unique_ptr<PrivateKey> key;
  TrustStore trust;
  std::string trust_dir;

  Signer() {
    auto k = PrivateKey::Generate();
    EXPECT_TRUE(k.ok()) << k.status().ToString();
    key = std::make_unique<PrivateKey>(std::move(k).value());
    trust_dir = dir.Join("keys");
    EXPECT_EQ(mkdir(trust_dir.c_str(), 0755), 0);
    EXPECT_TRUE(key->SavePair(trust_dir + "/vendor").ok());
    EXPECT_EQ(unlink((trust_dir + "/vendor").c_str()), 0);  // keep only vendor.pub
    auto t = TrustStore::LoadDir(trust_dir);
    EXPECT_TRUE(t.ok()) << t.status().ToString();
    if (t.ok()) trust = std::move(t).value();
  }
};

BuildOptions Options(const std::string& out, const PrivateKey& key, uint32_t chunk_log2 = 17) {
  BuildOptions o;
  o.output_path = out;
  o.key = &key;
  o.manifest.name = "org.example.test";
  o.manifest.version = "1.2.3";
  o.manifest.release_counter = 42;
  o.manifest.created_at = 1700000000;
  o.chunk_log2 = chunk_log2;
  o.threads = 2;
  return o;
}

BuildStats BuildOrDie(const std::string& src, const BuildOptions& opts) {
  auto tree = ScanDirectory(src);
  EXPECT_TRUE(tree.ok()) << tree.status().ToString();
  if (!tree.ok()) return {};
  auto stats = WriteImage(*tree, opts);
  EXPECT_TRUE(stats.ok()) << stats.status().ToString();
  return stats.ok() ? *stats : BuildStats{};
}

std::unique_ptr<Image> OpenOrDie(const std::string& path, const TrustStore& trust) {
  ImageOptions o;
  o.trust = &trust;
  auto img = Image::Open(path, o);
  EXPECT_TRUE(img.ok()) << img.status().ToString();
  return img.ok() ? std::move(img).value() : nullptr;
}

Status OpenStatus(const std::string& path, const TrustStore& trust) {
  ImageOptions o;
  o.trust = &trust;
  auto img = Image::Open(path, o);
  return img.ok() ? Status::Ok() : img.status();
}

// Open + VerifyAll: the first problem, or Ok.
Status FullCheck(const std::string& path, const TrustStore& trust) {
  ImageOptions o;
  o.trust = &trust;
  auto img = Image::Open(path, o);
  if (!img.ok()) return img.status();
  return (*img)->VerifyAll();
}

std::string ReadAll(const Image& img, uint64_t ino, size_t step = 100003) {
  std::string out;
  std::vector<uint8_t> buf(step);
  for (;;) {
    auto n = img.Read(ino, out.size(), buf);
    EXPECT_TRUE(n.ok()) << n.status().ToString();
    if (!n.ok() || *n == 0) break;
    out.append(reinterpret_cast<const char*>(buf.data()), *n);
  }
  return out;
}

std::string PRead(const std::string& path, uint64_t off, size_t len) {
  std::string out(len, '\0');
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  EXPECT_GE(fd, 0) << path;
  if (fd < 0) return "";
  const ssize_t n = pread(fd, out.data(), len, static_cast<off_t>(off));
  close(fd);
  out.resize(n > 0 ? static_cast<size_t>(n) : 0);
  return out;
}

// What `fsverity digest FILE` prints, as hex.
std::string OracleDigest(const std::string& path) {
  const auto r = RunCommand("fsverity digest " + ShellQuote(path));
  EXPECT_EQ(r.exit_code, 0) << path;
  if (r.out.size() < 7 + 64 || r.out.compare(0, 7, "sha256:") != 0) return "?" + r.out;
  return r.out.substr(7, 64);
}

uint8_t TypeOf(mode_t m) {
  switch (m & S_IFMT) {
    case S_IFREG:
      return format::kTypeRegular;
    case S_IFDIR:
      return format::kTypeDirectory;
    case S_IFLNK:
      return format::kTypeSymlink;
    case S_IFCHR:
      return format::kTypeCharDev;
    case S_IFBLK:
      return format::kTypeBlockDev;
    case S_IFIFO:
      return format::kTypeFifo;
    case S_IFSOCK:
      return format::kTypeSocket;
  }
  return 0;
}

test::XattrList ImageXattrs(const Image& img, uint64_t ino) {
  test::XattrList out;
  auto xs = img.ListXattrs(ino);
  EXPECT_TRUE(xs.ok()) << xs.status().ToString();
  if (!xs.ok()) return out;
  for (const auto& x : *xs) out.emplace_back(x.name, x.value);
  return out;
}

// Walks `src` and checks that `img` holds exactly the same tree. Returns the
// number of entries compared.
size_t ExpectImageMatchesTree(const Image& img, const std::string& src, bool oracle_digests) {
  size_t compared = 0;
  std::map<std::pair<dev_t, ino_t>, uint64_t> src_to_img;
  std::map<std::pair<dev_t, ino_t>, uint64_t> names_in_tree;
  std::map<uint64_t, std::pair<dev_t, ino_t>> img_to_src;
  std::vector<std::pair<std::string, InodeInfo>> regular;  // for the digests

  // First pass: link counts within the tree.
  std::function<void(const std::string&)> count = [&](const std::string& path) {
    struct stat st;
    ASSERT_EQ(lstat(path.c_str(), &st), 0) << path;
    if (!S_ISDIR(st.st_mode)) {
      ++names_in_tree[{st.st_dev, st.st_ino}];
      return;
    }
    for (const auto& n : test::ListDirNames(path)) count(path + "/" + n);
  };
  count(src);

  std::function<void(const std::string&)> walk = [&](const std::string& rel) {
    const std::string path = rel.empty() ? src : src + "/" + rel;
    SCOPED_TRACE("path /" + rel);
    struct stat st;
    ASSERT_EQ(lstat(path.c_str(), &st), 0) << path;
    auto r = img.Resolve("/" + rel);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    const InodeInfo& in = *r;
    ++compared;
    EXPECT_EQ(in.mode, st.st_mode);
    EXPECT_EQ(in.uid, st.st_uid);
    EXPECT_EQ(in.gid, st.st_gid);
    EXPECT_EQ(in.mtime_sec, st.st_mtim.tv_sec);
    EXPECT_EQ(in.mtime_nsec, static_cast<uint32_t>(st.st_mtim.tv_nsec));
    EXPECT_EQ(in.flags, 0u);
    EXPECT_EQ(in.rdev, S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode) ? st.st_rdev : 0);
    EXPECT_EQ(ImageXattrs(img, in.ino), test::GetXattrs(path));
    for (const auto& [name, value] : test::GetXattrs(path)) {
      auto v = img.GetXattr(in.ino, name);
      ASSERT_TRUE(v.ok()) << name << ": " << v.status().ToString();
      EXPECT_EQ(*v, value) << name;
    }
    EXPECT_EQ(img.GetXattr(in.ino, "user.no-such-attribute").status().code(), Code::kNotFound);

    if (S_ISDIR(st.st_mode)) {
      const std::vector<std::string> names = test::ListDirNames(path);
      std::vector<DirEntry> entries;
      ASSERT_TRUE(img.ReadDir(in.ino, 0,
                              [&](const DirEntry& e, uint64_t index) {
                                EXPECT_EQ(index, entries.size());
                                entries.push_back(e);
                                return true;
                              })
                      .ok());
      ASSERT_EQ(entries.size(), names.size());
      EXPECT_EQ(in.size, names.size());
      uint64_t subdirs = 0;
      for (size_t i = 0; i < names.size(); ++i) {
        EXPECT_EQ(entries[i].name, names[i]) << "entry " << i;
        struct stat cst;
        ASSERT_EQ(lstat((path + "/" + names[i]).c_str(), &cst), 0);
        EXPECT_EQ(entries[i].type, TypeOf(cst.st_mode)) << names[i];
        if (S_ISDIR(cst.st_mode)) ++subdirs;
        auto l = img.Lookup(in.ino, names[i]);
        ASSERT_TRUE(l.ok()) << names[i] << ": " << l.status().ToString();
        EXPECT_EQ(l->ino, entries[i].ino);
        EXPECT_EQ(l->type, entries[i].type);
      }
      EXPECT_EQ(in.nlink, 2 + subdirs);
      for (const auto& n : names) walk(rel.empty() ? n : rel + "/" + n);
      return;
    }

    // Hard links: one image inode per source inode, and vice versa.
    const auto key = std::make_pair(st.st_dev, st.st_ino);
    auto [it, fresh] = src_to_img.try_emplace(key, in.ino);
    EXPECT_EQ(it->second, in.ino) << "names of one source inode map to different image inodes";
    auto [rit, rfresh] = img_to_src.try_emplace(in.ino, key);
    EXPECT_TRUE(rit->second == key) << "different source inodes share image inode " << in.ino;
    EXPECT_EQ(in.nlink, names_in_tree[key]);

    if (S_ISREG(st.st_mode)) {
      EXPECT_EQ(in.size, static_cast<uint64_t>(st.st_size));
      if (fresh) {
        const std::string got = ReadAll(img, in.ino);
        EXPECT_TRUE(got == ReadFile(path)) << "content differs (" << got.size() << " bytes read)";
        regular.emplace_back(path, in);
      }
      std::vector<uint8_t> one(1);
      auto eof = img.Read(in.ino, in.size, one);
      ASSERT_TRUE(eof.ok());
      EXPECT_EQ(*eof, 0u);
      EXPECT_FALSE(img.ReadLink(in.ino).ok());
    } else if (S_ISLNK(st.st_mode)) {
      std::string target(8192, '\0');
      const ssize_t n = readlink(path.c_str(), target.data(), target.size());
      ASSERT_GT(n, 0);
      target.resize(static_cast<size_t>(n));
      auto t = img.ReadLink(in.ino);
      ASSERT_TRUE(t.ok()) << t.status().ToString();
      EXPECT_EQ(*t, target);
      EXPECT_EQ(in.size, target.size());
    }
    if (!S_ISREG(st.st_mode)) {
      std::vector<uint8_t> buf(16);
      EXPECT_FALSE(img.Read(in.ino, 0, buf).ok()) << "Read of a non-regular file must fail";
    }
  };
  walk("");

  for (const auto& [path, in] : regular) {
    const std::string mine = HexEncode(in.digest);
    if (oracle_digests) {
      EXPECT_EQ(mine, OracleDigest(path)) << path;
    }
  }
  return compared;
}

// ---- the every-kind tree, built once -----------------------------------------

class EveryKindImage : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    signer_ = new Signer;
    src_ = new TempDir(test::TmpfsDir());
    test::MakeEveryKindTree(src_->path());
    work_ = new TempDir;
    image_ = work_->Join("every.cryptex");
    stats_ = BuildOrDie(src_->path(), Options(image_, *signer_->key));
  }
  static void TearDownTestSuite() {
    delete work_;
    delete src_;
    delete signer_;
  }

  static Signer* signer_;
  static TempDir* src_;
  static TempDir* work_;
  static std::string image_;
  static BuildStats stats_;
};
Signer* EveryKindImage::signer_ = nullptr;
TempDir* EveryKindImage::src_ = nullptr;
TempDir* EveryKindImage::work_ = nullptr;
std::string EveryKindImage::image_;
BuildStats EveryKindImage::stats_;

TEST_F(EveryKindImage, ReturnsExactlyTheSourceTree) {
  auto img = OpenOrDie(image_, signer_->trust);
  ASSERT_NE(img, nullptr);
  const size_t n = ExpectImageMatchesTree(*img, src_->path(), /*oracle_digests=*/true);
  size_t entries = 1;  // the root
  for (auto it = std::filesystem::recursive_directory_iterator(src_->path());
       it != std::filesystem::recursive_directory_iterator(); ++it) {
    ++entries;
  }
  EXPECT_EQ(n, entries) << "every entry was compared";
}

TEST_F(EveryKindImage, VerifyAllPassesAndReportsProgress) {
  auto img = OpenOrDie(image_, signer_->trust);
  ASSERT_NE(img, nullptr);
  uint64_t last = 0, total_seen = 0;
  bool monotonic = true;
  const Status st = img->VerifyAll([&](uint64_t done, uint64_t total) {
    monotonic = monotonic && done >= last && done <= total;
    last = done;
    total_seen = total;
  });
  EXPECT_TRUE(st.ok()) << st.ToString();
  EXPECT_TRUE(monotonic);
  EXPECT_GT(total_seen, 0u);
  EXPECT_EQ(last, total_seen);
  EXPECT_EQ(img->stats().verify_failures.load(), 0u);
  EXPECT_GT(img->stats().blocks_verified.load(), 0u);
}

TEST_F(EveryKindImage, ManifestSuperblockAndCounts) {
  auto img = OpenOrDie(image_, signer_->trust);
  ASSERT_NE(img, nullptr);
  EXPECT_EQ(img->manifest().name, "org.example.test");
  EXPECT_EQ(img->manifest().version, "1.2.3");
  EXPECT_EQ(img->manifest().release_counter, 42u);
  EXPECT_EQ(img->manifest().created_at, 1700000000u);
  EXPECT_EQ(img->signer(), signer_->key->id());
  const SuperblockInfo& sb = img->superblock();
  EXPECT_EQ(sb.kind, format::kKindBase);
  EXPECT_EQ(sb.format_version, format::kFormatVersion);
  EXPECT_EQ(sb.chunk_log2, 17u);
  EXPECT_EQ(sb.created_at, 1700000000u);
  EXPECT_EQ(sb.image_size, FileSize(image_));
  EXPECT_EQ(sb.root_hash, stats_.root_hash);
  EXPECT_EQ(stats_.image_size, FileSize(image_));
  EXPECT_EQ(img->path(), image_);
  EXPECT_EQ(img->root_ino(), 1u);
  auto root = img->GetInode(1);
  ASSERT_TRUE(root.ok());
  EXPECT_TRUE(root->is_dir());

  // One image inode per distinct source inode.
  std::set<std::pair<dev_t, ino_t>> inodes;
  for (const auto& e : std::filesystem::recursive_directory_iterator(src_->path())) {
    struct stat st;
    ASSERT_EQ(lstat(e.path().c_str(), &st), 0);
    inodes.insert({st.st_dev, st.st_ino});
  }
  EXPECT_EQ(img->inode_count(), inodes.size() + 1);
  EXPECT_EQ(img->GetInode(0).status().code(), Code::kNotFound);
  EXPECT_EQ(img->GetInode(img->inode_count() + 1).status().code(), Code::kNotFound);
  EXPECT_TRUE(img->GetInode(img->inode_count()).ok());

  // The builder's own accounting.
  EXPECT_EQ(stats_.files + stats_.directories + stats_.symlinks + stats_.other, img->inode_count());
  EXPECT_EQ(stats_.other, 4u);  // fifo, cdev, bdev, sock
  EXPECT_GT(stats_.dedup_hits, 0u);
  EXPECT_GT(stats_.hole_chunks, 0u);
}

TEST_F(EveryKindImage, ResolveForms) {
  auto img = OpenOrDie(image_, signer_->trust);
  ASSERT_NE(img, nullptr);
  auto want = img->Resolve("/a/b/c/deep");
  ASSERT_TRUE(want.ok()) << want.status().ToString();
  for (const char* p : {"a/b/c/deep", "//a//b/c/deep", "./a/./b/c/deep", "/a/b/c/deep/"}) {
    auto got = img->Resolve(p);
    ASSERT_TRUE(got.ok()) << p << ": " << got.status().ToString();
    EXPECT_EQ(got->ino, want->ino) << p;
  }
  for (const char* p : {"", "/", ".", "//"}) {
    auto got = img->Resolve(p);
    ASSERT_TRUE(got.ok()) << p;
    EXPECT_EQ(got->ino, 1u) << p;
  }
  auto missing = img->Resolve("/a/b/nope");
  EXPECT_EQ(missing.status().code(), Code::kNotFound);
  EXPECT_TRUE(Contains(missing.status().message(), "/a/b/nope")) << missing.status().message();
  EXPECT_FALSE(img->Resolve("/a/..").ok());  // ".." is never an entry
  // Through a regular file, and through a symlink (never followed).
  EXPECT_EQ(img->Resolve("/sizes/f1/x").status().code(), Code::kNotDirectory);
  EXPECT_FALSE(img->Resolve("/link_dir/c").ok());
  auto link = img->Resolve("/link_dir");
  ASSERT_TRUE(link.ok());
  EXPECT_TRUE(link->is_symlink());
  // Lookup/ReadDir on non-directories.
  EXPECT_EQ(img->Lookup(want->ino, "x").status().code(), Code::kNotDirectory);
  EXPECT_EQ(img->ReadDir(want->ino, 0, [](const DirEntry&, uint64_t) { return true; }).code(),
            Code::kNotDirectory);
  EXPECT_FALSE(img->ReadLink(1).ok());
}

TEST_F(EveryKindImage, ConcurrentReadersSeeTheSameBytes) {
  ImageOptions o;
  o.trust = &signer_->trust;
  o.frame_cache_bytes = 0;  // smallest caches: maximal eviction churn
  o.block_cache_bytes = 0;
  auto imgr = Image::Open(image_, o);
  ASSERT_TRUE(imgr.ok()) << imgr.status().ToString();
  const Image& img = **imgr;
  const std::vector<std::string> files = {"dup1",          "text.txt",      "sparse",
                                          "hardlinks/one", "sizes/f393233", "sizes/f131073"};
  std::vector<std::string> want;
  std::vector<uint64_t> inos;
  for (const auto& f : files) {
    want.push_back(ReadFile(src_->Join(f)));
    auto in = img.Resolve(f);
    ASSERT_TRUE(in.ok()) << f;
    inos.push_back(in->ino);
  }
  std::atomic<int> mismatches{0}, errors{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937_64 rng(t);
      std::vector<uint8_t> buf(300000);
      for (int i = 0; i < 300; ++i) {
        const size_t f = rng() % files.size();
        const uint64_t size = want[f].size();
        const uint64_t off = rng() % (size + 1);
        const size_t len = rng() % buf.size();
        auto n = img.Read(inos[f], off, std::span<uint8_t>(buf.data(), len));
        if (!n.ok()) {
          ++errors;
          continue;
        }
        const size_t expect = static_cast<size_t>(std::min<uint64_t>(len, size - off));
        if (*n != expect || std::memcmp(buf.data(), want[f].data() + off, expect) != 0) {
          ++mismatches;
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(errors.load(), 0);
  EXPECT_EQ(mismatches.load(), 0);
}

// ---- random-offset reads across chunk boundaries -----------------------------

TEST(ImageReadTest, RandomOffsetReadsMatchTheSource) {
  Signer signer;
  TempDir src(test::TmpfsDir()), work;
  const uint32_t kChunkLog2 = 14;  // 16 KiB: many chunk boundaries
  const uint64_t kChunk = 1u << kChunkLog2;
  WriteFile(src.Join("random"), test::RandomBytes(37 * kChunk + 1234, 11));
  std::string text;
  for (int i = 0; text.size() < 21 * kChunk + 7; ++i) text += "record " + std::to_string(i) + "\n";
  WriteFile(src.Join("text"), text);
  // Mixed: data chunks, zero chunks (holes) and a repeated chunk (dedup).
  std::string mixed = test::RandomBytes(kChunk, 12) + std::string(3 * kChunk, '\0') +
                      test::RandomBytes(kChunk, 12) + std::string(100, '\0') +
                      test::RandomBytes(kChunk / 2, 13);
  WriteFile(src.Join("mixed"), mixed);
  const std::string image = work.Join("img");
  BuildOrDie(src.path(), Options(image, *signer.key, kChunkLog2));
  auto img = OpenOrDie(image, signer.trust);
  ASSERT_NE(img, nullptr);

  std::mt19937_64 rng(2024);
  for (const char* name : {"random", "text", "mixed"}) {
    SCOPED_TRACE(name);
    const std::string want = ReadFile(src.Join(name));
    auto in = img->Resolve(name);
    ASSERT_TRUE(in.ok());
    ASSERT_EQ(in->size, want.size());
    std::vector<uint8_t> buf(4 * kChunk);
    for (int i = 0; i < 700; ++i) {
      uint64_t off;
      switch (i % 4) {
        case 0:
          off = rng() % (want.size() + 10);
          break;  // anywhere, also past EOF
        case 1:
          off = (rng() % (want.size() / kChunk + 1)) * kChunk - (rng() % 3);
          break;
        case 2:
          off = want.size() - rng() % 5;
          break;  // the tail
        default:
          off = rng() % want.size();
      }
      if (off > want.size() + 10) off = 0;  // underflow of case 1 at chunk 0
      const size_t len = (i % 7 == 0) ? 0 : rng() % buf.size();
      auto n = img->Read(in->ino, off, std::span<uint8_t>(buf.data(), len));
      ASSERT_TRUE(n.ok()) << "offset " << off << " len " << len << ": " << n.status().ToString();
      const size_t expect =
          off >= want.size() ? 0 : static_cast<size_t>(std::min<uint64_t>(len, want.size() - off));
      ASSERT_EQ(*n, expect) << "offset " << off << " len " << len;
      ASSERT_EQ(std::memcmp(buf.data(), want.data() + std::min<uint64_t>(off, want.size()), expect),
                0)
          << "offset " << off << " len " << len;
      // The same range read straight from the source file.
      ASSERT_EQ(std::string(reinterpret_cast<const char*>(buf.data()), expect),
                PRead(src.Join(name), off, len));
    }
  }
}

// Whole chunks of a multi-chunk file are decoded straight into the caller's
// buffer (no frame-cache entry, no copy); partial chunks and packed small
// files go through the cache. Both give the source's bytes, and a corrupt
// block fails either way.
TEST(ImageReadTest, WholeChunksBypassTheFrameCache) {
  Signer signer;
  TempDir src(test::TmpfsDir()), work;
  const uint32_t kChunkLog2 = 14;
  const uint64_t kChunk = 1u << kChunkLog2;
  const std::string big = test::RandomBytes(6 * kChunk + 100, 21);
  std::string text;
  for (int i = 0; text.size() < 4 * kChunk; ++i) text += "line " + std::to_string(i) + "\n";
  WriteFile(src.Join("big"), big);
  WriteFile(src.Join("text"), text);
  WriteFile(src.Join("small"), "packed");
  const std::string image = work.Join("img");
  BuildOrDie(src.path(), Options(image, *signer.key, kChunkLog2));
  auto img = OpenOrDie(image, signer.trust);
  ASSERT_NE(img, nullptr);
  const ImageStats& st = img->stats();

  for (const auto& [name, want] :
       {std::pair<const char*, const std::string&>{"big", big}, {"text", text}}) {
    SCOPED_TRACE(name);
    auto in = img->Resolve(name);
    ASSERT_TRUE(in.ok());
    std::vector<uint8_t> buf(want.size());
    const uint64_t misses = st.frame_cache_misses.load(), hits = st.frame_cache_hits.load();
    auto n = img->Read(in->ino, 0, buf);
    ASSERT_TRUE(n.ok()) << n.status().ToString();
    ASSERT_EQ(*n, want.size());
    EXPECT_EQ(std::string(buf.begin(), buf.end()), want);
    // Only the tail chunk (shorter than a chunk, a frame of its own) and no
    // whole chunk went through the cache.
    EXPECT_LE(st.frame_cache_misses.load() + st.frame_cache_hits.load() - misses - hits, 1u);
    // A read starting inside a chunk uses the cache, same bytes.
    ASSERT_TRUE(img->Read(in->ino, kChunk + 5, std::span<uint8_t>(buf.data(), kChunk)).ok());
    EXPECT_EQ(std::memcmp(buf.data(), want.data() + kChunk + 5, kChunk), 0);
    EXPECT_GT(st.frame_cache_misses.load(), misses);
  }
  auto small = img->Resolve("small");
  ASSERT_TRUE(small.ok());
  std::vector<uint8_t> six(6);
  auto n = img->Read(small->ino, 0, six);
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(std::string(six.begin(), six.end()), "packed");

  // A flipped byte in the big file's first frame: the direct path refuses it.
  auto in = img->Resolve("big");
  ASSERT_TRUE(in.ok());
  // The data region starts with the big file's first frame (content is
  // stored in inode order and "big" sorts first).
  const uint64_t data = img->superblock().regions[format::kRegionData].offset;
  img.reset();
  const std::string bad = work.Join("bad");
  std::filesystem::copy_file(image, bad);
  FlipByte(bad, data + 100);
  auto img2 = OpenOrDie(bad, signer.trust);
  ASSERT_NE(img2, nullptr);
  std::vector<uint8_t> buf(kChunk);
  auto r = img2->Read(in->ino, 0, buf);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Code::kCorruption) << r.status().ToString();
}

// ---- Lookup in a directory of 10,000 entries ---------------------------------

TEST(ImageLookupTest, BinarySearchInTenThousandEntries) {
  Signer signer;
  TempDir src(test::TmpfsDir()), work;
  ASSERT_EQ(mkdir(src.Join("big").c_str(), 0755), 0);
  std::vector<std::string> names;
  std::mt19937_64 rng(7);
  for (int i = 0; i < 10000; ++i) {
    // 40-byte-ish names with a shared prefix, some with bytes >= 0x80 (which
    // must sort as unsigned bytes).
    std::string n = "entry-with-a-fairly-long-common-prefix-" + std::to_string(rng() % 100000000);
    if (i % 10 == 0) n += "\xc3\xa9\xff";
    if (i % 17 == 0) n = "\x80" + n;
    names.push_back(n);
  }
  std::sort(names.begin(), names.end());
  names.erase(std::unique(names.begin(), names.end()), names.end());
  for (size_t i = 0; i < names.size(); ++i) {
    if (i % 3 == 0) {
      ASSERT_EQ(mkdir(src.Join("big/" + names[i]).c_str(), 0700), 0);
    } else {
      WriteFile(src.Join("big/" + names[i]), "");
    }
  }
  const std::string image = work.Join("img");
  BuildOrDie(src.path(), Options(image, *signer.key));
  auto img = OpenOrDie(image, signer.trust);
  ASSERT_NE(img, nullptr);
  auto dir = img->Resolve("big");
  ASSERT_TRUE(dir.ok());
  ASSERT_EQ(dir->size, names.size());

  // Lookup is a binary search: once the directory has been checked (the
  // first access may scan it once), a lookup touches O(log n) blocks, where a
  // linear scan would read every dirent and name block (~140 here). The
  // caches are kept small so that blocks are re-read and counted.
  {
    ImageOptions small;
    small.trust = &signer.trust;
    small.block_cache_bytes = 0;
    small.frame_cache_bytes = 0;
    auto cold = Image::Open(image, small);
    ASSERT_TRUE(cold.ok());
    auto d = (*cold)->Resolve("big");
    ASSERT_TRUE(d.ok());
    ASSERT_TRUE((*cold)->Lookup(d->ino, names[0]).ok());
    const uint64_t before = (*cold)->stats().blocks_verified.load();
    for (size_t i = 0; i < 100; ++i) {
      ASSERT_TRUE((*cold)->Lookup(d->ino, names[(i * 7919) % names.size()]).ok());
    }
    EXPECT_LE((*cold)->stats().blocks_verified.load() - before, 100u * 30)
        << "blocks verified for 100 lookups";
  }

  std::vector<DirEntry> listed;
  ASSERT_TRUE(img->ReadDir(dir->ino, 0,
                           [&](const DirEntry& e, uint64_t) {
                             listed.push_back(e);
                             return true;
                           })
                  .ok());
  ASSERT_EQ(listed.size(), names.size());
  for (size_t i = 0; i < names.size(); ++i) {
    ASSERT_EQ(listed[i].name, names[i]) << i;
    auto e = img->Lookup(dir->ino, names[i]);
    ASSERT_TRUE(e.ok()) << names[i] << ": " << e.status().ToString();
    ASSERT_EQ(e->ino, listed[i].ino);
    ASSERT_EQ(e->type, i % 3 == 0 ? format::kTypeDirectory : format::kTypeRegular);
  }
  // Absent names: before the first, after the last, between neighbours,
  // prefixes and extensions of present names.
  const std::vector<std::string> absent = {"",
                                           "!",
                                           "entry",
                                           names.front().substr(0, names.front().size() - 1),
                                           names.front() + "0",
                                           names[5000] + std::string(1, '\0'),
                                           names[5000] + "~",
                                           "\xff\xff\xff",
                                           "zzz",
                                           names.back() + "x"};
  for (const auto& n : absent) {
    if (std::binary_search(names.begin(), names.end(), n)) continue;
    EXPECT_EQ(img->Lookup(dir->ino, n).status().code(), Code::kNotFound) << n;
  }
  // ReadDir from an index, and stopping early.
  std::vector<std::pair<std::string, uint64_t>> tail;
  ASSERT_TRUE(img->ReadDir(dir->ino, names.size() - 3,
                           [&](const DirEntry& e, uint64_t i) {
                             tail.emplace_back(e.name, i);
                             return true;
                           })
                  .ok());
  ASSERT_EQ(tail.size(), 3u);
  EXPECT_EQ(tail[0], std::make_pair(names[names.size() - 3], uint64_t{names.size() - 3}));
  int calls = 0;
  ASSERT_TRUE(
      img->ReadDir(dir->ino, 0, [&](const DirEntry&, uint64_t) { return ++calls < 5; }).ok());
  EXPECT_EQ(calls, 5);
  int none = 0;
  ASSERT_TRUE(img->ReadDir(dir->ino, names.size(),
                           [&](const DirEntry&, uint64_t) {
                             ++none;
                             return true;
                           })
                  .ok());
  EXPECT_EQ(none, 0);
}

// ---- directory entry ranges: one owner per entry ------------------------------

// The reader's record of which directory lists which entries (image_impl.h):
// a range is refused, naming the owner, if it shares any entry with another
// directory's, whether it starts before, inside or at the same place.
TEST(DirClaimsTest, EntryRangesNeverOverlap) {
  image_internal::DirClaims c;
  EXPECT_EQ(c.ClaimRange(2, 10, 5), 0u);  // dir 2: [10, 15)
  EXPECT_EQ(c.ClaimRange(2, 10, 5), 0u) << "the owner again: idempotent";
  EXPECT_EQ(c.ClaimRange(3, 10, 5), 2u) << "the same range";
  EXPECT_EQ(c.ClaimRange(3, 14, 1), 2u) << "the owner's last entry";
  EXPECT_EQ(c.ClaimRange(3, 11, 2), 2u) << "inside";
  EXPECT_EQ(c.ClaimRange(3, 8, 3), 2u) << "straddles the owner's first entry";
  EXPECT_EQ(c.ClaimRange(3, 0, 100), 2u) << "contains the owner's range";
  EXPECT_EQ(c.ClaimRange(2, 10, 4), 2u) << "the owner with another range";
  EXPECT_EQ(c.ClaimRange(3, 15, 0), 0u) << "empty ranges own nothing";
  EXPECT_EQ(c.ClaimRange(4, 12, 0), 0u);
  EXPECT_EQ(c.FirstUnclaimedEntry(20), 0u);
  EXPECT_EQ(c.ClaimRange(3, 0, 10), 0u);  // [0, 10): adjacent below
  EXPECT_EQ(c.FirstUnclaimedEntry(20), 15u);
  EXPECT_EQ(c.FirstUnclaimedEntry(12), 12u);
  EXPECT_EQ(c.ClaimRange(4, 15, 5), 0u);  // [15, 20): adjacent above
  EXPECT_EQ(c.FirstUnclaimedEntry(20), 20u);
  EXPECT_EQ(c.ClaimRange(5, 19, 3), 4u) << "straddles the last entry of the highest range";
  EXPECT_EQ(c.ClaimRange(5, 25, 1), 0u);
  EXPECT_EQ(c.FirstUnclaimedEntry(30), 20u) << "the gap before entry 25";
}

// ---- files that are not (whole) images ----------------------------------------

class ImageOpenErrors : public ::testing::Test {
 protected:
  void SetUp() override {
    WriteFile(src_.Join("file"), test::RandomBytes(300000, 3));
    image_ = work_.Join("good.cryptex");
    BuildOrDie(src_.path(), Options(image_, *signer_.key));
    good_ = ReadFile(image_);
  }
  // Writes `bytes` to a new file and returns Open's status for it.
  Status OpenBytes(const std::string& name, const std::string& bytes) {
    const std::string p = work_.Join(name);
    WriteFile(p, bytes);
    return OpenStatus(p, signer_.trust);
  }
  void ExpectRefused(const std::string& name, const std::string& bytes, Code code,
                     const std::string& words) {
    SCOPED_TRACE(name);
    const Status st = OpenBytes(name, bytes);
    EXPECT_EQ(st.code(), code) << st.ToString();
    EXPECT_TRUE(Contains(st.message(), work_.Join(name))) << "must name the file: " << st.message();
    EXPECT_TRUE(Contains(st.message(), words)) << st.message();
    EXPECT_EQ(st.message().find('\n'), std::string::npos) << "one line: " << st.message();
  }

  Signer signer_;
  TempDir src_, work_;
  std::string image_, good_;
};

TEST_F(ImageOpenErrors, GoodImageOpens) { EXPECT_TRUE(FullCheck(image_, signer_.trust).ok()); }

TEST_F(ImageOpenErrors, NotWholeImages) {
  const size_t n = good_.size();
  ExpectRefused("empty", "", Code::kCorruption, "not a cryptex image");
  ExpectRefused("garbage", test::RandomBytes(65536, 99), Code::kCorruption, "not a cryptex image");
  ExpectRefused("text", std::string(20000, 'x') + "\n", Code::kCorruption, "not a cryptex image");
  ExpectRefused("header-only", good_.substr(0, 4096), Code::kCorruption, "not a cryptex image");
  ExpectRefused("truncated-1", good_.substr(0, n - 1), Code::kCorruption, "");
  ExpectRefused("truncated-block", good_.substr(0, n - 4096), Code::kCorruption, "");
  ExpectRefused("truncated-half", good_.substr(0, n / 2), Code::kCorruption, "");
  ExpectRefused("appended-1", good_ + "x", Code::kCorruption, "");
  ExpectRefused("appended-block", good_ + std::string(4096, '\0'), Code::kCorruption, "");
  // The signed last block repeated: a valid signature, but the recorded size
  // no longer matches the file.
  ExpectRefused("appended-superblock", good_ + good_.substr(n - 4096), Code::kCorruption,
                "appended");
  // The superblock block moved to the front (size check passes, magic fails).
  ExpectRefused("no-superblock-at-end", good_.substr(n - 4096) + good_.substr(0, n - 4096),
                Code::kCorruption, "");
}

TEST_F(ImageOpenErrors, NotAFileOrMissing) {
  const Status missing = OpenStatus(work_.Join("nope"), signer_.trust);
  EXPECT_EQ(missing.code(), Code::kNotFound) << missing.ToString();
  EXPECT_TRUE(Contains(missing.message(), work_.Join("nope")));
  const Status dir = OpenStatus(work_.path(), signer_.trust);
  EXPECT_FALSE(dir.ok());
  EXPECT_TRUE(Contains(dir.message(), work_.path())) << dir.message();
  ImageOptions no_trust;
  EXPECT_EQ(Image::Open(image_, no_trust).status().code(), Code::kInvalidArgument);
}

TEST_F(ImageOpenErrors, WrongKeyNamesTheKeyAndTheTrustStore) {
  Signer other;
  const Status st = OpenStatus(image_, other.trust);
  EXPECT_EQ(st.code(), Code::kSignature) << st.ToString();
  const std::string id = HexEncode(signer_.key->id()).substr(0, 16);
  EXPECT_TRUE(Contains(st.message(), id))
      << "must name the signer's key id " << id << ": " << st.message();
  EXPECT_TRUE(Contains(st.message(), other.trust_dir)) << st.message();
  EXPECT_TRUE(Contains(st.message(), image_)) << st.message();
}

TEST_F(ImageOpenErrors, UnsignedImage) {
  std::string unsigned_image = good_;
  std::memset(unsigned_image.data() + unsigned_image.size() - 4096 + 512, 0, 128);
  ExpectRefused("unsigned", unsigned_image, Code::kSignature, "not signed");
}

// ---- tampering --------------------------------------------------------------

// A tree whose image (4 KiB chunks, large manifest) has every region spanning
// several blocks, so that each region owns blocks of its own.
void MakeLargeMetadataTree(const std::string& dir) {
  WriteFile(dir + "/big", test::RandomBytes(2 << 20, 21));  // 512 frames and extents
  const int fd = open((dir + "/sparse").c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(pwrite(fd, "head", 4, 0), 4);
  ASSERT_EQ(ftruncate(fd, 8 << 20), 0);  // 2048 extents, mostly holes
  close(fd);
  ASSERT_EQ(mkdir((dir + "/d").c_str(), 0755), 0);
  for (int i = 0; i < 2000; ++i) {
    char name[32];
    std::snprintf(name, sizeof name, "file%04d", i);
    const std::string p = dir + "/d/" + name;
    WriteFile(p, "content of " + std::string(name) + "\n");
    if (i % 3 == 0) {
      const std::string v = "value " + std::to_string(i);
      ASSERT_EQ(setxattr(p.c_str(), "user.x", v.data(), v.size(), 0), 0) << p;
    }
  }
  ASSERT_EQ(symlink("d/file0001", (dir + "/link").c_str()), 0);
}

class TamperTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    signer_ = new Signer;
    work_ = new TempDir;
    TempDir src(test::TmpfsDir());
    MakeLargeMetadataTree(src.path());
    image_ = work_->Join("good.cryptex");
    BuildOptions o = Options(image_, *signer_->key, 12);
    o.manifest.name = std::string(4000, 'n');
    o.manifest.version = std::string(4000, 'v');
    o.manifest.description = std::string(4000, 'd');
    BuildOrDie(src.path(), o);
  }
  static void TearDownTestSuite() {
    delete work_;
    delete signer_;
  }
  void SetUp() override {
    copy_ = work_->Join("copy.cryptex");
    unlink(copy_.c_str());
    std::filesystem::copy_file(image_, copy_);
    auto img = OpenOrDie(image_, signer_->trust);
    ASSERT_NE(img, nullptr);
    sb_ = img->superblock();
  }

  // An offset in the middle of a block that lies in region `r` only.
  uint64_t OffsetOwnedBy(uint32_t r) {
    const RegionInfo& reg = sb_.regions[r];
    std::vector<uint64_t> candidates;
    for (uint64_t b = reg.offset / 4096; b * 4096 < reg.offset + reg.length; ++b) {
      bool others = b == 0;
      for (uint32_t o = 0; o < format::kRegionCount; ++o) {
        const RegionInfo& x = sb_.regions[o];
        if (o != r && x.length > 0 && x.offset < (b + 1) * 4096 && x.offset + x.length > b * 4096) {
          others = true;
        }
      }
      const uint64_t mid = b * 4096 + 2048;
      if (!others && mid >= reg.offset && mid < reg.offset + reg.length) candidates.push_back(mid);
    }
    EXPECT_FALSE(candidates.empty())
        << "fixture too small: region " << format::RegionName(r) << " owns no block";
    return candidates.empty() ? reg.offset : candidates[candidates.size() / 2];
  }

  void ExpectDetected(uint64_t offset, const std::string& words) {
    SCOPED_TRACE("byte at offset " + std::to_string(offset));
    FlipByte(copy_, offset);
    const Status st = FullCheck(copy_, signer_->trust);
    EXPECT_TRUE(st.code() == Code::kCorruption || st.code() == Code::kSignature) << st.ToString();
    EXPECT_TRUE(Contains(st.message(), words)) << "expected '" << words << "' in: " << st.message();
    EXPECT_TRUE(Contains(st.message(), copy_)) << st.message();
    FlipByte(copy_, offset);
    ASSERT_TRUE(FullCheck(copy_, signer_->trust).ok());
  }

  static Signer* signer_;
  static TempDir* work_;
  static std::string image_;
  std::string copy_;
  SuperblockInfo sb_;
};
Signer* TamperTest::signer_ = nullptr;
TempDir* TamperTest::work_ = nullptr;
std::string TamperTest::image_;

TEST_F(TamperTest, EveryRegionNamesItself) {
  ExpectDetected(20, "region header");
  ExpectDetected(3000, "region header");
  for (uint32_t r = 0; r < format::kRegionCount; ++r) {
    ExpectDetected(OffsetOwnedBy(r), std::string("region ") + format::RegionName(r));
  }
}

TEST_F(TamperTest, HashTree) {
  ASSERT_GE(sb_.hash_blocks, 2u);
  ExpectDetected(sb_.hash_offset + 5, "hash-tree");                              // top block
  ExpectDetected(sb_.hash_offset + sb_.hash_blocks * 4096 - 4096, "hash-tree");  // a leaf block
  ExpectDetected(sb_.hash_offset + sb_.hash_blocks * 2048 + 17, "hash-tree");
}

TEST_F(TamperTest, SuperblockAndSignature) {
  const uint64_t last = sb_.image_size - 4096;
  // Signed superblock fields: version, sizes, salt, root hash, a region
  // offset, created_at, reserved bytes.
  for (uint64_t off : {8, 48, 56, 90, 125, 160, 290, 400, 511}) {
    ExpectDetected(last + off, "signature");
  }
  // Signature block: the signature bytes themselves.
  for (uint64_t off : {512 + 48, 512 + 80, 512 + 111}) ExpectDetected(last + off, "signature");
  // The key id: now signed by an unknown key, named.
  ExpectDetected(last + 512 + 16, "unknown key");
  // Magic numbers.
  ExpectDetected(last + 0, "not a cryptex image");
  ExpectDetected(last + 512, "not signed");
}

// Every byte of the file is either signed, covered by the tree, or checked to
// be zero: two different files can never both verify as the same image.
TEST_F(TamperTest, NoByteOfTheLastBlockIsIgnored) {
  const uint64_t last = sb_.image_size - 4096;
  std::vector<uint64_t> accepted;
  for (uint64_t off = 512 + 112; off < 4096; ++off) {
    FlipByte(copy_, last + off);
    if (OpenStatus(copy_, signer_->trust).ok()) accepted.push_back(off);
    FlipByte(copy_, last + off);
  }
  EXPECT_TRUE(accepted.empty()) << accepted.size()
                                << " bytes of the last block (signature reserved bytes and "
                                   "trailing zeros, from offset "
                                << (accepted.empty() ? 0 : accepted.front())
                                << " of the block) can be changed and the image still opens";
}

TEST_F(TamperTest, RandomSingleByteFlipsAreAllDetected) {
  const uint64_t covered_end = sb_.image_size - 4096 + 512 + 112;  // see the test above
  std::mt19937_64 rng(5);
  int undetected = 0;
  for (int i = 0; i < 150; ++i) {
    const uint64_t off = rng() % covered_end;
    const uint8_t mask = static_cast<uint8_t>(1u << (rng() % 8));
    FlipByte(copy_, off, mask);
    const Status st = FullCheck(copy_, signer_->trust);
    if (st.ok()) {
      ++undetected;
      ADD_FAILURE() << "bit flip at offset " << off << " mask " << int{mask} << " not detected";
    } else {
      EXPECT_TRUE(st.code() == Code::kCorruption || st.code() == Code::kSignature ||
                  st.code() == Code::kUnsupported)
          << st.ToString();
    }
    FlipByte(copy_, off, mask);
  }
  EXPECT_EQ(undetected, 0);
}

// A valid block moved to another position must fail (blocks are bound to
// their position by the tree).
TEST_F(TamperTest, SwappedDataBlocksAreDetected) {
  const RegionInfo& data = sb_.regions[format::kRegionData];
  const uint64_t a = (data.offset / 4096 + 3) * 4096, b = a + 5 * 4096;
  ASSERT_LT(b + 4096, data.offset + data.length);
  std::string bytes = ReadFile(copy_);
  ASSERT_NE(bytes.substr(a, 4096), bytes.substr(b, 4096));
  std::string blk = bytes.substr(a, 4096);
  bytes.replace(a, 4096, bytes.substr(b, 4096));
  bytes.replace(b, 4096, blk);
  WriteFile(copy_, bytes);
  const Status st = FullCheck(copy_, signer_->trust);
  EXPECT_EQ(st.code(), Code::kCorruption) << st.ToString();
  EXPECT_TRUE(Contains(st.message(), "region data")) << st.message();
}

// Corruption found while serving reads: the read fails, never returns wrong
// bytes, and other files stay readable.
TEST_F(TamperTest, CorruptBlockFailsOnlyTheReadsThatNeedIt) {
  auto img = OpenOrDie(copy_, signer_->trust);
  ASSERT_NE(img, nullptr);
  auto big = img->Resolve("big");
  auto link = img->Resolve("link");
  ASSERT_TRUE(big.ok() && link.ok());
  // "big" is the first file: its content starts the data region, one chunk
  // per 4 KiB block (random data is stored uncompressed).
  const RegionInfo& data = sb_.regions[format::kRegionData];
  FlipByte(copy_, data.offset + 10 * 4096 + 100);
  std::vector<uint8_t> buf(4096);
  auto bad = img->Read(big->ino, 10 * 4096, buf);
  EXPECT_EQ(bad.status().code(), Code::kCorruption) << bad.status().ToString();
  EXPECT_TRUE(Contains(bad.status().message(), copy_)) << bad.status().message();
  EXPECT_GE(img->stats().verify_failures.load(), 1u);
  auto whole = img->Read(big->ino, 0, std::span<uint8_t>(buf.data(), 4096));
  EXPECT_TRUE(whole.ok()) << "an intact chunk stays readable: " << whole.status().ToString();
  auto t = img->ReadLink(link->ino);
  EXPECT_TRUE(t.ok());
  EXPECT_EQ(img->Read(big->ino, 10 * 4096, buf).status().code(), Code::kCorruption)
      << "a failed block must not be cached as good";
  EXPECT_FALSE(img->VerifyAll().ok());
}

}  // namespace
}  // namespace cryptex
