// Delta decoder (fs/lib/delta.h). Input: [u32 LE lower size][lower bytes]
// [delta bytes] (the lower size is cut to what the input holds). The delta is
// decoded as it is and re-sealed (header and payload checksums recomputed),
// so that the fuzzer explores the parsers behind the checksums. Properties:
// opening and reading never crash or read/write out of bounds; reading the
// same bytes in one range or in small pieces gives the same bytes (or an
// error in both); every lower read the decoder asks for lies within the lower
// file; a fully decoded target re-encodes and decodes back to itself.
#include <algorithm>
#include <cstring>

#include "delta.h"
#include "delta_internal.h"
#include "fuzz_support.h"

using namespace cryptex;

namespace {

// Most target bytes one input may make the harness decode.
constexpr uint64_t kReadBudget = 4u << 20;

struct Lower {
  std::span<const uint8_t> bytes;
  LowerReadFn Fn() const {
    return [b = bytes](uint64_t off, std::span<uint8_t> out) {
      if (off > b.size() || out.size() > b.size() - off) {
        fuzz::Finding("decoder asked for lower bytes beyond the lower file");
      }
      std::memcpy(out.data(), b.data() + off, out.size());
      return Status::Ok();
    };
  }
};

void CheckPieces(DeltaReader& whole, DeltaReader& pieces, uint64_t off, uint64_t len) {
  std::vector<uint8_t> a(len), b(len);
  const bool ok_a = whole.ReadRange(off, a).ok();
  bool ok_b = true;
  for (uint64_t p = 0; p < len && ok_b;) {
    const uint64_t n = std::min<uint64_t>(len - p, 1000 + p % 3000);
    ok_b = pieces.ReadRange(off + p, std::span(b).subspan(p, n)).ok();
    p += n;
  }
  if (ok_a != ok_b) fuzz::Finding("a range and its pieces disagree on success");
  if (ok_a && a != b) fuzz::Finding("a range and its pieces decode to different bytes");
}

// Recomputes the header checksum and every payload's checksum where the
// layout (docs/FORMAT.md section 11) can be followed; leaves the rest alone.
std::vector<uint8_t> Reseal(std::span<const uint8_t> d) {
  std::vector<uint8_t> out(d.begin(), d.end());
  delta::ByteCursor in(d);
  std::span<const uint8_t> skip;
  uint64_t lower = 0, target = 0, index_len = 0, model_len = 0;
  if (!in.Bytes(6, &skip) || !in.Varint(&lower) || !in.Varint(&target) || !in.Varint(&index_len) ||
      !in.Varint(&model_len)) {
    return out;
  }
  const uint8_t seg_log2 = d[4];
  const size_t crc_at = in.pos();
  if (in.remaining() < 4 || index_len > in.remaining() - 4 ||
      model_len > in.remaining() - 4 - index_len) {
    return out;
  }
  const size_t index_at = crc_at + 4;
  uint32_t crc = delta::Crc32c(std::span(out).first(crc_at));
  crc = delta::Crc32c(std::span(out).subspan(index_at, index_len + model_len), crc);
  std::memcpy(&out[crc_at], &crc, 4);
  if (seg_log2 < format::kMinChunkLog2 || seg_log2 > format::kMaxChunkLog2) return out;
  if (target > (kMaxDeltaSegments << seg_log2)) return out;
  const uint64_t nseg = (target + (uint64_t{1} << seg_log2) - 1) >> seg_log2;
  delta::ByteCursor ic(d.subspan(index_at, index_len));
  std::vector<uint8_t> index;
  std::string why;
  if (!delta::GetStream(&ic, nseg * 4, &index, &why) || index.size() != nseg * 4) return out;
  uint64_t off = index_at + index_len + model_len;
  for (uint64_t i = 0; i < nseg; ++i) {
    const uint64_t n = format::LoadLE32(&index[i * 4]);
    if (n > out.size() - off) break;
    if (n >= 5) {
      const uint32_t c = delta::Crc32c(std::span(out).subspan(off, n - 4));
      std::memcpy(&out[off + n - 4], &c, 4);
    }
    off += n;
  }
  return out;
}

void Explore(const Lower& lower, std::span<const uint8_t> delta);

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 4) return 0;
  uint32_t lower_size = 0;
  std::memcpy(&lower_size, data, 4);
  const std::span<const uint8_t> rest(data + 4, size - 4);
  lower_size = static_cast<uint32_t>(std::min<size_t>(lower_size, rest.size()));
  const Lower lower{rest.first(lower_size)};
  const auto delta = rest.subspan(lower_size);
  Explore(lower, delta);
  const std::vector<uint8_t> resealed = Reseal(delta);
  Explore(lower, resealed);
  return 0;
}

namespace {

void Explore(const Lower& lower, std::span<const uint8_t> delta) {
  auto a = DeltaReader::Open(delta, lower.bytes.size(), lower.Fn(), "fuzz");
  auto b = DeltaReader::Open(delta, lower.bytes.size(), lower.Fn(), "fuzz");
  if (a.ok() != b.ok()) fuzz::Finding("Open is not deterministic");
  if (!a.ok()) {
    if (a.status().code() != Code::kCorruption) fuzz::Finding("open error is not corruption");
    return;
  }
  DeltaReader& ra = **a;
  DeltaReader& rb = **b;
  const uint64_t target = ra.target_size();
  // Whole target when small; else the first, a middle and the last segments.
  if (target <= kReadBudget) {
    CheckPieces(ra, rb, 0, target);
  } else {
    const uint64_t seg = ra.segment_size();
    const uint64_t mid = (ra.segment_count() / 2) * seg;
    CheckPieces(ra, rb, 0, seg);
    CheckPieces(ra, rb, mid, std::min<uint64_t>(seg, target - mid));
    CheckPieces(ra, rb, target - std::min<uint64_t>(seg, target), std::min<uint64_t>(seg, target));
  }
  std::vector<uint8_t> one(1);
  if (ra.ReadRange(target, one).code() != Code::kInvalidArgument) {
    fuzz::Finding("a read past the target did not fail as invalid");
  }
  // Round trip of what decoded (small targets only: the encoder is slow).
  if (target <= (64u << 10)) {
    std::vector<uint8_t> t(target);
    if (!ra.ReadRange(0, t).ok()) return;
    DeltaOptions o;
    o.zstd_level = 1;
    o.segment_log2 = 12;
    auto again = EncodeDelta(lower.bytes, t, o);
    if (!again.ok()) fuzz::Finding("encode failed: " + again.status().ToString());
    auto back = ApplyDelta(*again, lower.bytes, "fuzz re-encode");
    if (!back.ok() || *back != t) fuzz::Finding("re-encoded delta does not decode back");
  }
}

}  // namespace
