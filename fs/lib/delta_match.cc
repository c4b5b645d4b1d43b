// Match finding for the delta encoder: unchanged 4 KiB blocks by rolling
// hash first, then bsdiff-class approximate matching with a suffix array of
// the lower file (libdivsufsort) for what the blocks did not cover.
#include <divsufsort.h>

#include <algorithm>
#include <bit>
#include <cstring>
#include <limits>
#include <memory>
#include <unordered_map>

#include "delta.h"
#include "delta_internal.h"

namespace cryptex::delta {

namespace {

constexpr uint64_t kBlock = 4096;
constexpr uint64_t kHashMul = 0x9E3779B97F4A7C15ull;
// A suffix array costs 4 bytes per lower byte and time linear in the lower
// size; it is built when the lower file is small or when the bytes that no
// unchanged block covers are a fair share of it.
constexpr uint64_t kSuffixArrayAlwaysBelow = 16u << 20;
constexpr uint64_t kSuffixArrayShare = 16;
// Fewer loose bytes than 1/kWindowShare of the lower file: the suffix array
// covers windows of the lower file around where they would be (Finder),
// unless the windows cover kWindowKeepNum/kWindowKeepDen of it or more.
constexpr uint64_t kWindowShare = 4;
constexpr uint64_t kWindowKeepNum = 3, kWindowKeepDen = 4;
// How far a window reaches either side: 1/16 of the lower file, at least 4
// and at most 16 KiB (what moved in a small module moved less far). With
// these (were 1/8, 16 KiB and 1/2) libc6's patch sorts 6.6 MB instead of
// 9.1 (the 225 gconv modules of about 18 KB are mostly windowed now) and
// is byte-identical; so is the delta of each of the 279 changed files of both Debian pairs.
constexpr uint64_t kWindowMarginMin = 4u << 10, kWindowMarginMax = 16u << 10;
constexpr uint64_t kWindowMarginDiv = 16;
// Search ranges narrowed by the first two bytes (a 256 KiB table) from
// this many sorted bytes on.
constexpr uint64_t kBucketFrom = 64u << 10;
// ... and by the first three bytes (a 64 MiB table) from this many on.
constexpr uint64_t kBucket3From = 16u << 20;
// A new exact match must beat continuing the current alignment by this many
// bytes to start a new control entry.
constexpr uint64_t kMinGain = 8;
// After kStrideAfter searches in a row that found nothing to switch to, the
// scan searches every kStride-th target position only (FindMatches).
constexpr uint64_t kStrideAfter = 32;
constexpr uint64_t kStride = 8;
// A target of 2 * kScanPiece bytes or more whose lower file is sorted whole
// is scanned in pieces of this many bytes, in parallel (FindMatches).
constexpr uint64_t kScanPiece = 4u << 20;

// Polynomial hash of one block; Roll() slides it by one byte.
struct BlockHash {
  uint64_t top = 1;  // kHashMul^(kBlock-1)
  BlockHash() {
    for (uint64_t i = 1; i < kBlock; ++i) top *= kHashMul;
  }
  // sum of (p[i] + 1) * kHashMul^(kBlock-1-i), four bytes per step so that
  // the multiply chain is a quarter as long (same value as a byte loop).
  static uint64_t Of(const uint8_t* p) {
    constexpr uint64_t m2 = kHashMul * kHashMul, m3 = m2 * kHashMul, m4 = m3 * kHashMul;
    uint64_t h = 0;
    for (uint64_t i = 0; i < kBlock; i += 4) {
      h = h * m4 + (p[i] + uint64_t{1}) * m3 + (p[i + 1] + uint64_t{1}) * m2 +
          (p[i + 2] + uint64_t{1}) * kHashMul + (p[i + 3] + uint64_t{1});
    }
    return h;
  }
  uint64_t Roll(uint64_t h, uint8_t out, uint8_t in) const {
    return (h - (uint64_t{out} + 1) * top) * kHashMul + in + 1;
  }
};

// Length of the common prefix of a[0..n) and b[0..n), compared 8 bytes at a
// time (the first differing byte of a word is its lowest set byte of a ^ b
// on a little-endian machine, the highest on a big-endian one).
uint64_t CommonPrefix(const uint8_t* a, const uint8_t* b, uint64_t n) {
  uint64_t i = 0;
  for (; n - i >= 8; i += 8) {
    uint64_t x, y;
    std::memcpy(&x, a + i, 8);
    std::memcpy(&y, b + i, 8);
    if (x != y) {
      const uint64_t d = x ^ y;
      if constexpr (std::endian::native == std::endian::little) {
        return i + static_cast<uint64_t>(std::countr_zero(d)) / 8;
      } else {
        return i + static_cast<uint64_t>(std::countl_zero(d)) / 8;
      }
    }
  }
  while (i < n && a[i] == b[i]) ++i;
  return i;
}

uint64_t MatchLen(const uint8_t* a, uint64_t na, const uint8_t* b, uint64_t nb) {
  return CommonPrefix(a, b, std::min(na, nb));
}

// Counts the input bytes a pass reads and calls `release` after every
// kDeltaReleaseEvery of them (DeltaOptions::release_inputs).
class Pacer {
 public:
  explicit Pacer(const std::function<void()>& release)
      : release_(release), every_(release ? kDeltaReleaseEvery : UINT64_MAX) {}
  void Read(uint64_t n) {
    read_ += n;
    if (read_ >= every_) {
      read_ = 0;
      release_();
    }
  }

