// The ELF reference model of the delta codec: predicts the new value of a
// code or data reference from where its target moved (delta_internal.h).
#include <algorithm>
#include <array>
#include <bit>
#include <cstring>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "delta_internal.h"

namespace cryptex::delta {

namespace {

inline uint32_t Le32(const uint8_t* p) {
  return uint32_t{p[0]} | uint32_t{p[1]} << 8 | uint32_t{p[2]} << 16 | uint32_t{p[3]} << 24;
}
inline uint64_t Le64(const uint8_t* p) { return uint64_t{Le32(p)} | uint64_t{Le32(p + 4)} << 32; }
uint16_t Le16(const uint8_t* p) { return static_cast<uint16_t>(p[0] | p[1] << 8); }
void StoreLe32(uint8_t* p, uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}
void StoreLe64(uint8_t* p, uint64_t v) {
  for (int i = 0; i < 8; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}

constexpr uint16_t kEmX86_64 = 62;
constexpr uint16_t kEmAArch64 = 183;
constexpr uint32_t kPtLoad = 1;
constexpr uint32_t kPtGnuEhFrame = 0x6474e550;
// .eh_frame_hdr: version, 3 encodings, eh_frame_ptr, fde_count, then the
// table of (initial location, FDE address) pairs relative to its start.
constexpr uint64_t kEhHdrTableOffset = 12;

// x86-64 opcodes taking a ModRM operand, for which ModRM mod=00 rm=101
// means a RIP-relative disp32 (one-byte map / 0F map): the size of the
// immediate that follows the disp32 (kImmF6F7: 1 or 4 bytes for /0 and /1,
// else none), or kNotRip.
constexpr int8_t kNotRip = -1;
constexpr int8_t kImmF6F7 = -2;
struct OpcodeSet {
  std::array<int8_t, 256> one{}, two{};
  OpcodeSet() {
    one.fill(kNotRip);
    two.fill(kNotRip);
    for (int op : {0x00, 0x01, 0x02, 0x03, 0x08, 0x09, 0x0A, 0x0B, 0x10, 0x11, 0x12, 0x13,
                   0x18, 0x19, 0x1A, 0x1B, 0x20, 0x21, 0x22, 0x23, 0x28, 0x29, 0x2A, 0x2B,
                   0x30, 0x31, 0x32, 0x33, 0x38, 0x39, 0x3A, 0x3B, 0x63, 0x84, 0x85, 0x86,
                   0x87, 0x88, 0x89, 0x8A, 0x8B, 0x8D, 0xD0, 0xD1, 0xD2, 0xD3, 0xFE, 0xFF}) {
      one[op] = 0;
    }
    for (int op : {0x80, 0x83, 0x6B, 0xC0, 0xC1, 0xC6}) one[op] = 1;
    for (int op : {0x81, 0x69, 0xC7}) one[op] = 4;
    one[0xF6] = one[0xF7] = kImmF6F7;
    for (int op : {0x10, 0x11, 0x12, 0x13, 0x16, 0x17, 0x18, 0x28, 0x29, 0x2A, 0x2C, 0x2D, 0x2E,
                   0x2F, 0x51, 0x54, 0x55, 0x56, 0x57, 0x58, 0x59, 0x5A, 0x5C, 0x5D, 0x5E, 0x5F,
                   0x6E, 0x6F, 0x7E, 0x7F, 0xA3, 0xAB, 0xAF, 0xB0, 0xB1, 0xB3, 0xB6, 0xB7, 0xBB,
                   0xBE, 0xBF, 0xC0, 0xC1, 0xD4, 0xD6, 0xDB, 0xEB, 0xEF, 0xFE}) {
      two[op] = 0;
    }
    for (int op = 0x40; op <= 0x4F; ++op) two[op] = 0;  // cmovcc
    for (int op = 0x90; op <= 0x9F; ++op) two[op] = 0;  // setcc
    for (int op : {0x70, 0xA4, 0xAC, 0xBA, 0xC2, 0xC6}) two[op] = 1;
  }
};

const OpcodeSet& Opcodes() {
  static const OpcodeSet kSet;
  return kSet;
}

bool FitsInt32(int64_t v) { return v >= INT32_MIN && v <= INT32_MAX; }

}  // namespace

bool ParseElfLoads(std::span<const uint8_t> f, Arch* arch, std::vector<LoadSegment>* segs,
                   uint64_t* ehhdr_va, uint64_t* ehhdr_size) {
  segs->clear();
  *ehhdr_va = *ehhdr_size = 0;
  if (f.size() < 64 || std::memcmp(f.data(),
                                   "\x7f"
                                   "ELF",
                                   4) != 0)
    return false;
  if (f[4] != 2 || f[5] != 1) return false;  // ELFCLASS64, little endian
  const uint16_t machine = Le16(&f[18]);
  if (machine == kEmX86_64) {
    *arch = Arch::kX86_64;
  } else if (machine == kEmAArch64) {
    *arch = Arch::kAArch64;
  } else {
    return false;
  }
  const uint64_t phoff = Le64(&f[32]);
  const uint16_t phentsize = Le16(&f[54]), phnum = Le16(&f[56]);
  if (phentsize < 56 || phoff > f.size() || uint64_t{phnum} * phentsize > f.size() - phoff) {
    return false;
  }
  for (uint16_t i = 0; i < phnum && segs->size() < kMaxLoadSegments; ++i) {
    const uint8_t* ph = &f[phoff + uint64_t{i} * phentsize];
    if (Le32(ph) == kPtGnuEhFrame) {
      *ehhdr_va = Le64(ph + 16);
      *ehhdr_size = Le64(ph + 40);
    }
    if (Le32(ph) != kPtLoad) continue;
    LoadSegment s{Le64(ph + 8), Le64(ph + 16), Le64(ph + 32), Le64(ph + 40)};
    if (s.offset > f.size()) continue;
    s.size = std::min<uint64_t>(s.size, f.size() - s.offset);
    s.memsize = std::max(s.memsize, s.size);
    if (s.size > 0 && s.vaddr + s.memsize > s.vaddr) segs->push_back(s);
  }
  return !segs->empty();
}

bool OffsetToVa(const std::vector<LoadSegment>& segs, uint64_t off, uint64_t* va) {
  for (const auto& s : segs) {
    if (off >= s.offset && off - s.offset < s.size) {
      *va = s.vaddr + (off - s.offset);
      return true;
    }
  }
  return false;
}

bool VaToOffset(const std::vector<LoadSegment>& segs, uint64_t va, uint64_t* off) {
  for (const auto& s : segs) {
    if (va >= s.vaddr && va - s.vaddr < s.size) {
      *off = s.offset + (va - s.vaddr);
      return true;
    }
  }
  return false;
}

std::vector<uint8_t> RefModel::Serialize() const {
  std::vector<uint8_t> out;
  out.push_back(static_cast<uint8_t>(arch));
  for (const auto* v : {&lower_segs, &target_segs}) {
    PutVarint(&out, v->size());
    for (const auto& s : *v) {
      PutVarint(&out, s.offset);
      PutVarint(&out, s.vaddr);
      PutVarint(&out, s.size);
      PutVarint(&out, s.memsize - s.size);
    }
  }
  PutVarint(&out, lower_ehhdr_va);
  PutVarint(&out, lower_ehhdr_size);
  PutVarint(&out, target_ehhdr_va);
  PutVarint(&out, moves.size());
  uint64_t prev_end = 0;
  int64_t prev_shift = 0;
  for (const auto& m : moves) {
    PutVarint(&out, m.lower - prev_end);
    PutVarint(&out, m.size);
    PutVarint(&out, ZigZag(m.shift - prev_shift));
    prev_end = m.lower + m.size;
    prev_shift = m.shift;
  }
  return out;
}

bool RefModel::Parse(std::span<const uint8_t> bytes, RefModel* m, std::string* why) {
  m->index_.reset();
  ByteCursor in(bytes);
  uint8_t arch = 0;
  if (!in.U8(&arch) || (arch != uint8_t(Arch::kX86_64) && arch != uint8_t(Arch::kAArch64))) {
    *why = "reference model: unknown architecture";
    return false;
  }
  m->arch = static_cast<Arch>(arch);
  for (auto* v : {&m->lower_segs, &m->target_segs}) {
    uint64_t n = 0;
    if (!in.Varint(&n) || n > kMaxLoadSegments) {
      *why = "reference model: bad load segment count";
      return false;
    }
    v->resize(n);
    for (auto& s : *v) {
      uint64_t bss = 0;
      if (!in.Varint(&s.offset) || !in.Varint(&s.vaddr) || !in.Varint(&s.size) ||
          !in.Varint(&bss) || s.offset + s.size < s.offset || s.size + bss < s.size ||
          s.vaddr + s.size + bss < s.vaddr) {
        *why = "reference model: bad load segment";
        return false;
      }
      s.memsize = s.size + bss;
    }
  }
  if (!in.Varint(&m->lower_ehhdr_va) || !in.Varint(&m->lower_ehhdr_size) ||
      !in.Varint(&m->target_ehhdr_va)) {
    *why = "reference model: bad eh_frame_hdr";
    return false;
  }
  uint64_t n = 0;
  if (!in.Varint(&n) || n > in.remaining() / 3) {
    *why = "reference model: bad move count";
    return false;
  }
  m->moves.resize(n);
  uint64_t prev_end = 0;
  int64_t prev_shift = 0;
  for (auto& mv : m->moves) {
    uint64_t gap = 0, zz = 0;
    if (!in.Varint(&gap) || !in.Varint(&mv.size) || !in.Varint(&zz) || mv.size == 0 ||
        prev_end + gap < prev_end || prev_end + gap + mv.size < prev_end + gap) {
      *why = "reference model: bad move";
      return false;
    }
    mv.lower = prev_end + gap;
    mv.shift = static_cast<int64_t>(static_cast<uint64_t>(prev_shift) +
                                    static_cast<uint64_t>(UnZigZag(zz)));
    prev_end = mv.lower + mv.size;
    prev_shift = mv.shift;
  }
  if (in.remaining() != 0) {
    *why = "reference model: trailing bytes";
    return false;
  }
  m->BuildIndex();
  return true;
}

// ---- index ---------------------------------------------------------------------

// A map of the whole uint64_t key space, cut into pieces [lo, hi] (sorted,
// covering 0..UINT64_MAX); each piece maps to a payload or to nothing.
// Built from intervals in priority order: a key maps to the first interval
// holding it, exactly as a linear search of them in that order would.
struct PieceMap {
  struct Payload {
    bool found = false;
    uint64_t a = 0, b = 0, c = 0;  // meaning chosen by the builder
  };
  struct Interval {
    uint64_t lo = 0, len = 0;  // [lo, lo + len), saturating at UINT64_MAX
    Payload payload;
  };
  struct Piece {
    uint64_t lo = 0, hi = 0;  // inclusive
    Payload payload;
  };
  std::vector<Piece> pieces;

