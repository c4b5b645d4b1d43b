// The ELF reference model of the delta codec: predicts the new value of a
// code or data reference from where its target moved (delta_internal.h).
#include <algorithm>
#include <array>
#include <cstring>

#include "delta_internal.h"

namespace cryptex::delta {

namespace {

uint32_t Le32(const uint8_t* p) {
  return uint32_t{p[0]} | uint32_t{p[1]} << 8 | uint32_t{p[2]} << 16 | uint32_t{p[3]} << 24;
}
uint64_t Le64(const uint8_t* p) { return uint64_t{Le32(p)} | uint64_t{Le32(p + 4)} << 32; }
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
  return true;
}

bool RefModel::TranslateVa(uint64_t lower_va, uint64_t* target_va) const {
  uint64_t off = 0;
  if (!VaToOffset(lower_segs, lower_va, &off)) {
    // bss: the same distance past the file-backed part of the same (by
    // order) load segment.
    for (size_t i = 0; i < lower_segs.size() && i < target_segs.size(); ++i) {
      const LoadSegment& l = lower_segs[i];
      const LoadSegment& t = target_segs[i];
      if (lower_va < l.vaddr + l.size || lower_va - l.vaddr >= l.memsize) continue;
      const uint64_t past = lower_va - (l.vaddr + l.size);
      if (past >= t.memsize - t.size) return false;
      *target_va = t.vaddr + t.size + past;
      return true;
    }
    return false;
  }
  auto it = std::upper_bound(moves.begin(), moves.end(), off,
                             [](uint64_t o, const Move& m) { return o < m.lower; });
  if (it == moves.begin()) return false;
  --it;
  if (off - it->lower >= it->size) return false;
  const uint64_t toff = off + static_cast<uint64_t>(it->shift);  // wraps harmlessly
  return OffsetToVa(target_segs, toff, target_va);
}

void RefModel::Predict(std::span<const uint8_t> in, uint64_t lpos, uint64_t tpos, unsigned flags,
                       uint8_t* out) const {
  std::memcpy(out, in.data(), in.size());
  if (flags & kPredictAbs) PredictAbs(in, lpos, tpos, out);
  if (flags & kPredictData32) PredictData32(in, lpos, tpos, out);
  if (flags & kPredictRel) {
    if (arch == Arch::kX86_64) {
      PredictX86(in, lpos, tpos, out);
    } else {
      PredictA64(in, lpos, tpos, out);
    }
  }
}

// Scans for call/jmp/jcc rel32 and RIP-relative disp32 operands. The scan
// is a pure function of the lower bytes, so encoder and decoder agree; a
// false positive only costs diff bytes.
void RefModel::PredictX86(std::span<const uint8_t> in, uint64_t lpos, uint64_t tpos,
                          uint8_t* out) const {
  const OpcodeSet& ops = Opcodes();
  const size_t n = in.size();
  size_t i = 0;
  while (i < n) {
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
    if (!OffsetToVa(lower_segs, lpos + disp, &lva) || !OffsetToVa(target_segs, tpos + disp, &tva))
      continue;
    const uint64_t tail = 4 + static_cast<uint64_t>(imm);  // disp32 start to instruction end
    const int32_t d = static_cast<int32_t>(Le32(&in[disp]));
    if (!TranslateVa(lva + tail + static_cast<uint64_t>(int64_t{d}), &dest)) continue;
    const int64_t nd = static_cast<int64_t>(dest - (tva + tail));
    if (FitsInt32(nd)) StoreLe32(&out[disp], static_cast<uint32_t>(nd));
  }
}

// B and BL: imm26 word offsets, on 4-byte aligned words.
void RefModel::PredictA64(std::span<const uint8_t> in, uint64_t lpos, uint64_t tpos,
                          uint8_t* out) const {
  for (size_t i = (4 - lpos % 4) % 4; i + 4 <= in.size(); i += 4) {
    const uint32_t w = Le32(&in[i]);
    if ((w & 0x7C000000u) != 0x14000000u) continue;
    uint64_t lva = 0, tva = 0, dest = 0;
    if (!OffsetToVa(lower_segs, lpos + i, &lva) || !OffsetToVa(target_segs, tpos + i, &tva))
      continue;
    const int64_t imm = static_cast<int64_t>(static_cast<int32_t>(w << 6) >> 6) * 4;
    if (!TranslateVa(lva + static_cast<uint64_t>(imm), &dest)) continue;
    const int64_t nd = static_cast<int64_t>(dest - tva);
    if (nd % 4 != 0 || nd < -(int64_t{1} << 27) || nd >= (int64_t{1} << 27)) continue;
    StoreLe32(&out[i], (w & 0xFC000000u) | (static_cast<uint32_t>(nd >> 2) & 0x03FFFFFFu));
  }
}

// 8-byte aligned words holding a lower VA (pointers in data, relocation
// offsets and R_*_RELATIVE addends) become the VA of the moved byte.
void RefModel::PredictAbs(std::span<const uint8_t> in, uint64_t lpos, uint64_t tpos,
                          uint8_t* out) const {
  for (size_t i = (8 - lpos % 8) % 8; i + 8 <= in.size(); i += 8) {
    const uint64_t v = Le64(&in[i]);
    uint64_t dest = 0;
    if (v < 4096 || !TranslateVa(v, &dest)) continue;
    StoreLe64(&out[i], dest);
  }
}

// 4-byte aligned int32 words that are offsets: inside the .eh_frame_hdr
// table relative to the table's section, elsewhere relative to the word
// itself (.eh_frame's pc-relative FDE addresses).
void RefModel::PredictData32(std::span<const uint8_t> in, uint64_t lpos, uint64_t tpos,
                             uint8_t* out) const {
  for (size_t i = (4 - lpos % 4) % 4; i + 4 <= in.size(); i += 4) {
    uint64_t lva = 0, tva = 0, dest = 0;
    if (!OffsetToVa(lower_segs, lpos + i, &lva) || !OffsetToVa(target_segs, tpos + i, &tva))
      continue;
    const bool in_table = lower_ehhdr_size > kEhHdrTableOffset &&
                          lva - lower_ehhdr_va >= kEhHdrTableOffset &&
                          lva - lower_ehhdr_va < lower_ehhdr_size;
    const uint64_t lbase = in_table ? lower_ehhdr_va : lva;
    const uint64_t tbase = in_table ? target_ehhdr_va : tva;
    const int32_t v = static_cast<int32_t>(Le32(&in[i]));
    if (!TranslateVa(lbase + static_cast<uint64_t>(int64_t{v}), &dest)) continue;
    const int64_t nv = static_cast<int64_t>(dest - tbase);
    if (FitsInt32(nv)) StoreLe32(&out[i], static_cast<uint32_t>(nv));
  }
}

}  // namespace cryptex::delta
