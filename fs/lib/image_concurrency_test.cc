// Concurrent reads through one Image with tiny caches: 8 threads read
// overlapping files (random offsets and lengths, so frames and metadata
// blocks are evicted and re-verified constantly), list and look up the same
// directories (first-use directory checks race), and read xattrs and
// symlinks. Every result must equal the source. Run under TSan by the
// CRYPTEX_TSAN build (see tests/fuzz/README.md).
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <map>
#include <random>
#include <thread>

#include "builder.h"
#include "image.h"
#include "test_util.h"

namespace cryptex {
namespace {

class ImageConcurrencyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string src = dir_.Join("src");
    ASSERT_EQ(mkdir(src.c_str(), 0755), 0);
    // 24 files over 3 directories, 0..300 KiB; some share content (dedup),
    // some have zero runs (holes).
    for (int d = 0; d < 3; ++d) {
      const std::string sub = src + "/d" + std::to_string(d);
      ASSERT_EQ(mkdir(sub.c_str(), 0755), 0);
      for (int f = 0; f < 8; ++f) {
        const size_t size = static_cast<size_t>((f * 37 + d * 11) % 300) * 1024 + f * 13;
        std::string content = test::RandomBytes(size, static_cast<uint64_t>(d * 100 + f % 5));
        if (f % 3 == 0 && size > 20000)
          std::fill(content.begin() + 4096, content.begin() + 16384, '\0');
        // Appended, not `"d" + std::to_string(d)`: GCC 12 at -O3 reports a
        // false -Wrestrict there (GCC bug 105329).
        std::string rel = "d";
        rel += std::to_string(d) + "/f" + std::to_string(f);
        test::WriteFile(src + "/" + rel, content);
        files_[rel] = std::move(content);
      }
    }
    ASSERT_EQ(symlink("d0/f1", (src + "/link").c_str()), 0);
    auto trust = test::SealForTest(src, dir_.Join("img.cryptex"), 14, "concurrency");
    ASSERT_TRUE(trust.ok()) << trust.status().ToString();
    trust_ = std::move(*trust);
  }

  test::TempDir dir_;
  std::map<std::string, std::string> files_;
  std::unique_ptr<TrustStore> trust_;
};

TEST_F(ImageConcurrencyTest, EightThreadsTinyCaches) {
  ImageOptions opts;
  opts.trust = trust_.get();
  opts.frame_cache_bytes = 256u << 10;
  opts.block_cache_bytes = 64u << 10;
  auto img = Image::Open(dir_.Join("img.cryptex"), opts);
  ASSERT_TRUE(img.ok()) << img.status().ToString();
  const Image& image = **img;
  std::vector<std::string> names;
  for (const auto& [name, content] : files_) names.push_back(name);

  constexpr int kThreads = 8;
  constexpr int kOpsPerThread = 1000;
  std::atomic<int> mismatches{0}, errors{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937_64 rng(static_cast<uint64_t>(t) * 7919 + 1);
      std::vector<uint8_t> buf;
      for (int op = 0; op < kOpsPerThread; ++op) {
        // Overlap: threads pick from a window of files that slides slowly,
        // so at any time several threads hit the same frames.
        const std::string& name = names[(op / 40 + rng() % 4) % names.size()];
        const std::string& want = files_.at(name);
        if (op % 50 == t) {  // directory traffic: lookups and listings race
          auto dir = image.Resolve(name.substr(0, 2));
          if (!dir.ok()) {
            ++errors;
            continue;
          }
          int count = 0;
          Status st = image.ReadDir(dir->ino, 0, [&](const DirEntry&, uint64_t) {
            ++count;
            return true;
          });
          if (!st.ok() || count != 8) ++errors;
          auto link = image.Resolve("link");
          if (!link.ok()) {
            ++errors;
            continue;
          }
          auto target = image.ReadLink(link->ino);
          if (!target.ok() || *target != "d0/f1") ++mismatches;
          continue;
        }
        auto in = image.Resolve(name);
        if (!in.ok()) {
          ++errors;
          continue;
        }
        if (in->size != want.size()) {
          ++mismatches;
          continue;
        }
        const uint64_t off = want.empty() ? 0 : rng() % want.size();
        const size_t len = static_cast<size_t>(rng() % (96u << 10)) + 1;
        buf.assign(len, 0xCC);
        auto n = image.Read(in->ino, off, buf);
        if (!n.ok()) {
          ++errors;
          continue;
        }
        const size_t expect = static_cast<size_t>(std::min<uint64_t>(len, want.size() - off));
        if (*n != expect || std::memcmp(buf.data(), want.data() + off, expect) != 0) ++mismatches;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(errors.load(), 0);
  EXPECT_EQ(mismatches.load(), 0);
  EXPECT_EQ(image.stats().verify_failures.load(), 0u);
  EXPECT_GT(image.stats().frame_cache_misses.load(), 0u);

  // Full reads afterwards still match, and the full check passes.
  for (const auto& [name, want] : files_) {
    auto in = image.Resolve(name);
    ASSERT_TRUE(in.ok());
    std::vector<uint8_t> all(want.size() + 1);
    auto n = image.Read(in->ino, 0, all);
    ASSERT_TRUE(n.ok());
    ASSERT_EQ(*n, want.size());
    EXPECT_EQ(std::memcmp(all.data(), want.data(), want.size()), 0) << name;
  }
  EXPECT_TRUE(image.VerifyAll().ok());
}

// Threads that want the same frame at once (the pieces of one large read;
// a patched file's neighbouring segments reading their lower bytes) decode
// it once: the others wait for it. Each round, 8 threads start together on
// a part of one chunk that nobody has read (a part: a whole chunk is decoded
// straight into the reader's buffer, past the cache).
TEST_F(ImageConcurrencyTest, AFrameWantedByManyThreadsIsDecodedOnce) {
  ImageOptions opts;
  opts.trust = trust_.get();
  auto img = Image::Open(dir_.Join("img.cryptex"), opts);
  ASSERT_TRUE(img.ok()) << img.status().ToString();
  const Image& image = **img;
  const std::string& want = files_.at("d2/f7");  // 12 chunks of 16 KiB
  auto in = image.Resolve("d2/f7");
  ASSERT_TRUE(in.ok());
  constexpr int kThreads = 8;
  constexpr uint64_t kChunk = 16u << 10;
  int rounds = 0;
  for (uint64_t chunk = 0; (chunk + 1) * kChunk <= want.size(); ++chunk, ++rounds) {
    const uint64_t misses = image.stats().frame_cache_misses.load();
    std::atomic<int> ready{0}, bad{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t) {
      threads.emplace_back([&, t] {
        std::vector<uint8_t> buf(100);
        const uint64_t off = chunk * kChunk + 1000 + static_cast<uint64_t>(t) * 100;
        ++ready;
        while (ready.load() < kThreads) {
        }
        auto n = image.Read(in->ino, off, buf);
        if (!n.ok() || *n != buf.size() || std::memcmp(buf.data(), want.data() + off, 100) != 0) {
          ++bad;
        }
      });
    }
    for (auto& th : threads) th.join();
    EXPECT_EQ(bad.load(), 0) << "chunk " << chunk;
    EXPECT_EQ(image.stats().frame_cache_misses.load() - misses, 1u) << "chunk " << chunk;
  }
  EXPECT_GE(rounds, 10);
}

}  // namespace
}  // namespace cryptex