  // O(intervals^2): intervals are load segments, at most 2 * kMaxLoadSegments.
  static PieceMap Build(const std::vector<Interval>& intervals) {
    std::vector<uint64_t> starts{0};
    auto last = [](const Interval& v) {
      return v.len - 1 > UINT64_MAX - v.lo ? UINT64_MAX : v.lo + (v.len - 1);
    };
    for (const auto& v : intervals) {
      if (v.len == 0) continue;
      starts.push_back(v.lo);
      if (last(v) != UINT64_MAX) starts.push_back(last(v) + 1);
    }
    std::sort(starts.begin(), starts.end());
    starts.erase(std::unique(starts.begin(), starts.end()), starts.end());
    PieceMap m;
    m.pieces.reserve(starts.size());
    for (size_t k = 0; k < starts.size(); ++k) {
      Piece p;
      p.lo = starts[k];
      p.hi = k + 1 < starts.size() ? starts[k + 1] - 1 : UINT64_MAX;
      for (const auto& v : intervals) {  // no start inside a piece: p.lo decides
        if (v.len != 0 && p.lo >= v.lo && p.lo <= last(v)) {
          p.payload = v.payload;
          break;
        }
      }
      m.pieces.push_back(p);
    }
    return m;
  }

  // The piece holding `key`; `*hint` (a previous answer, or null) is tried
  // first, so a run of nearby keys costs no search.
  const Piece& Find(uint64_t key, const Piece** hint) const {
    if (*hint != nullptr && key >= (*hint)->lo && key <= (*hint)->hi) return **hint;
    auto it = std::upper_bound(pieces.begin(), pieces.end(), key,
                               [](uint64_t k, const Piece& p) { return k < p.lo; });
    *hint = &*(it - 1);  // pieces[0].lo == 0
    return **hint;
  }
};

// RefModel's address maps as PieceMaps. Payloads:
//  lower_off, target_off: file offset -> VA = offset + a (wrapping).
//  lower_va: file-backed (c == kFileBacked): lower offset = va + a; bss
//    (c == kBss): va is past = va - a bytes into the bss of lower segment
//    b, which maps to the bss of target segment b if past < bss_limit[b].
struct RefIndex {
  // Bounds the move table at 8 MiB whatever the number of moves.
  static constexpr uint64_t kMaxMoveBuckets = uint64_t{1} << 20;