 private:
  const std::function<void()>& release_;
  const uint64_t every_;
  uint64_t read_ = 0;
};

// Loops below that may run over megabytes tell the pacer in steps of this
// many iterations (per iteration would cost more than the loops' work).
constexpr uint64_t kPaceStep = 64 << 10;

// Runs body(a, b) over [from, to) cut into pieces [a, b) of at most
// kPaceStep, telling `pacer` after each.
template <typename Body>
void PacedPieces(uint64_t from, uint64_t to, Pacer* pacer, const Body& body) {
  while (from < to) {
    const uint64_t stop = to - from > kPaceStep ? from + kPaceStep : to;
    body(from, stop);
    pacer->Read(stop - from);
    from = stop;
  }
}

// Runs body(i) for i in [from, to), telling `pacer` every kPaceStep.
template <typename Body>
void PacedLoop(uint64_t from, uint64_t to, Pacer* pacer, const Body& body) {
  PacedPieces(from, to, pacer, [&](uint64_t a, uint64_t b) {
    for (uint64_t i = a; i < b; ++i) body(i);
  });
}

// Positions i < n where a[i] == b[i] (a loop the compiler vectorises).
uint64_t CountEqual(const uint8_t* a, const uint8_t* b, uint64_t n) {
  uint64_t c = 0;
  for (uint64_t i = 0; i < n; ++i) c += a[i] == b[i];
  return c;
}

// MatchLen for runs that may be long (megabytes): compared in steps, paced.
uint64_t LongMatchLen(const uint8_t* a, uint64_t na, const uint8_t* b, uint64_t nb, Pacer* pacer) {
  const uint64_t n = std::min(na, nb);
  uint64_t i = 0;
  while (n - i >= kPaceStep && std::memcmp(a + i, b + i, kPaceStep) == 0) {
    i += kPaceStep;
    pacer->Read(2 * kPaceStep);
  }
  return i + MatchLen(a + i, n - i, b + i, n - i);
}

// Exact matches of whole lower blocks (extended both ways), sorted by tpos.
std::vector<Match> BlockAnchors(std::span<const uint8_t> L, std::span<const uint8_t> T,
                                Pacer* pacer) {
  std::vector<Match> anchors;
  const uint64_t n = L.size(), m = T.size();
  if (n < kBlock || m < kBlock) return anchors;
  std::unordered_map<uint64_t, uint64_t> blocks;  // hash -> first lower block offset
  blocks.reserve(n / kBlock);
  std::vector<uint64_t> filter((n / kBlock * 8 + 63) / 64 + 1, 0);  // 8 bits per block
  const uint64_t filter_bits = filter.size() * 64;
  for (uint64_t off = 0; off + kBlock <= n; off += kBlock) {
    const uint64_t h = BlockHash::Of(&L[off]);
    pacer->Read(kBlock);
    blocks.emplace(h, off);
    const uint64_t bit = (h >> 17) % filter_bits;
    filter[bit / 64] |= uint64_t{1} << (bit % 64);
  }
  const BlockHash roller;
  uint64_t t = 0, prev_end = 0;
  uint64_t h = BlockHash::Of(&T[0]);
  while (t + kBlock <= m) {
    const uint64_t bit = (h >> 17) % filter_bits;
    if (filter[bit / 64] & (uint64_t{1} << (bit % 64))) {
      auto it = blocks.find(h);
      if (it != blocks.end() && std::memcmp(&T[t], &L[it->second], kBlock) == 0) {
        uint64_t ts = t, ls = it->second;
        while (ts > prev_end && ls > 0 && T[ts - 1] == L[ls - 1]) --ts, --ls;
        const uint64_t len =
            (t - ts) + kBlock +
            LongMatchLen(T.data() + t + kBlock, m - t - kBlock, L.data() + it->second + kBlock,
                         n - it->second - kBlock, pacer);
        anchors.push_back({ts, ls, len});
        prev_end = t = ts + len;
        if (t + kBlock <= m) h = BlockHash::Of(&T[t]);
        continue;
      }
    }
    if (t + kBlock < m) h = roller.Roll(h, T[t], T[t + kBlock]);
    if ((++t & (kPaceStep - 1)) == 0) pacer->Read(kPaceStep);
  }
  return anchors;
}

class Finder {
 public:
  Finder(std::span<const uint8_t> L, std::span<const uint8_t> T, Pacer* pacer) : L_(L), T_(T) {
    anchors_ = BlockAnchors(L, T, pacer);
    uint64_t covered = 0;
    for (const auto& a : anchors_) covered += a.size;
    const uint64_t loose = T.size() - covered;
    const uint64_t n = L.size();
    if (n == 0 || loose == 0) return;
    if (!anchors_.empty() && loose * kWindowShare < n && Windows(n)) {
      S_ = windowed_;
    } else if (n <= kSuffixArrayAlwaysBelow || loose * kSuffixArrayShare >= n) {
      S_ = L;
    } else {
      return;
    }
    if (S_.size() >= uint64_t{std::numeric_limits<int32_t>::max()}) return;
    // Not zeroed: divsufsort writes every entry.
    std::unique_ptr<saidx_t[]> sa(new saidx_t[S_.size()]);
    if (divsufsort(S_.data(), sa.get(), static_cast<saidx_t>(S_.size())) == 0) {
      sa_ = std::move(sa);
      if (S_.size() >= kBucketFrom) Bucket();
    }
    pacer->Read(S_.size());
  }

