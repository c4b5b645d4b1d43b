// The delta codec: round trips, random access, bounded hostile decoding,
// ELF reference prediction.
#include "delta.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <random>

#include "delta_internal.h"
#include "sha256.h"
#include "test_util.h"

namespace cryptex {
namespace {

using Bytes = std::vector<uint8_t>;

Bytes Random(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  Bytes b(n);
  for (auto& x : b) x = static_cast<uint8_t>(rng());
  return b;
}

// Text-like bytes: compressible, with repeats, like real files.
Bytes Texty(size_t n, uint32_t seed) {
  static const char* kWords[] = {"delta ", "segment ", "lower ", "target ", "cryptex ",
                                 "image ", "patch\n",  "0x1f ",  "{ ",      "} "};
  std::mt19937 rng(seed);
  Bytes b;
  while (b.size() < n) {
    const char* w = kWords[rng() % 10];
    b.insert(b.end(), w, w + std::strlen(w));
  }
  b.resize(n);
  return b;
}

Bytes Encode(const Bytes& lower, const Bytes& target, DeltaOptions o = {}) {
  auto d = EncodeDelta(lower, target, o);
  EXPECT_TRUE(d.ok()) << d.status().ToString();
  return d.ok() ? *d : Bytes{};
}

void ExpectRoundTrip(const Bytes& lower, const Bytes& target, DeltaOptions o = {}) {
  const Bytes d = Encode(lower, target, o);
  auto out = ApplyDelta(d, lower, "test");
  ASSERT_TRUE(out.ok()) << out.status().ToString();
  ASSERT_EQ(out->size(), target.size());
  EXPECT_TRUE(*out == target);
}

// A lower-file callback over memory that counts what it is asked for.
struct CountingLower {
  const Bytes* bytes;
  uint64_t calls = 0;
  LowerReadFn Fn() {
    return [this](uint64_t off, std::span<uint8_t> out) {
      ++calls;
      std::memcpy(out.data(), bytes->data() + off, out.size());
      return Status::Ok();
    };
  }
};

std::unique_ptr<DeltaReader> OpenOrDie(const Bytes& d, const Bytes& lower, LowerReadFn fn) {
  auto r = DeltaReader::Open(d, lower.size(), std::move(fn), "patch P: file F");
  EXPECT_TRUE(r.ok()) << r.status().ToString();
  return r.ok() ? std::move(*r) : nullptr;
}

TEST(DeltaTest, RoundTripsEdgeCases) {
  const Bytes r = Random(100000, 1);
  ExpectRoundTrip({}, {});
  ExpectRoundTrip(r, {});
  ExpectRoundTrip({}, r);
  ExpectRoundTrip(r, r);
  ExpectRoundTrip({1}, {2});
  ExpectRoundTrip({7}, {7});
  ExpectRoundTrip(Random(3, 2), Random(5, 3));
  ExpectRoundTrip(Random(100000, 4), r);  // unrelated
}

TEST(DeltaTest, RoundTripsEdits) {
  for (uint32_t log2 : {12u, 17u}) {
    DeltaOptions o;
    o.segment_log2 = log2;
    const Bytes base = Texty(300000, 5);
    Bytes ins = base;  // insert
    ins.insert(ins.begin() + 123457, 5000, 'x');
    ExpectRoundTrip(base, ins, o);
    Bytes del = base;  // delete
    del.erase(del.begin() + 1000, del.begin() + 70000);
    ExpectRoundTrip(base, del, o);
    Bytes shift(base.begin() + 17, base.end());  // shift by a non-aligned amount
    ExpectRoundTrip(base, shift, o);
    Bytes moved = base;  // a block moved elsewhere
    std::rotate(moved.begin() + 10000, moved.begin() + 90000, moved.begin() + 250000);
    ExpectRoundTrip(base, moved, o);
    Bytes sparse = base;  // scattered byte changes (approximate matches)
    for (size_t i = 0; i < sparse.size(); i += 997) sparse[i] ^= 0x5a;
    ExpectRoundTrip(base, sparse, o);
  }
}

TEST(DeltaTest, EditedFileCostsLittle) {
  const Bytes base = Random(1 << 20, 6);
  Bytes t = base;
  t.insert(t.begin() + 300000, {1, 2, 3, 4, 5, 6, 7, 8});
  t.erase(t.begin() + 700000, t.begin() + 700100);
  const Bytes d = Encode(base, t);
  EXPECT_LT(d.size(), 2000u);
  EXPECT_TRUE(*ApplyDelta(d, base, "t") == t);
}

// The suffix array search (narrowed by the first two bytes, skipping the
// prefix both ends of the range share) finds every piece wherever it lies:
// pieces of random bytes cut at odd sizes (no whole 4 KiB block survives,
// so all of the target is searched) and shuffled cost a few bytes of
// control each; a piece not found would cost its size. Lower files ending
// in a zero byte and in a byte that starts many suffixes, and a two-symbol
// alphabet (long shared prefixes), cover the search's edges.
TEST(DeltaTest, ShuffledPiecesAreFoundWhereverTheyLie) {
  struct Case {
    const char* name;
    Bytes lower;
  };
  Bytes ends_zero = Random(300000, 21);
  ends_zero.back() = 0;
  Bytes ends_ff = Random(300000, 22);
  ends_ff.back() = 0xff;
  Bytes two_symbols = Random(300000, 23);
  for (auto& b : two_symbols) b &= 1;
  // Over 16 MiB: the search starts from the first three bytes' range.
  Bytes large = Random((16u << 20) + 5000, 28);
  large[large.size() - 2] = 0;
  large.back() = 0;
  for (const Case& c : {Case{"ends in 0", ends_zero}, Case{"ends in ff", ends_ff},
                        Case{"two symbols", two_symbols}, Case{"16 MiB", large}}) {
    SCOPED_TRACE(c.name);
    const Bytes& lower = c.lower;
    std::vector<std::pair<size_t, size_t>> pieces;  // [from, to) of lower
    for (size_t off = 0; off < lower.size(); off += 3001) {
      pieces.emplace_back(off, std::min(lower.size(), off + 3001));
    }
    std::shuffle(pieces.begin(), pieces.end(), std::mt19937(24));
    Bytes target;
    for (auto [from, to] : pieces)
      target.insert(target.end(), lower.begin() + from, lower.begin() + to);
    const Bytes d = Encode(lower, target);
    EXPECT_LT(d.size(), 20 * pieces.size()) << pieces.size() << " pieces";
    auto out = ApplyDelta(d, lower, "t");
    ASSERT_TRUE(out.ok()) << out.status().ToString();
    EXPECT_TRUE(*out == target);
  }
}

// Deep in bytes that match nothing (new code), the scan searches only every
// few positions; what matches again after them is still found, its first
// bytes taken back by the backward extension: 256 KiB of new random bytes
// cost about themselves, the 192 KiB of lower bytes after them nearly
// nothing.
TEST(DeltaTest, MatchesAfterLongNewRegionsAreFound) {
  const Bytes base = Random(1u << 20, 29);
  for (size_t odd : {size_t{0}, size_t{3}, size_t{7}}) {
    Bytes t = Random((256u << 10) + odd, 30);
    t.insert(t.end(), base.begin() + 500000, base.begin() + 500000 + (192u << 10));
    const Bytes d = Encode(base, t);
    EXPECT_LT(d.size(), (256u << 10) + odd + 400) << odd;
    auto out = ApplyDelta(d, base, "t");
    ASSERT_TRUE(out.ok()) << out.status().ToString();
    EXPECT_TRUE(*out == t);
  }
}

// When whole unchanged blocks cover nearly all of a file, the few bytes
// left are searched in windows of the lower file around where they were.
// What moved a little within the file (code relinked a few KiB away) is
// still found there, at the start, the middle and the very end of the file.
TEST(DeltaTest, FewChangedBytesFindWhatMovedNearby) {
  const Bytes base = Random(4u << 20, 25);
  Bytes t = base;
  for (size_t at : {size_t{100}, size_t{1u << 20}, size_t{3u << 20}, base.size() - 2500}) {
    const size_t from = at >= 6000 ? at - 6000 : at + 9000;  // 6 KiB before, or 9 after
    std::copy(base.begin() + from, base.begin() + from + 2400, t.begin() + at);
  }
  const Bytes d = Encode(base, t);
  EXPECT_LT(d.size(), 600u);  // 4 x 2,400 random bytes, were they not found
  auto out = ApplyDelta(d, base, "t");
  ASSERT_TRUE(out.ok()) << out.status().ToString();
  EXPECT_TRUE(*out == t);
}

// In a small file (the windows reach 4 KiB either side there, not 16), a
// piece moved from just under 4 KiB away is still found. 32 KiB with one
// changed 2,000-byte region: a sixteenth loose, so the search is windowed.
// The piece's source ends 3,200 bytes before it: with windows of 3 KiB or
// less, none of it lies in the window (fails).
TEST(DeltaTest, SmallFileFindsWhatMovedWithinItsWindows) {
  for (size_t at : {size_t{9000}, size_t{20000}}) {
    SCOPED_TRACE(at);
    const Bytes base = Random(32u << 10, 28);
    Bytes t = base;
    std::copy(base.begin() + static_cast<ptrdiff_t>(at - 5200),
              base.begin() + static_cast<ptrdiff_t>(at - 3200),
              t.begin() + static_cast<ptrdiff_t>(at));
    const Bytes d = Encode(base, t);
    EXPECT_LT(d.size(), 400u);  // 2,000 random bytes, were they not found
    auto out = ApplyDelta(d, base, "t");
    ASSERT_TRUE(out.ok()) << out.status().ToString();
    EXPECT_TRUE(*out == t);
  }
}

// Few loose bytes, edits of every shape around the windows' edges: the
// first and last bytes, pieces copied from just past either end of the
// lower file's window, appended and cut tails, a target much shorter than
// its lower file. Each must round-trip (ASan checks the windows' bounds).
TEST(DeltaTest, WindowedSearchRoundTripsEditsOfEveryShape) {
  const Bytes base = Random(1u << 20, 26);
  std::mt19937 rng(27);
  for (int iter = 0; iter < 40; ++iter) {
    Bytes t = base;
    const int edits = 1 + static_cast<int>(rng() % 4);
    for (int e = 0; e < edits; ++e) {
      const size_t at = rng() % t.size();
      const size_t len = 1 + rng() % 3000;
      switch (rng() % 5) {
        case 0: {  // a piece of the lower file from up to 40 KiB away
          const int64_t from =
              static_cast<int64_t>(at) + static_cast<int64_t>(rng() % 80000) - 40000;
          const size_t f = static_cast<size_t>(
              std::clamp<int64_t>(from, 0, static_cast<int64_t>(base.size() - len)));
          std::copy(base.begin() + f, base.begin() + f + len,
                    t.begin() + std::min(at, t.size() - std::min(len, t.size())));
          break;
        }
        case 1: {  // inserted random bytes
          const Bytes r = Random(len, static_cast<uint32_t>(rng()));
          t.insert(t.begin() + at, r.begin(), r.end());
          break;
        }
        case 2:  // a deleted range
          t.erase(t.begin() + at, t.begin() + std::min(t.size(), at + len));
          break;
        case 3:  // first or last bytes changed
          for (size_t i = 0; i < std::min(len, t.size()); ++i) {
            (rng() % 2 ? t[i] : t[t.size() - 1 - i]) ^= 0x5a;
          }
          break;
        default:  // an appended tail
          t.insert(t.end(), base.begin(), base.begin() + len);
          break;
      }
      if (t.empty()) t.push_back(1);
    }
    if (iter % 8 == 7) t.resize(t.size() / 5);  // much shorter than its lower file
    SCOPED_TRACE(iter);
    ExpectRoundTrip(base, t);
  }
}

TEST(DeltaTest, LargeFileWithFewFlippedBytesIsTiny) {
  Bytes base = Random(48u << 20, 7);
  Bytes t = base;
  for (size_t off : {size_t{12345}, size_t{9u << 20}, size_t{30000001}, t.size() - 1}) t[off] ^= 1;
  const auto t0 = std::chrono::steady_clock::now();
  const Bytes d = Encode(base, t);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_LT(d.size(), 1024u);
  EXPECT_LT(secs, 20.0);  // generous: sanitizer builds; the bench checks < 2 s
  EXPECT_TRUE(*ApplyDelta(d, base, "t") == t);
}

// A read-only file mapping of `bytes` (a file in `dir`), as mkpatch maps its
// scratch copies.
class MappedBytes {
 public:
  MappedBytes(const test::TempDir& dir, const std::string& name, const Bytes& bytes) {
    test::WriteFile(dir.Join(name), std::string(bytes.begin(), bytes.end()));
    const int fd = open(dir.Join(name).c_str(), O_RDONLY | O_CLOEXEC);
    EXPECT_GE(fd, 0);
    void* m = mmap(nullptr, bytes.size(), PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    EXPECT_NE(m, MAP_FAILED);
    if (m != MAP_FAILED) map_ = static_cast<const uint8_t*>(m), size_ = bytes.size();
  }
  ~MappedBytes() {
    if (map_) munmap(const_cast<uint8_t*>(map_), size_);
  }
  std::span<const uint8_t> span() const { return {map_, size_}; }
  void Release() const { madvise(const_cast<uint8_t*>(map_), size_, MADV_DONTNEED); }
  // Resident bytes of the mapping in this process (its Rss in /proc/self/smaps).
  uint64_t Resident() const {
    std::ifstream smaps("/proc/self/smaps");
    char start[32];
    std::snprintf(start, sizeof start, "%lx-", reinterpret_cast<unsigned long>(map_));
    bool in = false;
    for (std::string line; std::getline(smaps, line);) {
      if (line.rfind(start, 0) == 0) in = true;
      if (in && line.rfind("Rss:", 0) == 0) return std::stoull(line.substr(4)) << 10;
    }
    ADD_FAILURE() << "mapping not in /proc/self/smaps";
    return 0;
  }

 private:
  const uint8_t* map_ = nullptr;
  size_t size_ = 0;
};

// With release_inputs dropping the pages of mapped inputs, a large pair is
// never resident at once: at each call, each input has at most about two
// release steps of pages mapped (what the passes read since the last call).
// The output is the same as without it, and decodes.
TEST(DeltaTest, ReleasingMappedInputsKeepsThemSmallAndChangesNothing) {
  const Bytes lower = Random(40u << 20, 8);
  Bytes target = lower;
  for (size_t off : {size_t{4097}, size_t{13u << 20}, size_t{27000001}, target.size() - 2}) {
    target[off] ^= 0x5A;
  }
  test::TempDir dir;
  const MappedBytes l(dir, "lower", lower), t(dir, "target", target);
  DeltaOptions o;
  uint64_t calls = 0, most = 0;
  o.release_inputs = [&] {
    ++calls;
    most = std::max({most, l.Resident(), t.Resident()});
    l.Release();
    t.Release();
  };
  auto d = EncodeDelta(l.span(), t.span(), o);
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  EXPECT_GE(calls, 4 * target.size() / kDeltaReleaseEvery);  // several passes, each paced
  EXPECT_LE(most, 2 * kDeltaReleaseEvery + (1u << 20));
  EXPECT_TRUE(*d == Encode(lower, target));
  EXPECT_LT(d->size(), 1024u);
  EXPECT_TRUE(*ApplyDelta(*d, lower, "t") == target);
}

TEST(DeltaTest, RandomAccessAtEverySegmentBoundary) {
  DeltaOptions o;
  o.segment_log2 = 12;
  const Bytes base = Texty(200000, 8);
  Bytes t = base;
  t.insert(t.begin() + 50000, 3000, 'q');
  for (size_t i = 0; i < t.size(); i += 5001) t[i] ^= 0x33;
  // erase, not resize(size() - 777): GCC 12 at -O3 reports a false
  // -Wstringop-overflow in resize.
  t.erase(t.end() - 777, t.end());
  const Bytes d = Encode(base, t, o);
  CountingLower lower{&base};
  auto r = OpenOrDie(d, base, lower.Fn());
  ASSERT_TRUE(r);
  ASSERT_EQ(r->target_size(), t.size());
  for (uint64_t b = 0; b <= t.size(); b += r->segment_size()) {
    for (uint64_t lo : {b > 7 ? b - 7 : 0, b}) {
      const uint64_t hi = std::min<uint64_t>(b + 9, t.size());
      if (lo >= hi) continue;
      Bytes got(hi - lo);
      ASSERT_TRUE(r->ReadRange(lo, got).ok()) << lo;
      EXPECT_TRUE(std::equal(got.begin(), got.end(), t.begin() + lo)) << "at " << lo;
    }
  }
  Bytes one(1);
  EXPECT_EQ(r->ReadRange(t.size(), one).code(), Code::kInvalidArgument);
  EXPECT_TRUE(r->ReadRange(t.size(), {}).ok());
}

TEST(DeltaTest, ReadsDecodeOnlyTheSegmentsTheyNeed) {
  const Bytes base = Texty(4u << 20, 9);
  Bytes t = base;
  for (size_t i = 0; i < t.size(); i += 40000) t[i] ^= 0x11;  // every segment changed
  const Bytes d = Encode(base, t);                            // 128 KiB segments
  CountingLower lower{&base};
  auto r = OpenOrDie(d, base, lower.Fn());
  ASSERT_TRUE(r);
  ASSERT_EQ(lower.calls, 0u);  // open reads nothing of the lower file
  Bytes got(4096);
  const uint64_t off = 2'000'000;
  ASSERT_TRUE(r->ReadRange(off, got).ok());
  EXPECT_TRUE(std::equal(got.begin(), got.end(), t.begin() + off));
  EXPECT_EQ(r->stats().segments_decoded, 1u);
  EXPECT_LE(r->stats().lower_bytes, r->segment_size());
  // The same segment again: served from the decoded segment.
  ASSERT_TRUE(r->ReadRange(off + 4096, got).ok());
  EXPECT_EQ(r->stats().segments_decoded, 1u);
  // Straddling a boundary: exactly two more segments.
  const uint64_t b = 10 * uint64_t{r->segment_size()};
  ASSERT_TRUE(r->ReadRange(b - 100, got).ok());
  EXPECT_TRUE(std::equal(got.begin(), got.end(), t.begin() + (b - 100)));
  EXPECT_EQ(r->stats().segments_decoded, 3u);
  EXPECT_LE(r->stats().lower_bytes, 3u * r->segment_size());
}

TEST(DeltaTest, UnchangedSegmentsReadOnlyTheRangeOfTheLowerFile) {
  const Bytes base = Random(1u << 20, 10);
  Bytes t = base;
  t[5] ^= 1;
  const Bytes d = Encode(base, t);
  CountingLower lower{&base};
  auto r = OpenOrDie(d, base, lower.Fn());
  ASSERT_TRUE(r);
  Bytes got(4096);
  ASSERT_TRUE(r->ReadRange(600000, got).ok());
  EXPECT_TRUE(std::equal(got.begin(), got.end(), t.begin() + 600000));
  EXPECT_EQ(r->stats().lower_bytes, 4096u);
}

// A segment with many control entries (a file with small insertions all
// over it) reads its lower bytes in one call when they lie close together,
// not one call per entry; copies from far-apart places still decode, entry
// by entry, without reading the lower file in between.
TEST(DeltaTest, CopiesOfASegmentReadTheLowerFileOnce) {
  const Bytes base = Random(1u << 20, 12);
  DeltaOptions o;
  o.elf_references = false;
  o.zstd_level = 1;
  auto decode_all = [&](const Bytes& t, CountingLower* lower) {
    const Bytes d = Encode(base, t, o);
    auto r = OpenOrDie(d, base, lower->Fn());
    EXPECT_TRUE(r);
    if (!r) return uint64_t{0};
    Bytes got(t.size());
    EXPECT_TRUE(r->ReadRange(0, got).ok());
    EXPECT_TRUE(got == t);
    EXPECT_LE(r->stats().lower_bytes, t.size() + 2 * r->segment_size() * r->segment_count());
    return r->segment_count();
  };

  Bytes shifted;  // 7 new bytes every 1000: about 130 entries per segment
  for (size_t i = 0; i < base.size(); i += 1000) {
    shifted.insert(shifted.end(), base.begin() + i,
                   base.begin() + std::min<size_t>(i + 1000, base.size()));
    for (int k = 0; k < 7; ++k) shifted.push_back(static_cast<uint8_t>(i * 31 + k));
  }
  CountingLower near{&base};
  const uint64_t segments = decode_all(shifted, &near);
  EXPECT_EQ(near.calls, segments);

  Bytes scattered;  // alternating 3000-byte pieces from both halves of the file
  for (size_t i = 0; i + 3000 <= base.size() / 2; i += 3000) {
    scattered.insert(scattered.end(), base.begin() + i, base.begin() + i + 3000);
    const size_t far = base.size() / 2 + i;
    scattered.insert(scattered.end(), base.begin() + far, base.begin() + far + 3000);
    scattered.push_back(static_cast<uint8_t>(i));
  }
  CountingLower apart{&base};
  EXPECT_GT(apart.calls, decode_all(scattered, &apart));
}

// Every truncation and every single-byte flip of `d` fails cleanly, as
// corruption naming the context.
void ExpectTruncationsAndFlipsFail(const Bytes& lower, const Bytes& d) {
  for (size_t n = 0; n < d.size(); ++n) {
    Bytes cut(d.begin(), d.begin() + n);
    auto out = ApplyDelta(cut, lower, "patch P: file F");
    ASSERT_FALSE(out.ok()) << "truncated to " << n;
    EXPECT_EQ(out.status().code(), Code::kCorruption);
    EXPECT_NE(out.status().message().find("patch P: file F"), std::string::npos);
  }
  for (size_t i = 0; i < d.size(); ++i) {
    for (uint8_t mask : {0x01, 0x80}) {
      Bytes bad = d;
      bad[i] ^= mask;
      auto out = ApplyDelta(bad, lower, "p");
      EXPECT_FALSE(out.ok()) << "flip at " << i << " decoded silently";
    }
  }
}

TEST(DeltaTest, TruncationsAndFlipsFailCleanly) {
  const Bytes base = Texty(20000, 11);
  Bytes t = base;
  t.insert(t.begin() + 3000, 100, 'z');
  t[15000] ^= 0xff;
  DeltaOptions o;
  o.segment_log2 = 12;
  const Bytes d = Encode(base, t, o);
  ASSERT_TRUE(*ApplyDelta(d, base, "p") == t);
  ExpectTruncationsAndFlipsFail(base, d);
}

TEST(DeltaTest, WrongLowerFileSizeIsRefused) {
  const Bytes base = Random(10000, 12), t = Random(10000, 13);
  const Bytes d = Encode(base, t);
  Bytes shorter(base.begin(), base.end() - 1);
  auto out = ApplyDelta(d, shorter, "patch P: file F");
  ASSERT_FALSE(out.ok());
  EXPECT_NE(out.status().message().find("lower file"), std::string::npos);
}

TEST(DeltaTest, LowerReadErrorsPropagate) {
  const Bytes base = Random(100000, 14);
  Bytes t = base;
  t[50000] ^= 1;
  const Bytes d = Encode(base, t);
  auto r = DeltaReader::Open(
      d, base.size(), [](uint64_t, std::span<uint8_t>) { return Status::IOError("disk on fire"); },
      "ctx");
  ASSERT_TRUE(r.ok());
  Bytes got(10);
  Status st = (*r)->ReadRange(50000, got);
  EXPECT_EQ(st.code(), Code::kIOError);
  EXPECT_NE(st.message().find("disk on fire"), std::string::npos);
}

// A hand-made delta of one segment (plus identity-free further segments if
// target_size needs them: their index entries are 0) with correct checksums,
// so that the decoder's bounds, not the checksums, are what is tested.
Bytes HandMadeDelta(uint64_t target_size, const Bytes& payload_body) {
  Bytes payload = payload_body;
  delta::PutU32(&payload, delta::Crc32c(payload));
  Bytes index_raw, index;
  delta::PutU32(&index_raw, static_cast<uint32_t>(payload.size()));
  delta::PutStream(&index, index_raw, 3);
  Bytes d(std::begin(delta::kMagic), std::end(delta::kMagic));
  d.push_back(12);
  d.push_back(0);
  delta::PutVarint(&d, 0);  // lower size
  delta::PutVarint(&d, target_size);
  delta::PutVarint(&d, index.size());
  delta::PutVarint(&d, 0);
  delta::PutU32(&d, delta::Crc32c(index, delta::Crc32c(d)));
  d.insert(d.end(), index.begin(), index.end());
  d.insert(d.end(), payload.begin(), payload.end());
  return d;
}

TEST(DeltaTest, HostileSizesAreBoundedBeforeAllocation) {
  // A stream claiming 2^40 raw bytes in a 100-byte segment.
  Bytes body{delta::kKindDelta};
  delta::PutVarint(&body, uint64_t{1} << 40);
  delta::PutVarint(&body, 0);
  body.push_back(delta::kStreamZstd);
  auto out = ApplyDelta(HandMadeDelta(100, body), {}, "p");
  ASSERT_FALSE(out.ok());
  EXPECT_NE(out.status().message().find("exceeds its bound"), std::string::npos)
      << out.status().ToString();
  // A zstd frame whose content size disagrees with the declared raw size.
  const Bytes big = delta::ZstdCompress(Bytes(5000, 0), 3);
  Bytes body2{delta::kKindDelta};
  delta::PutVarint(&body2, 0);  // ctrl
  delta::PutVarint(&body2, 0);
  body2.push_back(delta::kStreamRaw);
  delta::PutVarint(&body2, 100);  // diff: declares 100, frame holds 5000
  delta::PutVarint(&body2, big.size());
  body2.push_back(delta::kStreamZstd);
  body2.insert(body2.end(), big.begin(), big.end());
  EXPECT_FALSE(ApplyDelta(HandMadeDelta(100, body2), {}, "p").ok());
  // A target needing more than kMaxDeltaSegments segments.
  out = ApplyDelta(HandMadeDelta((kMaxDeltaSegments << 12) + 1, body), {}, "p");
  ASSERT_FALSE(out.ok());
  EXPECT_NE(out.status().message().find("too many segments"), std::string::npos);
  // A copy from beyond the (empty) lower file.
  Bytes body3{delta::kKindCopy};
  delta::PutVarint(&body3, 1);
  out = ApplyDelta(HandMadeDelta(100, body3), {}, "p");
  ASSERT_FALSE(out.ok());
  EXPECT_NE(out.status().message().find("past the lower file"), std::string::npos);
}

TEST(DeltaTest, RefusesBadOptions) {
  DeltaOptions o;
  o.segment_log2 = 11;
  EXPECT_EQ(EncodeDelta({}, {}, o).status().code(), Code::kInvalidArgument);
  o.segment_log2 = 17;
  o.zstd_level = 0;
  EXPECT_EQ(EncodeDelta({}, {}, o).status().code(), Code::kInvalidArgument);
}

// ---- ELF references ----------------------------------------------------------

// A minimal ELF64 image: header, one PT_LOAD (file offset 0 -> vaddr
// 0x400000) covering the whole file (and `bss` more bytes of memory), then
// `body`. With eh_size, a PT_GNU_EH_FRAME at file offset eh_off follows.
Bytes MiniElf(uint16_t machine, const Bytes& body, uint64_t bss = 0, uint64_t eh_off = 0,
              uint64_t eh_size = 0) {
  // Sized for the body up front: growing it with insert() makes GCC 12 at -O3
  // report a false -Warray-bounds.
  Bytes f(64 + 56 + body.size(), 0);
  std::memcpy(f.data(),
              "\x7f"
              "ELF",
              4);
  f[4] = 2;
  f[5] = 1;
  f[18] = static_cast<uint8_t>(machine);
  f[19] = static_cast<uint8_t>(machine >> 8);
  const uint64_t phoff = 64, total = f.size(), va = 0x400000;
  std::memcpy(&f[32], &phoff, 8);
  f[54] = 56;
  f[56] = 1;
  uint8_t* ph = &f[64];
  ph[0] = 1;  // PT_LOAD
  std::memcpy(ph + 16, &va, 8);
  std::memcpy(ph + 32, &total, 8);
  const uint64_t mem = total + bss;
  std::memcpy(ph + 40, &mem, 8);
  std::copy(body.begin(), body.end(), f.begin() + 64 + 56);
  if (eh_size > 0) {  // a second program header, in the first body bytes
    f[56] = 2;
    uint8_t* eh = &f[64 + 56];
    const uint32_t type = 0x6474e550;
    const uint64_t eh_va = va + eh_off;
    std::memcpy(eh, &type, 4);
    std::memcpy(eh + 8, &eh_off, 8);
    std::memcpy(eh + 16, &eh_va, 8);
    std::memcpy(eh + 32, &eh_size, 8);
    std::memcpy(eh + 40, &eh_size, 8);
  }
  return f;
}

// x86-64 "code": functions of random bytes (without E8/E9 bytes), each
// calling a few others with call rel32. `pad` bytes are inserted before
// function `at`, moving everything after it; calls are re-linked.
Bytes X86Code(int pad, int at, uint32_t seed) {
  std::mt19937 rng(seed);
  const int kFuncs = 400, kFuncSize = 256;
  std::vector<uint64_t> start(kFuncs);
  uint64_t pos = 120;  // file offset of the body
  for (int i = 0; i < kFuncs; ++i) {
    if (i == at) pos += pad;
    start[i] = pos;
    pos += kFuncSize;
  }
  Bytes body;
  for (int i = 0; i < kFuncs; ++i) {
    if (i == at) body.insert(body.end(), pad, 0x90);
    Bytes fn(kFuncSize);
    for (auto& b : fn) {
      do b = static_cast<uint8_t>(rng());
      while (b == 0xE8 || b == 0xE9 || b == 0x0F);
    }
    for (int k = 0; k < 8; ++k) {
      const size_t o = 10 + k * 30 + rng() % 20;  // irregular call sites
      const int callee = static_cast<int>(rng() % kFuncs);
      const int32_t rel = static_cast<int32_t>(start[callee] - (start[i] + o + 5));
      fn[o] = 0xE8;
      std::memcpy(&fn[o + 1], &rel, 4);
    }
    body.insert(body.end(), fn.begin(), fn.end());
  }
  return MiniElf(62, body);
}

TEST(DeltaTest, TruncationsAndFlipsOfAnElfDeltaFailCleanly) {
  const Bytes lower = X86Code(0, 0, 25), target = X86Code(8, 300, 25);
  const Bytes d = Encode(lower, target);
  ASSERT_EQ(d[5] & delta::kFlagRefModel, delta::kFlagRefModel);  // has a model
  ASSERT_TRUE(*ApplyDelta(d, lower, "p") == target);
  ExpectTruncationsAndFlipsFail(lower, d);
}

TEST(DeltaTest, OutputDoesNotDependOnThreads) {
  const Bytes lower = X86Code(0, 0, 26), target = X86Code(24, 100, 26);
  DeltaOptions one, many;
  one.threads = 1;
  many.threads = 4;
  one.segment_log2 = many.segment_log2 = 12;
  EXPECT_TRUE(Encode(lower, target, one) == Encode(lower, target, many));
}

// A large target against a lower file sorted whole is scanned in pieces,
// on several threads when there are: the same delta on 1, 2 and 3 threads,
// and it still finds pieces moved anywhere (across the scan's pieces too).
TEST(DeltaTest, LargeScansInPiecesDoNotDependOnThreads) {
  const Bytes lower = Random(9u << 20, 31);
  std::vector<size_t> order((lower.size() + 70000 - 1) / 70000);
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::shuffle(order.begin(), order.end(), std::mt19937(32));
  Bytes target;
  for (size_t i : order) {
    const size_t from = i * 70000, to = std::min(lower.size(), from + 70000);
    target.insert(target.end(), lower.begin() + from, lower.begin() + to);
    const Bytes fresh = Random(100, static_cast<uint32_t>(i));
    target.insert(target.end(), fresh.begin(), fresh.end());
  }
  DeltaOptions o;
  o.threads = 1;
  const Bytes one = Encode(lower, target, o);
  EXPECT_LT(one.size(), order.size() * (100 + 40));  // the new bytes and a little control
  for (int threads : {2, 3}) {
    o.threads = threads;
    EXPECT_TRUE(Encode(lower, target, o) == one) << threads << " threads";
  }
  auto out = ApplyDelta(one, lower, "t");
  ASSERT_TRUE(out.ok()) << out.status().ToString();
  EXPECT_TRUE(*out == target);
}

TEST(DeltaTest, X86CallsThatMoveWithTheirTargetsCostNothing) {
  const Bytes lower = X86Code(0, 0, 20), target = X86Code(48, 200, 20);
  DeltaOptions with, without;
  without.elf_references = false;
  const Bytes a = Encode(lower, target, with), b = Encode(lower, target, without);
  EXPECT_TRUE(*ApplyDelta(a, lower, "t") == target);
  EXPECT_TRUE(*ApplyDelta(b, lower, "t") == target);
  EXPECT_EQ(a[5] & delta::kFlagRefModel, delta::kFlagRefModel);  // flags byte
  EXPECT_LT(a.size() * 2, b.size()) << "with " << a.size() << " without " << b.size();
}

// AArch64: BL instructions (4-byte words) into other functions.
Bytes A64Code(int pad_words, int at, uint32_t seed) {
  std::mt19937 rng(seed);
  const int kFuncs = 300, kWords = 64;
  std::vector<uint64_t> start(kFuncs);
  uint64_t pos = 120;
  for (int i = 0; i < kFuncs; ++i) {
    if (i == at) pos += 4 * pad_words;
    start[i] = pos;
    pos += 4 * kWords;
  }
  Bytes body;
  for (int i = 0; i < kFuncs; ++i) {
    for (int p = 0; i == at && p < pad_words; ++p)
      body.insert(body.end(), {0x1f, 0x20, 0x03, 0xd5});
    for (int w = 0; w < kWords; ++w) {
      uint32_t word = static_cast<uint32_t>(rng()) & 0x03FFFFFF;  // opcode bits zero: not a branch
      word |= 0x08000000;
      if (w % 8 == 3) {
        const int callee = static_cast<int>(rng() % kFuncs);
        const int64_t rel = static_cast<int64_t>(start[callee]) - (start[i] + 4 * w);
        word = 0x94000000u | (static_cast<uint32_t>(rel >> 2) & 0x03FFFFFF);
      }
      const uint8_t* p = reinterpret_cast<const uint8_t*>(&word);
      body.insert(body.end(), p, p + 4);
    }
  }
  return MiniElf(183, body);
}

TEST(DeltaTest, A64BranchesThatMoveWithTheirTargetsCostNothing) {
  const Bytes lower = A64Code(0, 0, 21), target = A64Code(7, 150, 21);
  DeltaOptions with, without;
  without.elf_references = false;
  const Bytes a = Encode(lower, target, with), b = Encode(lower, target, without);
  EXPECT_TRUE(*ApplyDelta(a, lower, "t") == target);
  EXPECT_TRUE(*ApplyDelta(b, lower, "t") == target);
  EXPECT_LT(a.size() * 2, b.size()) << "with " << a.size() << " without " << b.size();
}

// Absolute pointers (e.g. R_X86_64_RELATIVE addends) into moved data.
TEST(DeltaTest, AbsolutePointersThatMoveWithTheirTargetsCostNothing) {
  auto make = [](int pad) {
    std::mt19937 rng(22);
    Bytes body(8, 0);  // body starts at file offset 120: pad to 128 (8-aligned)
    std::vector<uint64_t> objs;
    for (int i = 0; i < 2000; ++i) objs.push_back(0x400000 + 128 + 8 * 3000 + pad + 64 * i);
    for (int i = 0; i < 3000; ++i) {
      const uint64_t p = objs[rng() % objs.size()];
      const uint8_t* b = reinterpret_cast<const uint8_t*>(&p);
      body.insert(body.end(), b, b + 8);
    }
    body.insert(body.end(), pad, 0);
    for (int i = 0; i < 2000 * 64; ++i) body.push_back(static_cast<uint8_t>(rng()));
    return MiniElf(62, body);
  };
  const Bytes lower = make(0), target = make(64);
  DeltaOptions with, without;
  without.elf_references = false;
  const Bytes a = Encode(lower, target, with), b = Encode(lower, target, without);
  EXPECT_TRUE(*ApplyDelta(a, lower, "t") == target);
  EXPECT_LT(a.size(), b.size()) << "with " << a.size() << " without " << b.size();
}

// 32-bit offsets in data: an .eh_frame_hdr table (relative to its section)
// and pc-relative words (relative to themselves, like .eh_frame's FDE
// addresses) into objects that move; and RIP-relative references into bss,
// which moves with the end of the file.
TEST(DeltaTest, DataOffsetsThatMoveWithTheirTargetsCostNothing) {
  auto make = [](int pad) {
    std::mt19937 rng(23);
    const uint64_t va = 0x400000, body_off = 176;  // after header and two phdrs
    const uint64_t hdr_off = 256, kPairs = 1500, words_off = hdr_off + 12 + 8 * kPairs;
    const uint64_t kWords = 6000, objs_off = words_off + 4 * kWords + 4096 + pad;
    const uint64_t kObjs = 1000, code_off = objs_off + 64 * kObjs, kCalls = 800;
    const uint64_t end = code_off + 7 * kCalls;  // bss starts here
    Bytes body(end - body_off, 0);
    auto put32 = [&](uint64_t off, uint32_t v) { std::memcpy(&body[off - body_off], &v, 4); };
    auto obj = [&]() { return va + objs_off + 64 * (rng() % kObjs); };
    for (uint64_t i = 0; i < kPairs; ++i) {  // hdr-relative pairs
      put32(hdr_off + 12 + 8 * i, static_cast<uint32_t>(obj() - (va + hdr_off)));
      put32(hdr_off + 16 + 8 * i, static_cast<uint32_t>(obj() - (va + hdr_off)));
    }
    for (uint64_t i = 0; i < kWords; ++i) {  // half pc-relative, half small data
      const uint64_t at = words_off + 4 * i;
      put32(at, rng() % 2 ? static_cast<uint32_t>(obj() - (va + at)) : rng() % 1000);
    }
    for (uint64_t i = objs_off; i < code_off; ++i) body[i - body_off] = static_cast<uint8_t>(rng());
    for (uint64_t i = 0; i < kCalls; ++i) {  // mov rax, [rip + bss]
      const uint64_t at = code_off + 7 * i;
      body[at - body_off] = 0x48;
      body[at + 1 - body_off] = 0x8B;
      body[at + 2 - body_off] = 0x05;
      put32(at + 3, static_cast<uint32_t>(va + end + 8 * (rng() % 512) - (va + at + 7)));
    }
    Bytes full(56, 0);  // file offsets 120..175: MiniElf's second program header
    full.insert(full.end(), body.begin(), body.end());
    return MiniElf(62, full, 4096, hdr_off, 12 + 8 * kPairs);
  };
  const Bytes lower = make(0), target = make(64);
  DeltaOptions with, without;
  without.elf_references = false;
  const Bytes a = Encode(lower, target, with), b = Encode(lower, target, without);
  EXPECT_TRUE(*ApplyDelta(a, lower, "t") == target);
  EXPECT_LT(a.size() * 2, b.size()) << "with " << a.size() << " without " << b.size();
}

// RIP-relative operands followed by an immediate (the displacement is
// relative to the end of the instruction, after the immediate).
TEST(DeltaTest, X86RipRelativeWithImmediatesCostNothing) {
  auto make = [](int pad) {
    std::mt19937 rng(27);
    const uint64_t va = 0x400000, kRefs = 3000;
    struct Form {
      Bytes head;  // opcode bytes through ModRM
      size_t imm;
    };
    const Form forms[] = {{{0xC7, 0x05}, 4},         // movl $imm32, x(%rip)
                          {{0x66, 0xC7, 0x05}, 2},   // movw $imm16, x(%rip)
                          {{0x80, 0x3D}, 1},         // cmpb $imm8, x(%rip)
                          {{0xF7, 0x05}, 4},         // testl $imm32, x(%rip)
                          {{0x0F, 0xBA, 0x25}, 1}};  // btl $imm8, x(%rip)
    Bytes body;
    std::vector<std::pair<uint64_t, size_t>> refs;  // (disp offset, imm size)
    for (uint64_t i = 0; i < kRefs; ++i) {
      body.insert(body.end(), rng() % 8, 0x90);
      const Form& f = forms[rng() % 5];
      body.insert(body.end(), f.head.begin(), f.head.end());
      refs.push_back({body.size(), f.imm});
      body.insert(body.end(), 4 + f.imm, 0x01);
    }
    body.insert(body.end(), 64 + pad, 0x22);  // data moves by pad
    const uint64_t data = va + 120 + body.size();
    body.insert(body.end(), 8 * 4096, 0x33);
    for (auto [at, imm] : refs) {
      const uint64_t dest = data + 8 * (rng() % 4096);
      const uint32_t d = static_cast<uint32_t>(dest - (va + 120 + at + 4 + imm));
      std::memcpy(&body[at], &d, 4);
    }
    return MiniElf(62, body);
  };
  const Bytes lower = make(0), target = make(64);
  DeltaOptions with, without;
  without.elf_references = false;
  const Bytes a = Encode(lower, target, with), b = Encode(lower, target, without);
  EXPECT_TRUE(*ApplyDelta(a, lower, "t") == target);
  EXPECT_LT(a.size() * 2, b.size()) << "with " << a.size() << " without " << b.size();
}

// RIP-relative references from code into bss, which moves when the data
// before it grows while the code stays.
TEST(DeltaTest, BssReferencesThatMoveCostNothing) {
  auto make = [](int pad) {
    std::mt19937 rng(24);
    const uint64_t va = 0x400000, kRefs = 3000;
    Bytes body;
    std::vector<uint64_t> disp_at;  // body offsets of the disp32s
    for (uint64_t i = 0; i < kRefs; ++i) {
      body.insert(body.end(), rng() % 8, 0x90);
      body.insert(body.end(), {0x48, 0x8B, 0x05, 0, 0, 0, 0});  // mov rax, [rip + disp32]
      disp_at.push_back(body.size() - 4);
    }
    body.insert(body.end(), 1000 + pad, 0x11);  // data
    const uint64_t bss = va + 120 + body.size();
    for (uint64_t at : disp_at) {
      const uint64_t dest = bss + 8 * (rng() % 4096);
      const uint32_t d = static_cast<uint32_t>(dest - (va + 120 + at + 4));
      std::memcpy(&body[at], &d, 4);
    }
    return MiniElf(62, body, 8 * 4096);
  };
  const Bytes lower = make(0), target = make(64);
  DeltaOptions with, without;
  without.elf_references = false;
  const Bytes a = Encode(lower, target, with), b = Encode(lower, target, without);
  EXPECT_TRUE(*ApplyDelta(a, lower, "t") == target);
  EXPECT_LT(a.size() * 2, b.size()) << "with " << a.size() << " without " << b.size();
}

// Every lower address around every move edge (adjacent moves, one-byte
// moves and gaps, addresses past the last move) translates to the target
// address of the move holding it, or is left alone when none does: absolute
// pointers checked against a linear search of the moves.
TEST(DeltaTest, AbsolutePointersTranslateAtEveryMoveEdge) {
  std::mt19937_64 rng(7);
  const uint64_t kSize = 50000;
  delta::RefModel m;
  m.lower_segs = {{0, 0, kSize, kSize}};
  m.target_segs = {{0, 0, 2 * kSize, 2 * kSize}};
  for (uint64_t at = 4000 + rng() % 3; at < kSize - 200;) {
    const delta::Move mv{at, 1 + rng() % 40, static_cast<int64_t>(rng() % 2000) - 1000};
    m.moves.push_back(mv);
    at += mv.size + rng() % 4;
  }
  m.BuildIndex();
  Bytes in;
  for (uint64_t v = 4096; v < kSize + 64; ++v) {
    for (int k = 0; k < 8; ++k) in.push_back(static_cast<uint8_t>(v >> (8 * k)));
  }
  Bytes out(in.size());
  m.Predict(in, 0, 0, delta::kPredictAbs, out.data());
  for (uint64_t v = 4096, i = 0; v < kSize + 64; ++v, i += 8) {
    uint64_t want = v;
    for (const auto& mv : m.moves) {
      if (v >= mv.lower && v < mv.lower + mv.size) want = v + static_cast<uint64_t>(mv.shift);
    }
    uint64_t got = 0;
    std::memcpy(&got, &out[i], 8);
    ASSERT_EQ(got, want) << "lower address " << v;
  }
}

// Predictions are part of the format: a decoder must compute exactly the
// bytes the encoder that made a delta computed, so any change to them
// (e.g. a faster lookup that resolves overlapping segments, bss or move
// edges differently) breaks existing patches. Pinned as a digest of
// Predict's outputs, every flag combination, over random models of hostile
// shape (overlapping and empty segments, bss, segments only one file has,
// up to thousands of moves) and code-like bytes; each model used both as
// filled in (no index) and through Serialize/Parse (indexed).
TEST(DeltaTest, PredictionsArePinned) {
  std::mt19937_64 rng(2026);
  auto pick = [&](uint64_t n) { return rng() % n; };
  auto le = [](Bytes* b, uint64_t v, int n) {
    for (int k = 0; k < n; ++k) b->push_back(static_cast<uint8_t>(v >> (8 * k)));
  };
  Sha256 digest;
  uint64_t rewritten = 0;
  for (int round = 0; round < 300; ++round) {
    delta::RefModel m;
    m.arch = pick(4) == 0 ? delta::Arch::kAArch64 : delta::Arch::kX86_64;
    for (auto* segs : {&m.lower_segs, &m.target_segs}) {
      const uint64_t n = pick(6);
      for (uint64_t i = 0; i < n; ++i) {
        delta::LoadSegment sg;
        sg.offset = pick(3) == 0 ? 0 : pick(1 << 16);
        sg.vaddr = pick(2) ? sg.offset + 0x10000 * pick(3) : pick(1 << 18);
        sg.size = pick(8) == 0 ? 0 : pick(1 << 15);
        sg.memsize = sg.size + (pick(2) ? pick(1 << 13) : 0);
        segs->push_back(sg);
      }
    }
    m.lower_ehhdr_va = pick(1 << 18);
    m.lower_ehhdr_size = pick(2) ? pick(1 << 12) : 0;
    m.target_ehhdr_va = pick(1 << 18);
    uint64_t at = pick(64);
    const uint64_t moves = pick(3) == 0 ? pick(4) : pick(2000);
    for (uint64_t i = 0; i < moves; ++i) {
      delta::Move mv{at, 1 + pick(512), static_cast<int64_t>(pick(8192)) - 4096};
      m.moves.push_back(mv);
      at += mv.size + pick(64);
    }
    delta::RefModel parsed;
    std::string why;
    ASSERT_TRUE(delta::RefModel::Parse(m.Serialize(), &parsed, &why)) << why;

    // Code-like bytes: opcodes the x86 scan looks for, small displacements,
    // pointers into the lower segments, filler.
    static const uint8_t kOps[] = {0xE8, 0xE9, 0x0F, 0x85, 0x8B, 0x8D, 0x05, 0x15, 0x3D,
                                   0xF6, 0xF7, 0x66, 0xC7, 0x81, 0x80, 0x00, 0x48, 0x94};
    Bytes in;
    const size_t size = 1 + pick(3000);
    while (in.size() < size) {
      switch (pick(4)) {
        case 0:
          in.push_back(kOps[pick(sizeof kOps)]);
          break;
        case 1:
          le(&in, pick(1 << 17) - (1 << 16), 4);
          break;
        case 2:
          if (!m.lower_segs.empty()) {
            const auto& sg = m.lower_segs[pick(m.lower_segs.size())];
            le(&in, sg.vaddr + pick(sg.memsize + 16), 8);
          }
          break;
        default:
          in.push_back(static_cast<uint8_t>(rng()));
      }
    }
    in.resize(size);
    const uint64_t lpos = pick(1 << 16), tpos = pick(1 << 16);
    for (unsigned flags = 0; flags <= delta::kPredictAll; ++flags) {
      Bytes a(in.size()), b(in.size());
      m.Predict(in, lpos, tpos, flags, a.data());
      parsed.Predict(in, lpos, tpos, flags, b.data());
      ASSERT_EQ(a, b) << "round " << round << " flags " << flags;
      for (size_t i = 0; i < in.size(); ++i) rewritten += a[i] != in[i];
      digest.Update(a.data(), a.size());
    }
  }
  EXPECT_GT(rewritten, 20000u);  // the digest covers many predictions
  EXPECT_EQ(HexEncode(digest.Final()),
            "cf1a1a8cb0ed2f7565d3f56e59869f4ef636807e914ac8cd0a674cf4b7381952");
}

}  // namespace
}  // namespace cryptex