  PieceMap lower_off, target_off, lower_va;
  std::vector<uint64_t> bss_limit;  // target segment i's bss size
  // Moves by bucket: the moves holding offsets in bucket k (offsets
  // move_base + [k << move_shift, (k + 1) << move_shift)) are among
  // moves[move_first[k] - 1, move_first[k + 1]), where move_first[k] is the
  // upper bound (first move with lower > offset) of the bucket's start.
  uint64_t move_base = 0;
  unsigned move_shift = 0;
  std::vector<size_t> move_first;  // buckets + 1 entries; empty: no moves

  void IndexMoves(const std::vector<Move>& moves);
  // The move holding lower offset `off`, or null.
  const Move* FindMove(const std::vector<Move>& moves, uint64_t off) const;
};

void RefIndex::IndexMoves(const std::vector<Move>& moves) {
  move_first.clear();
  if (moves.empty()) return;
  // Parse and MovesFromMatches: sorted, disjoint, ends do not wrap.
  move_base = moves.front().lower;
  const uint64_t span = moves.back().lower + moves.back().size - move_base;
  // About one bucket per move, at most kMaxMoveBuckets: a lookup is a short
  // binary search in one bucket.
  const uint64_t target = std::min<uint64_t>(moves.size(), kMaxMoveBuckets);
  move_shift = 0;
  while ((span >> move_shift) > target) ++move_shift;
  const uint64_t buckets = (span >> move_shift) + 1;
  move_first.resize(buckets + 1);
  size_t m = 0;
  for (uint64_t k = 0; k <= buckets; ++k) {
    const uint64_t key = k == buckets ? UINT64_MAX : move_base + (k << move_shift);
    while (m < moves.size() && moves[m].lower <= key) ++m;
    move_first[k] = m;
  }
}

const Move* RefIndex::FindMove(const std::vector<Move>& moves, uint64_t off) const {
  if (move_first.empty() || off < move_base) return nullptr;
  const uint64_t k = std::min<uint64_t>((off - move_base) >> move_shift, move_first.size() - 2);
  auto it = std::upper_bound(moves.begin() + move_first[k], moves.begin() + move_first[k + 1], off,
                             [](uint64_t o, const Move& mv) { return o < mv.lower; });
  if (it == moves.begin()) return nullptr;
  --it;
  return off - it->lower < it->size ? &*it : nullptr;
}

namespace {

PieceMap OffsetMap(const std::vector<LoadSegment>& segs) {
  std::vector<PieceMap::Interval> v;
  for (const auto& s : segs) {
    v.push_back({s.offset, s.size, {true, s.vaddr - s.offset, 0, 0}});
  }
  return PieceMap::Build(v);
}

constexpr uint64_t kFileBacked = 0, kBss = 1;

}  // namespace

void RefModel::BuildIndex() { index_ = MakeIndex(); }

std::shared_ptr<const RefIndex> RefModel::MakeIndex() const {
  auto ix = std::make_shared<RefIndex>();
  ix->lower_off = OffsetMap(lower_segs);
  ix->target_off = OffsetMap(target_segs);
  // VaToOffset's order first (any file-backed byte), then the bss rule of
  // the same-numbered segments (TranslateVa's fallback).
  std::vector<PieceMap::Interval> v;
  for (const auto& s : lower_segs) {
    v.push_back({s.vaddr, s.size, {true, s.offset - s.vaddr, 0, kFileBacked}});
  }
  for (size_t i = 0; i < lower_segs.size() && i < target_segs.size(); ++i) {
    const LoadSegment& l = lower_segs[i];
    // l.vaddr + l.memsize does not wrap (Parse, ParseElfLoads).
    v.push_back({l.vaddr + l.size, l.memsize - l.size, {true, l.vaddr + l.size, i, kBss}});
  }
  ix->lower_va = PieceMap::Build(v);
  for (size_t i = 0; i < lower_segs.size() && i < target_segs.size(); ++i) {
    ix->bss_limit.push_back(target_segs[i].memsize - target_segs[i].size);
  }
  ix->IndexMoves(moves);
  return ix;
}

// An index and the pieces last found in it: one per Predict call, so
// concurrent calls share nothing mutable.
struct RefModel::Lookup {
  const RefIndex& ix;
  const std::vector<LoadSegment>& target_segs;
  const std::vector<Move>& moves;
  const PieceMap::Piece *lower_off = nullptr, *target_off = nullptr, *lower_va_hint = nullptr;