  // The first anchor that ends after target position t.
  size_t FirstAnchor(uint64_t t) const {
    return static_cast<size_t>(
        std::upper_bound(anchors_.begin(), anchors_.end(), t,
                         [](uint64_t x, const Match& a) { return x < a.tpos + a.size; }) -
        anchors_.begin());
  }
  // Whether the suffix array sorts all of the lower file (its pages are
  // all read then).
  bool SortedWhole() const { return sa_ != nullptr && windows_.empty(); }

  // The longest exact match found for target[t..end): (lower pos,
  // length). `cursor`: the scan's place in the anchors, which it must
  // start at FirstAnchor(its first t) and which Search moves; searches of
  // one scan come in increasing target order. Safe to call from several
  // threads at once (each with its own cursor).
  std::pair<uint64_t, uint64_t> Search(uint64_t t, uint64_t end, size_t* cursor) const {
    size_t& c = *cursor;
    while (c < anchors_.size() && anchors_[c].tpos + anchors_[c].size <= t) ++c;
    if (c < anchors_.size() && anchors_[c].tpos <= t) {
      const Match& a = anchors_[c];
      return {a.lpos + (t - a.tpos), std::min(a.tpos + a.size, end) - t};
    }
    if (sa_ == nullptr) return {0, 0};
    auto [pos, len] = SearchSa(t);
    len = std::min(len, end - t);
    if (windows_.empty()) return {pos, len};
    // A position in the windows' concatenation: back to the lower file, and
    // cut where its window ends.
    const auto w =
        std::prev(std::upper_bound(windows_.begin(), windows_.end(), pos,
                                   [](uint64_t p, const Window& x) { return p < x.offset; }));
    const uint64_t in = pos - w->offset;
    return {w->lpos + in, std::min(len, w->size - in)};
  }

