// The first-access pass of PatchedFile on several threads (patched_file.h):
// the target bytes, the cached segments and, on corruption, the error are
// those of the pass on one thread, whichever thread finds what first.
#include "patched_file.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "delta.h"
#include "fsverity.h"
#include "test_util.h"

namespace cryptex {
namespace {

constexpr uint32_t kSegLog2 = 14;               // 16 KiB segments
constexpr uint64_t kPiece = 256 * 1024;         // patched_file.cc's kPieceBytes
constexpr uint64_t kTargetBytes = 1200 * 1024;  // 5 pieces, the last one short

std::span<const uint8_t> U8(const std::string& s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

// A lower file, a target made from it (scattered edits, an insertion so
// copies seek, a tail ending mid-block) and the delta between them.
struct Fixture {
  std::string lower, target;
  std::vector<uint8_t> delta;

  Fixture() {
    lower = test::RandomBytes(kTargetBytes, 11);
    target = lower.substr(0, 400000) + test::RandomBytes(3000, 12) + lower.substr(400000);
    target.resize(kTargetBytes - 1234);
    for (size_t off = 333; off < target.size(); off += 5000) target[off] ^= 0x5A;
    DeltaOptions o;
    o.segment_log2 = kSegLog2;
    o.zstd_level = 1;
    o.elf_references = false;
    auto d = EncodeDelta(U8(lower), U8(target), o);
    EXPECT_TRUE(d.ok()) << d.status().ToString();
    if (d.ok()) delta = std::move(d).value();
  }
};

// Made once per process (encoding is slow under the sanitizers).
const Fixture& TheFixture() {
  static const Fixture fx;
  return fx;
}

// A source reading `delta` and `lower` (copied: tests change them); `lower_hook`
// runs before every lower read and may fail it.
struct Source {
  std::vector<uint8_t> delta;
  std::string lower;
  std::function<Status(uint64_t, size_t)> lower_hook;

  PatchedFileSource Make(const std::string& context, uint64_t size, const Digest& digest) const {
    PatchedFileSource s;
    s.context = context;
    s.size = size;
    s.digest = digest;
    s.delta_size = delta.size();
    s.read_delta = [this](uint64_t off, std::span<uint8_t> out) {
      std::memcpy(out.data(), delta.data() + off, out.size());
      return Status::Ok();
    };
    s.lower_size = lower.size();
    s.read_lower = [this](uint64_t off, std::span<uint8_t> out) {
      if (lower_hook) CX_RETURN_IF_ERROR(lower_hook(off, out.size()));
      std::memcpy(out.data(), lower.data() + off, out.size());
      return Status::Ok();
    };
    return s;
  }
};

// Reads the whole file in odd-sized pieces: its bytes, or the first error.
Result<std::string> ReadAll(const PatchedFile& f) {
  std::string got(f.size(), '\0');
  for (uint64_t off = 0; off < got.size(); off += 70000) {
    const size_t n = std::min<size_t>(70000, got.size() - off);
    CX_ASSIGN_OR_RETURN(size_t r, f.Read(off, {reinterpret_cast<uint8_t*>(got.data()) + off, n}));
    if (r != n) return Status::Internal("short read at " + std::to_string(off));
  }
  return got;
}

// The status of a cold read of the first block with `threads` pass threads.
Status ColdStatus(const Source& src, const std::string& target, unsigned threads) {
  SegmentCache cache(64 << 20);
  PatchedFileEnv env{nullptr, &cache, 1};
  env.pass_threads = threads;
  PatchedFile f(src.Make("test: par", target.size(), FsVerityDigest(target.data(), target.size())),
                env);
  std::vector<uint8_t> buf(4096);
  return f.Read(0, buf).status();
}

// "target offset N" of a delta segment error.
uint64_t TargetOffsetIn(const std::string& msg) {
  const size_t at = msg.find("target offset ");
  return at == std::string::npos ? UINT64_MAX : std::stoull(msg.substr(at + 14));
}

// A cold read on several threads yields the target, decodes each segment
// once (all of them are kept for the cache), and runs on more than one
// thread: piece 0's first lower read waits until another thread has read
// the lower file too.
TEST(PatchedFileParallelTest, ConcurrentPassYieldsTheTarget) {
  const Fixture& fx = TheFixture();
  const Digest digest = FsVerityDigest(fx.target.data(), fx.target.size());
  const uint64_t segments = (fx.target.size() + (1u << kSegLog2) - 1) >> kSegLog2;
  for (unsigned threads : {1u, 2u, 4u}) {
    Source src{fx.delta, fx.lower, nullptr};
    std::mutex mu;
    std::condition_variable cv;
    std::set<std::thread::id> readers;
    bool gave_up = false;  // waited once in vain: do not wait again
    src.lower_hook = [&](uint64_t, size_t) {
      std::unique_lock<std::mutex> lock(mu);
      readers.insert(std::this_thread::get_id());
      cv.notify_all();
      if (threads > 1 && !gave_up &&
          !cv.wait_for(lock, std::chrono::seconds(20), [&] { return readers.size() > 1; })) {
        gave_up = true;
      }
      return Status::Ok();
    };
    PatchedFileStats stats;
    SegmentCache cache(64 << 20);
    PatchedFileEnv env{&stats, &cache, 1};
    env.pass_threads = threads;
    PatchedFile f(src.Make("test: par", fx.target.size(), digest), env);
    auto got = ReadAll(f);
    ASSERT_TRUE(got.ok()) << got.status().ToString();
    EXPECT_TRUE(*got == fx.target) << threads << " threads";
    EXPECT_EQ(stats.trees_built.load(), 1u);
    EXPECT_EQ(stats.segments_decoded.load(), segments) << threads << " threads";
    EXPECT_EQ(stats.verify_failures.load(), 0u);
    std::lock_guard<std::mutex> lock(mu);
    EXPECT_EQ(readers.size() > 1, threads > 1) << threads << " threads";
    EXPECT_EQ(stats.pass_helpers.load(), threads - 1) << threads << " threads";
  }
}

// A pass over one piece, or over nothing, starts no thread.
TEST(PatchedFileParallelTest, SmallFilesStartNoThread) {
  const std::string lower = test::RandomBytes(kPiece + 9000, 21);  // small: TSan encodes slowly
  for (const uint64_t size : {uint64_t{0}, uint64_t{5000}, kPiece}) {
    std::string target = lower.substr(100, size);
    for (size_t off = 7; off < target.size(); off += 3000) target[off] ^= 0x21;
    DeltaOptions o;
    o.segment_log2 = kSegLog2;
    o.zstd_level = 1;
    o.elf_references = false;
    auto delta = EncodeDelta(U8(lower), U8(target), o);
    ASSERT_TRUE(delta.ok());
    const Source src{*delta, lower, nullptr};
    PatchedFileStats stats;
    PatchedFileEnv env{&stats, nullptr, 1};
    env.pass_threads = 4;
    PatchedFile f(
        src.Make("test: small", target.size(), FsVerityDigest(target.data(), target.size())), env);
    ASSERT_TRUE(f.Leaves().ok()) << size;  // the pass, even for an empty file
    auto got = ReadAll(f);
    ASSERT_TRUE(got.ok()) << got.status().ToString();
    EXPECT_TRUE(*got == target) << size;
    EXPECT_EQ(stats.trees_built.load(), 1u) << size;
    EXPECT_EQ(stats.pass_helpers.load(), 0u) << size;
  }
}

// Corrupt delta segments in two pieces: the pass on four threads reports
// the earlier one, exactly as the pass on one thread does, even when the
// later one is found first (the lower reads of the earlier piece are slow).
TEST(PatchedFileParallelTest, ConcurrentPassReportsTheFirstCorruptSegment) {
  const Fixture& fx = TheFixture();
  const size_t early = fx.delta.size() * 3 / 10, late = fx.delta.size() * 9 / 10;
  Source src{fx.delta, fx.lower, nullptr};
  src.delta[early] ^= 0x10;
  const Status early_only = ColdStatus(src, fx.target, 1);
  ASSERT_EQ(early_only.code(), Code::kCorruption) << early_only.ToString();
  const uint64_t bad_off = TargetOffsetIn(early_only.message());
  ASSERT_NE(bad_off, UINT64_MAX) << early_only.message();
  ASSERT_GE(bad_off % kPiece, 32u * 1024) << "the corrupt segment starts its piece";
  src.delta[late] ^= 0x10;
  const Status sequential = ColdStatus(src, fx.target, 1);
  EXPECT_EQ(sequential.ToString(), early_only.ToString());
  Source late_src{fx.delta, fx.lower, nullptr};
  late_src.delta[late] ^= 0x10;
  const Status late_only = ColdStatus(late_src, fx.target, 1);
  ASSERT_EQ(late_only.code(), Code::kCorruption);
  ASSERT_NE(late_only.ToString(), sequential.ToString());

  // The segments before the corrupt one in its piece read slowly.
  const uint64_t slow_lo = bad_off / kPiece * kPiece;
  src.lower_hook = [&](uint64_t off, size_t) {
    if (off + 4096 >= slow_lo && off < bad_off) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return Status::Ok();
  };
  for (int i = 0; i < 3; ++i) {
    const Status parallel = ColdStatus(src, fx.target, 4);
    EXPECT_EQ(parallel.code(), Code::kCorruption);
    EXPECT_EQ(parallel.ToString(), sequential.ToString());
    EXPECT_TRUE(test::Contains(parallel.message(), "test: par")) << parallel.message();
  }
}

// Lower reads failing (a verified lower file whose blocks do not match) at
// two offsets: the error of the first is reported, as on one thread; a
// flipped lower byte gives the digest mismatch, and nothing of the pass is
// served or cached.
TEST(PatchedFileParallelTest, ConcurrentPassReportsTheFirstLowerFailure) {
  const Fixture& fx = TheFixture();
  const uint64_t bad[] = {2 * kPiece + 5000, 4 * kPiece + 100};
  Source src{fx.delta, fx.lower, nullptr};
  src.lower_hook = [&](uint64_t off, size_t n) {
    for (uint64_t b : bad) {
      if (b >= off && b < off + n) {
        // The later failure is fast, the earlier one slow to come.
        if (b == bad[0]) std::this_thread::sleep_for(std::chrono::milliseconds(30));
        return Status::Corruption("lower block at " + std::to_string(b) + " is bad");
      }
    }
    return Status::Ok();
  };
  const Status sequential = ColdStatus(src, fx.target, 1);
  ASSERT_EQ(sequential.code(), Code::kCorruption);
  EXPECT_TRUE(test::Contains(sequential.message(), std::to_string(bad[0]))) << sequential.message();
  EXPECT_TRUE(test::Contains(sequential.message(), "test: par")) << sequential.message();
  for (int i = 0; i < 3; ++i)
    EXPECT_EQ(ColdStatus(src, fx.target, 4).ToString(), sequential.ToString());

  Source flipped{fx.delta, fx.lower, nullptr};
  flipped.lower[3 * kPiece + 77] ^= 1;
  const Status seq_flip = ColdStatus(flipped, fx.target, 1);
  ASSERT_EQ(seq_flip.code(), Code::kCorruption);
  EXPECT_TRUE(test::Contains(seq_flip.message(), "test: par")) << seq_flip.message();
  SegmentCache cache(64 << 20);
  PatchedFileEnv env{nullptr, &cache, 1};
  env.pass_threads = 4;
  PatchedFile f(flipped.Make("test: par", fx.target.size(),
                             FsVerityDigest(fx.target.data(), fx.target.size())),
                env);
  std::vector<uint8_t> buf(4096, 0xee);
  EXPECT_EQ(f.Read(0, buf).status().ToString(), seq_flip.ToString());
  EXPECT_EQ(f.Read(kPiece, buf).status().ToString(), seq_flip.ToString());  // not repeated
  for (uint64_t seg = 0; seg < (fx.target.size() >> kSegLog2) + 1; ++seg) {
    EXPECT_FALSE(cache.Contains((uint64_t{1} << 20) | seg)) << seg;
  }
  EXPECT_EQ(buf, std::vector<uint8_t>(4096, 0xee));
}

// A delta over a delta, read cold from several threads at once: the upper
// pass's threads read the lower delta file (its own pass, the same shared
// cache) concurrently; every reader gets the target bytes and each file's
// tree is built once.
TEST(PatchedFileParallelTest, ConcurrentColdReadsOfADeltaOverADelta) {
  const Fixture& fx = TheFixture();
  std::string top = fx.target;
  for (size_t off = 1000; off < top.size(); off += 9000) top[off] ^= 0x33;
  DeltaOptions o;
  o.segment_log2 = kSegLog2;
  o.zstd_level = 1;
  auto top_delta = EncodeDelta(U8(fx.target), U8(top), o);
  ASSERT_TRUE(top_delta.ok());

  PatchedFileStats stats;
  SegmentCache cache(8 << 20);  // too small to keep everything: segments decode again
  PatchedFileEnv mid_env{&stats, &cache, 1};
  mid_env.pass_threads = 4;
  const Source mid_src{fx.delta, fx.lower, nullptr};
  PatchedFile mid(mid_src.Make("test: mid", fx.target.size(),
                               FsVerityDigest(fx.target.data(), fx.target.size())),
                  mid_env);
  PatchedFileSource s;
  s.context = "test: top";
  s.size = top.size();
  s.digest = FsVerityDigest(top.data(), top.size());
  s.delta_size = top_delta->size();
  s.read_delta = [&](uint64_t off, std::span<uint8_t> out) {
    std::memcpy(out.data(), top_delta->data() + off, out.size());
    return Status::Ok();
  };
  s.lower_size = fx.target.size();
  s.read_lower = [&](uint64_t off, std::span<uint8_t> out) -> Status {
    CX_ASSIGN_OR_RETURN(size_t n, mid.Read(off, out));
    return n == out.size() ? Status::Ok() : Status::Internal("short lower read");
  };
  PatchedFileEnv top_env{&stats, &cache, 2};
  top_env.pass_threads = 4;
  PatchedFile upper(std::move(s), top_env);

  std::atomic<int> bad{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 3; ++t) {
    threads.emplace_back([&] {
      auto got = ReadAll(upper);
      if (!got.ok() || *got != top) ++bad;
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(bad.load(), 0);
  EXPECT_EQ(stats.trees_built.load(), 2u);
  EXPECT_EQ(stats.verify_failures.load(), 0u);
}

// ReadThrough (a FUSE reply, an extract): whole segments are decoded into
// the caller's buffer and verified there, and none is cached; a partial
// segment goes through the cache as Read does. Wrong lower bytes fail the
// read, naming the block, whichever path decodes them.
TEST(PatchedFileReadThroughTest, WholeSegmentsSkipTheCacheAndAreVerified) {
  const Fixture& fx = TheFixture();
  const Digest digest = FsVerityDigest(fx.target.data(), fx.target.size());
  auto leaves = [&] {
    auto l = VerityLeaves::Check(
        LeafHashes(reinterpret_cast<const uint8_t*>(fx.target.data()), fx.target.size()),
        fx.target.size(), digest, "test");
    EXPECT_TRUE(l.ok()) << l.status().ToString();
    return std::move(l).value();
  };
  const uint64_t seg = uint64_t{1} << kSegLog2;
  const uint64_t segments = (fx.target.size() + seg - 1) / seg;
  Source src{fx.delta, fx.lower, nullptr};
  {
    PatchedFileStats stats;
    SegmentCache cache(64 << 20);
    PatchedFile f(src.Make("test: through", fx.target.size(), digest), {&stats, &cache, 1},
                  leaves());
    std::string got(fx.target.size(), '\0');
    for (uint64_t off = 0; off < got.size(); off += 4 * seg) {  // 4 segments per read
      const size_t n = std::min<size_t>(4 * seg, got.size() - off);
      auto r = f.ReadThrough(off, {reinterpret_cast<uint8_t*>(got.data()) + off, n});
      ASSERT_TRUE(r.ok()) << r.status().ToString();
      ASSERT_EQ(*r, n);
    }
    EXPECT_TRUE(got == fx.target);
    EXPECT_EQ(stats.segments_decoded.load(), segments);
    EXPECT_EQ(stats.blocks_verified.load(), (fx.target.size() + 4095) / 4096);
    for (uint64_t i = 0; i < segments; ++i) EXPECT_FALSE(cache.Contains((1u << 20) | i)) << i;

    // A partial read caches its segment; a whole read of it then uses that.
    std::vector<uint8_t> buf(seg);
    ASSERT_TRUE(f.Read(3 * seg + 100, std::span<uint8_t>(buf).first(500)).ok());
    EXPECT_TRUE(cache.Contains((1u << 20) | 3));
    const uint64_t hits = stats.segment_cache_hits.load();
    auto r = f.ReadThrough(3 * seg, buf);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    EXPECT_EQ(stats.segment_cache_hits.load(), hits + 1);
    EXPECT_EQ(std::memcmp(buf.data(), fx.target.data() + 3 * seg, seg), 0);
    // Odd offsets and sizes: partial segments at both ends.
    std::string odd(3 * seg + 777, '\0');
    r = f.ReadThrough(5 * seg - 333, {reinterpret_cast<uint8_t*>(odd.data()), odd.size()});
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    EXPECT_EQ(odd, fx.target.substr(5 * seg - 333, odd.size()));
  }
  {  // one wrong lower byte under segment 6 (no insertion before 400000)
    Source bad = src;
    bad.lower[6 * seg + 5] ^= 1;
    PatchedFileStats stats;
    SegmentCache cache(64 << 20);
    PatchedFile f(bad.Make("test: through", fx.target.size(), digest), {&stats, &cache, 1},
                  leaves());
    std::vector<uint8_t> buf(2 * seg);
    ASSERT_TRUE(f.ReadThrough(4 * seg, buf).ok());  // segments 4 and 5 are fine
    auto r = f.ReadThrough(6 * seg, buf);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.status().code(), Code::kCorruption);
    EXPECT_NE(
        r.status().message().find("test: through: block at offset " + std::to_string(6 * seg)),
        std::string::npos)
        << r.status().ToString();
    EXPECT_EQ(stats.verify_failures.load(), 1u);
    EXPECT_FALSE(cache.Contains((1u << 20) | 6));
  }
}

}  // namespace
}  // namespace cryptex