  static bool Map(const PieceMap& m, uint64_t key, const PieceMap::Piece** hint, uint64_t* out) {
    const PieceMap::Piece& p = m.Find(key, hint);
    if (!p.payload.found) return false;
    *out = key + p.payload.a;
    return true;
  }
  bool LowerOffsetToVa(uint64_t off, uint64_t* va) {
    return Map(ix.lower_off, off, &lower_off, va);
  }
  bool TargetOffsetToVa(uint64_t off, uint64_t* va) {
    return Map(ix.target_off, off, &target_off, va);
  }
  // lower VA -> target VA of the same byte, if both are known.
  bool TranslateVa(uint64_t lower_va, uint64_t* target_va) {
    const PieceMap::Piece& p = ix.lower_va.Find(lower_va, &lower_va_hint);
    if (!p.payload.found) return false;
    if (p.payload.c == kBss) {
      // The same distance past the file-backed part of the same (by order)
      // load segment.
      const uint64_t past = lower_va - p.payload.a;
      const uint64_t i = p.payload.b;
      if (past >= ix.bss_limit[i]) return false;
      *target_va = target_segs[i].vaddr + target_segs[i].size + past;
      return true;
    }
    const uint64_t off = lower_va + p.payload.a;
    const Move* mv = ix.FindMove(moves, off);
    if (mv == nullptr) return false;
    const uint64_t toff = off + static_cast<uint64_t>(mv->shift);  // wraps harmlessly
    return TargetOffsetToVa(toff, target_va);
  }
};

void RefModel::Predict(std::span<const uint8_t> in, uint64_t lpos, uint64_t tpos, unsigned flags,
                       uint8_t* out) const {
  std::memcpy(out, in.data(), in.size());
  if ((flags & kPredictAll) == 0) return;
  // Not built: the same tables, made for this call.
  const std::shared_ptr<const RefIndex> ix = index_ ? index_ : MakeIndex();
  Lookup lk{*ix, target_segs, moves};
  if (flags & kPredictAbs) PredictAbs(in, lpos, lk, out);
  if (flags & kPredictData32) PredictData32(in, lpos, tpos, lk, out);
  if (flags & kPredictRel) {
    if (arch == Arch::kX86_64) {
      PredictX86(in, lpos, tpos, lk, out);
    } else {
      PredictA64(in, lpos, tpos, lk, out);
    }
  }
}

namespace {

// 0x80 in each byte of v that is zero, 0 in the others (exact, no carries
// between bytes).
inline uint64_t ZeroBytes(uint64_t v) {
  constexpr uint64_t k7F = 0x7F7F7F7F7F7F7F7Full;
  return ~(((v & k7F) + k7F) | v | k7F);
}
inline uint64_t Bytes8(uint8_t b) { return 0x0101010101010101ull * b; }

// Of the 8 positions p[0..7] (p[8] readable), a bit set in byte k of the
// result where an x86 reference may start at p[k]: opcode E8, E9 or 0F, or
// a following ModRM byte with mod = 00, rm = 101. Positions left out are
// ones where PredictX86's test finds nothing, so skipping them is exact.
inline uint64_t X86Candidates(const uint8_t* p) {
  const uint64_t w0 = Le64(p), w1 = Le64(p + 1);
  return ZeroBytes(w0 ^ Bytes8(0x0F)) | ZeroBytes((w0 & Bytes8(0xFE)) ^ Bytes8(0xE8)) |
         ZeroBytes((w1 & Bytes8(0xC7)) ^ Bytes8(0x05));
}

#if defined(__SSE2__)
// X86Candidates for 16 positions p[0..15] (p[16] readable): bit k set where
// a reference may start at p[k]. The same positions, 16 at a time.
inline uint32_t X86Candidates16(const uint8_t* p) {
  const __m128i w0 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  const __m128i w1 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 1));
  const __m128i op =
      _mm_or_si128(_mm_cmpeq_epi8(w0, _mm_set1_epi8(0x0F)),
                   _mm_cmpeq_epi8(_mm_and_si128(w0, _mm_set1_epi8(static_cast<char>(0xFE))),
                                  _mm_set1_epi8(static_cast<char>(0xE8))));
  const __m128i modrm = _mm_cmpeq_epi8(_mm_and_si128(w1, _mm_set1_epi8(static_cast<char>(0xC7))),
                                       _mm_set1_epi8(0x05));
  return static_cast<uint32_t>(_mm_movemask_epi8(_mm_or_si128(op, modrm)));
}
#endif

}  // namespace