 private:
  // A lower range searched when few target bytes are loose, and its offset
  // in windowed_.
  struct Window {
    uint64_t lpos, size, offset;
  };

  // When the anchors leave few target bytes loose, most of what matches them
  // lies near where they would sit in the lower file: the suffix array then
  // covers windows of a margin (kWindowMargin*) either side of those places
  // (merged), copied one after another into windowed_. False when the
  // windows would cover 3/4 of the lower file or more (then it is sorted
  // whole).
  bool Windows(uint64_t n) {
    std::vector<std::pair<uint64_t, uint64_t>> ranges;  // [from, to) in L
    const uint64_t m = T_.size();
    const uint64_t margin =
        std::clamp<uint64_t>(n / kWindowMarginDiv, kWindowMarginMin, kWindowMarginMax);
    auto add = [&](uint64_t ts, uint64_t te) {
      if (ts >= te) return;
      // Where [ts, te) would lie continuing the anchor before it, or leading
      // up to the one after it (either may be missing).
      const auto next = std::lower_bound(anchors_.begin(), anchors_.end(), te,
                                         [](const Match& a, uint64_t t) { return a.tpos < t; });
      uint64_t lo = UINT64_MAX, hi = 0;
      if (next != anchors_.begin()) {
        const Match& a = *std::prev(next);
        lo = std::min(lo, a.lpos + (ts - a.tpos));
        hi = std::max(hi, a.lpos + (te - a.tpos));
      }
      if (next != anchors_.end()) {
        const Match& b = *next;
        const uint64_t back = b.tpos - ts;
        lo = std::min(lo, b.lpos >= back ? b.lpos - back : 0);
        hi = std::max(hi, b.lpos >= b.tpos - te ? b.lpos - (b.tpos - te) : 0);
      }
      lo = std::min(lo, n);
      lo = lo > margin ? lo - margin : 0;
      hi = std::min(n, std::max(hi, lo) + margin);
      if (lo < hi) ranges.emplace_back(lo, hi);
    };
    uint64_t t = 0;
    for (const Match& a : anchors_) {
      add(t, a.tpos);
      t = a.tpos + a.size;
    }
    add(t, m);
    std::sort(ranges.begin(), ranges.end());
    uint64_t total = 0;
    for (const auto& [from, to] : ranges) {
      if (!windows_.empty() && from <= windows_.back().lpos + windows_.back().size) {
        Window& last = windows_.back();
        const uint64_t end = std::max(last.lpos + last.size, to);
        total += end - (last.lpos + last.size);
        last.size = end - last.lpos;
      } else {
        windows_.push_back({from, to - from, total});
        total += to - from;
      }
    }
    if (windows_.empty() || total * kWindowKeepDen >= n * kWindowKeepNum) {
      windows_.clear();
      return false;
    }
    windowed_.reserve(total);
    for (const Window& w : windows_) {
      windowed_.insert(windowed_.end(), L_.begin() + w.lpos, L_.begin() + w.lpos + w.size);
    }
    return true;
  }