// Scans for call/jmp/jcc rel32 and RIP-relative disp32 operands. The scan
// is a pure function of the lower bytes, so encoder and decoder agree; a
// false positive only costs diff bytes.
void RefModel::PredictX86(std::span<const uint8_t> in, uint64_t lpos, uint64_t tpos, Lookup& lk,
                          uint8_t* out) const {
  const OpcodeSet& ops = Opcodes();
  const size_t n = in.size();
  size_t i = 0;
  while (i < n) {
#if defined(__SSE2__)
    if (i + 17 <= n) {  // skip 16 positions at a time where nothing can start
      const uint32_t m = X86Candidates16(&in[i]);
      if (m == 0) {
        i += 16;
        continue;
      }
      i += static_cast<size_t>(std::countr_zero(m));
    } else
#endif
        if (i + 9 <= n) {  // skip 8 positions at a time where nothing can start
      const uint64_t m = X86Candidates(&in[i]);
      if (m == 0) {
        i += 8;
        continue;
      }
      i += static_cast<size_t>(std::countr_zero(m) / 8);
    }
    const uint8_t b = in[i];
    size_t disp = 0;  // offset of the disp32 within `in`; 0 = none
    int imm = 0;      // immediate bytes after the disp32
    auto rip = [&](int8_t kind, size_t modrm) {
      if (kind == kNotRip || modrm >= n || (in[modrm] & 0xC7) != 0x05) return;
      if (kind != kImmF6F7) {
        imm = kind;
      } else if (((in[modrm] >> 3) & 7) <= 1) {  // test r/m, imm
        imm = b == 0xF6 ? 1 : 4;
      }
      // An operand-size prefix shrinks a 4-byte immediate to 2.
      if (imm == 4 && i > 0 && in[i - 1] == 0x66) imm = 2;
      disp = modrm + 1;
    };
    if (b == 0xE8 || b == 0xE9) {
      disp = i + 1;
    } else if (b == 0x0F && i + 1 < n && in[i + 1] >= 0x80 && in[i + 1] <= 0x8F) {
      disp = i + 2;
    } else if (b == 0x0F && i + 1 < n) {
      rip(ops.two[in[i + 1]], i + 2);
    } else {
      rip(ops.one[b], i + 1);
    }
    const size_t end = disp + 4 + static_cast<size_t>(imm);  // the instruction's end
    if (disp == 0 || end > n) {
      ++i;
      continue;
    }
    i = end;
    uint64_t lva = 0, tva = 0, dest = 0;
    if (!lk.LowerOffsetToVa(lpos + disp, &lva) || !lk.TargetOffsetToVa(tpos + disp, &tva)) continue;
    const uint64_t tail = 4 + static_cast<uint64_t>(imm);  // disp32 start to instruction end
    const int32_t d = static_cast<int32_t>(Le32(&in[disp]));
    if (!lk.TranslateVa(lva + tail + static_cast<uint64_t>(int64_t{d}), &dest)) continue;
    const int64_t nd = static_cast<int64_t>(dest - (tva + tail));
    if (FitsInt32(nd)) StoreLe32(&out[disp], static_cast<uint32_t>(nd));
  }
}