  // bucket_[k] = the first suffix array index whose suffix is at least the
  // key_bytes_ bytes of k (big-endian); a suffix shorter than that counts as
  // less than every longer one it is a prefix of.
  void Bucket() {
    const uint64_t n = S_.size();
    key_bytes_ = n >= kBucket3From ? 3 : 2;
    const uint32_t keys = 1u << (8 * key_bytes_);
    bucket_.assign(size_t{keys} + 1, 0);
    // A suffix of key K is counted in bucket_[K + 1] (less than the keys
    // after K); one shorter than a key, in bucket_[K] of its bytes padded
    // with zeros (less than that key too).
    for (uint64_t i = 0; i + key_bytes_ <= n; ++i) ++bucket_[Key(&S_[i]) + 1];
    for (uint64_t i = n - key_bytes_ + 1; i < n; ++i) {
      uint32_t k = 0;
      for (uint64_t j = i; j < i + key_bytes_; ++j) k = k << 8 | (j < n ? S_[j] : 0);
      ++bucket_[k];
    }
    for (uint32_t k = 1; k <= keys; ++k) bucket_[k] += bucket_[k - 1];
  }
  uint32_t Key(const uint8_t* p) const {
    return key_bytes_ == 3 ? uint32_t{p[0]} << 16 | uint32_t{p[1]} << 8 | p[2]
                           : uint32_t{p[0]} << 8 | p[1];
  }

  // The binary search of bsdiff over the sorted suffixes, narrowed to the
  // suffixes that share the query's first key_bytes_ bytes, and skipping the
  // prefix that both ends of the range already share with the query. It
  // returns what a search over the whole array would.
  std::pair<uint64_t, uint64_t> SearchSa(uint64_t t) const {
    const uint8_t* q = &T_[t];
    const uint64_t qn = T_.size() - t, n = S_.size();
    uint64_t lo = 0, hi = n - 1;
    if (!bucket_.empty() && qn >= key_bytes_) {
      const uint32_t k = Key(q);
      // Clamped as the whole search's ends are, so that it ends on the same
      // pair of neighbours.
      lo = std::min<uint64_t>(std::max<uint64_t>(bucket_[k], 1) - 1, n - 2);
      hi = std::max<uint64_t>(std::min<uint64_t>(bucket_[k + 1], n - 1), lo + 1);
    }
    constexpr uint64_t kUnknown = UINT64_MAX;
    uint64_t lo_len = kUnknown, hi_len = kUnknown;  // common prefix with q
    while (hi - lo > 1) {
      const uint64_t mid = lo + (hi - lo) / 2;
      // Each step waits on two cache misses (the suffix array entry, then
      // its text) on a large file: fetch ahead the text of both places the
      // search may go next (their entries were fetched a step ago) and the
      // entries of the four places after those. 129 -> 69 s on a 177 MB
      // library (together with the three-byte buckets).
      const uint64_t c1 = lo + (mid - lo) / 2, c2 = mid + (hi - mid) / 2;
      __builtin_prefetch(&S_[static_cast<uint64_t>(sa_[c1])]);
      __builtin_prefetch(&S_[static_cast<uint64_t>(sa_[c2])]);
      __builtin_prefetch(&sa_[lo + (c1 - lo) / 2]);
      __builtin_prefetch(&sa_[c1 + (mid - c1) / 2]);
      __builtin_prefetch(&sa_[mid + (c2 - mid) / 2]);
      __builtin_prefetch(&sa_[c2 + (hi - c2) / 2]);
      const uint64_t p = static_cast<uint64_t>(sa_[mid]);
      const uint64_t k = std::min(n - p, qn);
      const uint64_t skip =
          lo_len == kUnknown || hi_len == kUnknown ? 0 : std::min({lo_len, hi_len, k});
      const uint64_t len = skip + CommonPrefix(&S_[p] + skip, q + skip, k - skip);
      if (len < k ? S_[p + len] < q[len] : n - p < qn) {
        lo = mid;
        lo_len = len;
      } else {
        hi = mid;
        hi_len = len;
      }
    }
    auto len_at = [&](uint64_t i, uint64_t known) {
      if (known != kUnknown) return known;
      const uint64_t p = static_cast<uint64_t>(sa_[i]);
      return MatchLen(&S_[p], n - p, q, qn);
    };
    const uint64_t a = len_at(lo, lo_len), b = len_at(hi, hi_len);
    return a >= b ? std::pair{static_cast<uint64_t>(sa_[lo]), a}
                  : std::pair{static_cast<uint64_t>(sa_[hi]), b};
  }