// B and BL: imm26 word offsets, on 4-byte aligned words.
void RefModel::PredictA64(std::span<const uint8_t> in, uint64_t lpos, uint64_t tpos, Lookup& lk,
                          uint8_t* out) const {
  for (size_t i = (4 - lpos % 4) % 4; i + 4 <= in.size(); i += 4) {
    const uint32_t w = Le32(&in[i]);
    if ((w & 0x7C000000u) != 0x14000000u) continue;
    uint64_t lva = 0, tva = 0, dest = 0;
    if (!lk.LowerOffsetToVa(lpos + i, &lva) || !lk.TargetOffsetToVa(tpos + i, &tva)) continue;
    const int64_t imm = static_cast<int64_t>(static_cast<int32_t>(w << 6) >> 6) * 4;
    if (!lk.TranslateVa(lva + static_cast<uint64_t>(imm), &dest)) continue;
    const int64_t nd = static_cast<int64_t>(dest - tva);
    if (nd % 4 != 0 || nd < -(int64_t{1} << 27) || nd >= (int64_t{1} << 27)) continue;
    StoreLe32(&out[i], (w & 0xFC000000u) | (static_cast<uint32_t>(nd >> 2) & 0x03FFFFFFu));
  }
}

// 8-byte aligned words holding a lower VA (pointers in data, relocation
// offsets and R_*_RELATIVE addends) become the VA of the moved byte.
void RefModel::PredictAbs(std::span<const uint8_t> in, uint64_t lpos, Lookup& lk,
                          uint8_t* out) const {
  for (size_t i = (8 - lpos % 8) % 8; i + 8 <= in.size(); i += 8) {
    const uint64_t v = Le64(&in[i]);
    uint64_t dest = 0;
    if (v < 4096 || !lk.TranslateVa(v, &dest)) continue;
    StoreLe64(&out[i], dest);
  }
}

// 4-byte aligned int32 words that are offsets: inside the .eh_frame_hdr
// table relative to the table's section, elsewhere relative to the word
// itself (.eh_frame's pc-relative FDE addresses).
void RefModel::PredictData32(std::span<const uint8_t> in, uint64_t lpos, uint64_t tpos, Lookup& lk,
                             uint8_t* out) const {
  for (size_t i = (4 - lpos % 4) % 4; i + 4 <= in.size(); i += 4) {
    uint64_t lva = 0, tva = 0, dest = 0;
    if (!lk.LowerOffsetToVa(lpos + i, &lva) || !lk.TargetOffsetToVa(tpos + i, &tva)) continue;
    const bool in_table = lower_ehhdr_size > kEhHdrTableOffset &&
                          lva - lower_ehhdr_va >= kEhHdrTableOffset &&
                          lva - lower_ehhdr_va < lower_ehhdr_size;
    const uint64_t lbase = in_table ? lower_ehhdr_va : lva;
    const uint64_t tbase = in_table ? target_ehhdr_va : tva;
    const int32_t v = static_cast<int32_t>(Le32(&in[i]));
    if (!lk.TranslateVa(lbase + static_cast<uint64_t>(int64_t{v}), &dest)) continue;
    const int64_t nv = static_cast<int64_t>(dest - tbase);
    if (FitsInt32(nv)) StoreLe32(&out[i], static_cast<uint32_t>(nv));
  }
}

}  // namespace cryptex::delta