  std::span<const uint8_t> L_, T_;
  std::vector<Match> anchors_;
  std::vector<Window> windows_;    // empty: S_ is all of L_
  std::vector<uint8_t> windowed_;  // the windows' bytes, when there are windows
  std::span<const uint8_t> S_;     // what the suffix array sorts
  std::unique_ptr<saidx_t[]> sa_;  // the suffix array, if built
  std::vector<uint32_t> bucket_;
  uint64_t key_bytes_ = 2;
};

// The scan follows Percival's bsdiff: walk the target; at each position take
// the longest exact match, but only start a new alignment when it beats the
// current one (old_score: bytes the current alignment gets right over the
// same span) by kMinGain bytes. Between two alignments, each is extended
// approximately (forward / backward, keeping at least half the bytes equal);
// what neither covers is extra data.
//
// This scans target bytes [t0, t1) and appends their matches to `out`: it
// starts there as it would at the start of a file (the identity alignment)
// and no match runs past t1.
void Scan(const Finder& finder, std::span<const uint8_t> L, std::span<const uint8_t> T, uint64_t t0,
          uint64_t t1, Pacer* pacing, std::vector<Match>* out_matches) {
  Pacer& pacer = *pacing;
  std::vector<Match>& out = *out_matches;
  const uint64_t n = L.size(), m = t1;
  auto same = [&](uint64_t t, int64_t off) {
    const uint64_t l = t + static_cast<uint64_t>(off);
    return l < n && L[l] == T[t];
  };
  size_t cursor = finder.FirstAnchor(t0);
  uint64_t scan = t0, len = 0, pos = 0, last_scan = t0, last_pos = t0;
  int64_t last_off = 0;
  while (scan < m) {
    // old_score: target bytes in [scan, scsc) that the current alignment
    // (last_off) gets right.
    uint64_t old_score = 0;
    scan += len;
    uint64_t scsc = scan;
    uint64_t fruitless = 0;  // searches in a row that found nothing to switch to
    while (scan < m) {
      std::tie(pos, len) = finder.Search(scan, m, &cursor);
      pacer.Read(1);
      scsc = std::max(scsc, scan);
      if (scsc < scan + len) {
        PacedPieces(scsc, scan + len, &pacer, [&](uint64_t a, uint64_t b) {
          const int64_t la = static_cast<int64_t>(a) + last_off;
          if (la >= 0 && static_cast<uint64_t>(la) + (b - a) <= n) {  // all within L
            old_score += CountEqual(&L[static_cast<uint64_t>(la)], &T[a], b - a);
          } else {
            for (uint64_t k = a; k < b; ++k) old_score += same(k, last_off);
          }
        });
        scsc = scan + len;
      }
      if ((len == old_score && len != 0) || len > old_score + kMinGain) break;
      // Deep in bytes that nothing matches well (new code, not moved code),
      // only every kStride-th position is searched: a match that starts in
      // between is found up to kStride - 1 bytes late, and the backward
      // extension below takes those bytes back.
      const uint64_t step = ++fruitless >= kStrideAfter ? kStride : 1;
      for (uint64_t k = 0; k < step && scan < m; ++k, ++scan) {
        if (scsc > scan && same(scan, last_off)) --old_score;
      }
    }
    if (len == old_score && scan != m) continue;
    // Forward extension of the previous alignment.
    uint64_t lenf = 0;
    {
      int64_t s = 0, best = 0;
      const uint64_t lim = std::min(scan - last_scan, last_pos < n ? n - last_pos : 0);
      PacedPieces(0, lim, &pacer, [&](uint64_t a, uint64_t b) {
        constexpr uint64_t kRun = 64;
        for (uint64_t i = a; i < b;) {
          // A run of kRun equal bytes raises 2*s - (i + 1) by one per byte,
          // so the byte loop would end it with its last byte the best.
          if (b - i >= kRun && std::memcmp(&L[last_pos + i], &T[last_scan + i], kRun) == 0) {
            s += static_cast<int64_t>(kRun);
            i += kRun;
            if (2 * s - static_cast<int64_t>(i) > 2 * best - static_cast<int64_t>(lenf)) {
              best = s;
              lenf = i;
            }
            continue;
          }
          // Else byte by byte, for a run's length (a failed compare per byte
          // would cost more than the loop).
          for (const uint64_t e = std::min(b, i + kRun); i < e; ++i) {
            if (L[last_pos + i] == T[last_scan + i]) ++s;
            if (2 * s - static_cast<int64_t>(i + 1) > 2 * best - static_cast<int64_t>(lenf)) {
              best = s;
              lenf = i + 1;
            }
          }
        }
      });
    }
    // Backward extension of the new one.
    uint64_t lenb = 0;
    if (scan < m) {
      int64_t s = 0, best = 0;
      const uint64_t lim = std::min(scan - last_scan, pos);  // i in [1, lim]
      PacedLoop(1, lim + 1, &pacer, [&](uint64_t i) {
        if (L[pos - i] == T[scan - i]) ++s;
        if (2 * s - static_cast<int64_t>(i) > 2 * best - static_cast<int64_t>(lenb)) {
          best = s;
          lenb = i;
        }
      });
    }
    // Where both claim the same target bytes, split where the sum is best.
    if (last_scan + lenf > scan - lenb) {
      const uint64_t overlap = (last_scan + lenf) - (scan - lenb);
      int64_t s = 0, best = 0;
      uint64_t lens = 0;
      for (uint64_t i = 0; i < overlap; ++i) {
        const uint64_t t = last_scan + lenf - overlap + i;
        if (T[t] == L[last_pos + lenf - overlap + i]) ++s;
        if (T[t] == L[pos - lenb + i]) --s;
        if (s > best) {
          best = s;
          lens = i + 1;
        }
      }
      lenf += lens - overlap;
      lenb -= lens;
    }
    if (lenf > 0) out.push_back({last_scan, last_pos, lenf});
    last_scan = scan - lenb;
    last_pos = pos - lenb;
    last_off = static_cast<int64_t>(pos) - static_cast<int64_t>(scan);
  }
}

}  // namespace

std::vector<Match> FindMatches(std::span<const uint8_t> L, std::span<const uint8_t> T,
                               const std::function<void()>& release, unsigned threads) {
  std::vector<Match> out;
  const uint64_t n = L.size(), m = T.size();
  if (n == 0 || m == 0) return out;
  Pacer pacer(release);
  const Finder finder(L, T, &pacer);
  if (!finder.SortedWhole() || m < 2 * kScanPiece) {
    Scan(finder, L, T, 0, m, &pacer, &out);
    return out;
  }
  // A large file sorted whole: the scan (most of the time, on new code)
  // runs over pieces of kScanPiece target bytes, on `threads` threads. The
  // pieces do not depend on the threads, so neither do the matches. On
  // several threads nothing is released until every scan is done: both
  // inputs stay resident meanwhile (the sort read all of the lower file
  // anyway).
  const uint64_t pieces = (m + kScanPiece - 1) / kScanPiece;
  if (threads <= 1) {  // the same pieces, paced
    for (uint64_t i = 0; i < pieces; ++i) {
      Scan(finder, L, T, i * kScanPiece, std::min(m, (i + 1) * kScanPiece), &pacer, &out);
    }
    return out;
  }
  std::vector<std::vector<Match>> parts(pieces);
  ParallelFor(pieces, static_cast<unsigned>(std::min<uint64_t>(threads, pieces)),
              [&](unsigned, uint64_t i) {
                static const std::function<void()> kNoRelease;
                Pacer quiet(kNoRelease);
                Scan(finder, L, T, i * kScanPiece, std::min(m, (i + 1) * kScanPiece), &quiet,
                     &parts[i]);
              });
  for (const auto& part : parts) out.insert(out.end(), part.begin(), part.end());
  if (release) release();
  return out;
}

}  // namespace cryptex::delta
