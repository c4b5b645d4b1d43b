// The delta decoder: header and index checks at open, then per-segment
// decoding on demand (delta.h). Every length read from the delta is checked
// against a bound derived from the segment size before it is used.
#include <algorithm>
#include <cstring>
#include <optional>

#include "delta.h"
#include "delta_internal.h"

namespace cryptex {

using delta::ByteCursor;

struct DeltaReader::Impl {
  std::span<const uint8_t> delta;
  uint64_t lower_size = 0, target_size = 0;
  uint32_t seg_log2 = 0;
  uint64_t nseg = 0;
  std::vector<uint64_t> offsets;  // nseg + 1 payload offsets into `delta`
  std::optional<delta::RefModel> model;
  LowerReadFn read_lower;
  std::string context;
  Stats stats;
  // The last delta segment decoded for a partial read (a read of a whole
  // segment decodes into the caller's buffer and leaves this alone).
  uint64_t cached = UINT64_MAX;
  std::vector<uint8_t> cache;

  uint64_t SegSize(uint64_t i) const {
    const uint64_t s = i << seg_log2;
    return std::min(uint64_t{1} << seg_log2, target_size - s);
  }
  Status Corrupt(uint64_t seg, const std::string& why) const {
    return Status::Corruption(context + ": delta segment " + std::to_string(seg) +
                              " (target offset " + std::to_string(seg << seg_log2) + "): " + why);
  }
  Status ReadLower(uint64_t off, std::span<uint8_t> out) {
    if (off > lower_size || out.size() > lower_size - off) {
      return Status::Internal(context + ": delta lower read out of range");
    }
    ++stats.lower_reads;
    stats.lower_bytes += out.size();
    if (out.empty()) return Status::Ok();
    Status st = read_lower(off, out);
    return st.ok() ? st : st.Prefixed(context + ": lower file at offset " + std::to_string(off));
  }
  // Decodes delta segment `seg` (payload `body`) into dst[0, SegSize(seg)).
  Status DecodeDelta(uint64_t seg, std::span<const uint8_t> body, uint8_t* dst);
  // The lower range [*lo, *hi) the copies of control stream `ctrl` of a
  // segment of `size` bytes at target offset `start` read, if every entry
  // is well formed; false otherwise (DecodeDelta then reports the error).
  bool CopySpan(std::span<const uint8_t> ctrl, uint64_t start, uint64_t size, uint64_t* lo,
                uint64_t* hi) const;
  // Target bytes [lo, hi) of segment `seg` (absolute offsets) into out.
  Status ReadSegment(uint64_t seg, uint64_t lo, uint64_t hi, uint8_t* out);
};

namespace {

// DecodeDelta reads the lower bytes of all the copies of a segment at once
// when they span at most this many segment sizes.
constexpr uint64_t kMaxBatchedLowerSegments = 2;

// The buffers one DecodeDelta call works in (each at most a few segments).
struct DecodeScratch {
  std::vector<uint8_t> ctrl, diff, extra, lower_buf;
};

// Lends the calling thread's DecodeScratch for the nesting level it is at:
// a delta whose lower file is itself a delta decodes that lower segment on
// the same thread, inside the outer call, so each level has its own set.
// The sets stay with the thread, so the buffers are allocated (and their
// pages faulted in) once per thread instead of once per reader: a cold read
// of a file opens several readers, one per piece decoded in parallel. Only
// the first kKeptLevels levels keep their buffers between calls.
class ScratchLease {
 public:
  ScratchLease() {
    if (depth_ == levels_.size()) levels_.push_back(std::make_unique<DecodeScratch>());
    s_ = levels_[depth_++].get();
  }
  ~ScratchLease() {
    if (--depth_ >= kKeptLevels) *s_ = DecodeScratch{};
  }
  ScratchLease(const ScratchLease&) = delete;
  ScratchLease& operator=(const ScratchLease&) = delete;
  DecodeScratch& operator*() const { return *s_; }

 private:
  static constexpr size_t kKeptLevels = 2;
  static thread_local std::vector<std::unique_ptr<DecodeScratch>> levels_;
  static thread_local size_t depth_;
  DecodeScratch* s_;
};

thread_local std::vector<std::unique_ptr<DecodeScratch>> ScratchLease::levels_;
thread_local size_t ScratchLease::depth_ = 0;

Status OpenError(const std::string& context, const std::string& why) {
  return Status::Corruption(context + ": delta: " + why);
}

}  // namespace

Result<std::unique_ptr<DeltaReader>> DeltaReader::Open(std::span<const uint8_t> d,
                                                       uint64_t lower_size, LowerReadFn read_lower,
                                                       std::string context) {
  auto impl = std::make_unique<Impl>();
  impl->delta = d;
  impl->read_lower = std::move(read_lower);
  ByteCursor in(d);
  std::span<const uint8_t> magic;
  uint8_t flags = 0, seg_log2 = 0;
  uint64_t declared_lower = 0, index_len = 0, model_len = 0, crc = 0;
  if (!in.Bytes(sizeof delta::kMagic, &magic) || !in.U8(&seg_log2) || !in.U8(&flags) ||
      !in.Varint(&declared_lower) || !in.Varint(&impl->target_size) || !in.Varint(&index_len) ||
      !in.Varint(&model_len)) {
    return OpenError(context, "truncated header (" + std::to_string(d.size()) + " bytes)");
  }
  const size_t crc_at = in.pos();
  if (!in.U32(&crc)) return OpenError(context, "truncated header");
  if (std::memcmp(magic.data(), delta::kMagic, sizeof delta::kMagic) != 0) {
    return OpenError(context, "bad magic");
  }
  if (index_len > in.remaining() || model_len > in.remaining() - index_len) {
    return OpenError(context, "index runs past the end");
  }
  const auto index_bytes = d.subspan(in.pos(), index_len);
  const auto model_bytes = d.subspan(in.pos() + index_len, model_len);
  uint32_t want = delta::Crc32c(d.first(crc_at));
  want = delta::Crc32c(index_bytes, want);
  want = delta::Crc32c(model_bytes, want);
  if (want != crc) return OpenError(context, "header checksum mismatch");
  impl->seg_log2 = seg_log2;
  if (impl->seg_log2 < format::kMinChunkLog2 || impl->seg_log2 > format::kMaxChunkLog2) {
    return OpenError(context, "bad segment size log2 " + std::to_string(impl->seg_log2));
  }
  if ((flags & ~delta::kFlagRefModel) != 0) return OpenError(context, "unknown flags");
  if (((flags & delta::kFlagRefModel) != 0) != (model_len != 0)) {
    return OpenError(context, "reference model flag and size disagree");
  }
  if (declared_lower != lower_size) {
    return OpenError(context, "made for a lower file of " + std::to_string(declared_lower) +
                                  " bytes, the lower file has " + std::to_string(lower_size));
  }
  impl->lower_size = lower_size;
  if (impl->target_size > (kMaxDeltaSegments << impl->seg_log2)) {
    return OpenError(
        context, "target size " + std::to_string(impl->target_size) + " needs too many segments");
  }
  const uint64_t seg = uint64_t{1} << impl->seg_log2;
  impl->nseg = (impl->target_size + seg - 1) / seg;

  std::vector<uint8_t> index;
  std::string why;
  ByteCursor ic(index_bytes);
  if (!delta::GetStream(&ic, impl->nseg * 4, &index, &why) || ic.remaining() != 0 ||
      index.size() != impl->nseg * 4) {
    return OpenError(context, "bad segment index" + (why.empty() ? "" : ": " + why));
  }
  if (model_len != 0) {
    const auto raw = delta::ZstdContentSize(model_bytes);
    std::vector<uint8_t> model_raw;
    impl->model.emplace();
    if (!raw || *raw > delta::kMaxRefModelBytes ||
        !delta::ZstdDecompress(model_bytes, *raw, &model_raw)) {
      return OpenError(context, "bad reference model");
    }
    if (!delta::RefModel::Parse(model_raw, &*impl->model, &why)) return OpenError(context, why);
  }
  uint64_t off = in.pos() + index_len + model_len;
  impl->offsets.reserve(impl->nseg + 1);
  impl->offsets.push_back(off);
  for (uint64_t i = 0; i < impl->nseg; ++i) {
    const uint64_t size = format::LoadLE32(&index[i * 4]);
    if (size > d.size() - off) return OpenError(context, "segment payloads run past the end");
    if (size == 0 && (i << impl->seg_log2) + impl->SegSize(i) > lower_size) {
      return OpenError(context, "identity segment " + std::to_string(i) + " beyond the lower file");
    }
    off += size;
    impl->offsets.push_back(off);
  }
  if (off != d.size()) return OpenError(context, "trailing bytes after the last segment");
  impl->context = std::move(context);
  return std::unique_ptr<DeltaReader>(new DeltaReader(std::move(impl)));
}

bool DeltaReader::Impl::CopySpan(std::span<const uint8_t> ctrl, uint64_t start, uint64_t size,
                                 uint64_t* lo, uint64_t* hi) const {
  ByteCursor c(ctrl);
  uint64_t t = 0, expected = start;
  *lo = UINT64_MAX;
  *hi = 0;
  while (c.remaining() > 0) {
    uint64_t head = 0, extralen = 0, zz = 0;
    if (!c.Varint(&head) || !c.Varint(&extralen) || !c.Varint(&zz)) return false;
    const uint64_t copylen = head >> delta::kPredictBits;
    if (copylen > size - t || extralen > size - t - copylen) return false;
    if (copylen > 0) {
      const uint64_t lpos = expected + static_cast<uint64_t>(delta::UnZigZag(zz));
      if (lpos > lower_size || copylen > lower_size - lpos) return false;
      *lo = std::min(*lo, lpos);
      *hi = std::max(*hi, lpos + copylen);
      expected = lpos + copylen;
    }
    t += copylen + extralen;
  }
  return *lo < *hi;
}

// Control entries: varint (copylen << kPredictBits | flags), varint extralen, zigzag
// varint seek (lower position relative to where the previous copy ended;
// the segment starts at its own target offset).
Status DeltaReader::Impl::DecodeDelta(uint64_t seg, std::span<const uint8_t> body,
                                      uint8_t* dst_seg) {
  const uint64_t size = SegSize(seg);
  const ScratchLease lease;
  auto& [ctrl, diff, extra, lower_buf] = *lease;
  ByteCursor in(body);
  std::string why;
  if (!delta::GetStream(&in, size * delta::kMaxCtrlBytesPerTargetByte, &ctrl, &why) ||
      !delta::GetStream(&in, size, &diff, &why) || !delta::GetStream(&in, size, &extra, &why)) {
    return Corrupt(seg, why);
  }
  if (in.remaining() != 0) return Corrupt(seg, "trailing bytes after the streams");
  // One lower read for all the copies when they lie close together (the
  // usual case: code that moved a little), instead of one per entry.
  uint64_t span_lo = 0, span_hi = 0;
  const bool batched = CopySpan(ctrl, seg << seg_log2, size, &span_lo, &span_hi) &&
                       span_hi - span_lo <= kMaxBatchedLowerSegments * size;
  if (batched) {
    lower_buf.resize(span_hi - span_lo);
    CX_RETURN_IF_ERROR(ReadLower(span_lo, lower_buf));
  }
  ByteCursor c(ctrl);
  uint64_t t = 0, expected = seg << seg_log2, d = 0, x = 0;
  while (c.remaining() > 0) {
    uint64_t head = 0, extralen = 0, zz = 0;
    if (!c.Varint(&head) || !c.Varint(&extralen) || !c.Varint(&zz)) {
      return Corrupt(seg, "truncated control entry");
    }
    const uint64_t copylen = head >> delta::kPredictBits;
    const unsigned flags = head & delta::kPredictAll;
    if (copylen > size - t || extralen > size - t - copylen || copylen + extralen == 0) {
      return Corrupt(seg, "control entry overruns the segment");
    }
    const uint64_t lpos = expected + static_cast<uint64_t>(delta::UnZigZag(zz));
    if (copylen > 0) {
      if (lpos > lower_size || copylen > lower_size - lpos) {
        return Corrupt(seg,
                       "copy from lower offset " + std::to_string(lpos) + " past the lower file");
      }
      if (copylen > diff.size() - d) return Corrupt(seg, "diff stream too short");
      if (flags != 0 && !model) return Corrupt(seg, "prediction without a reference model");
      uint8_t* dst = dst_seg + t;
      std::span<const uint8_t> src;
      if (batched) {  // CopySpan saw this entry: lpos >= span_lo, within span_hi
        src = std::span<const uint8_t>(lower_buf).subspan(lpos - span_lo, copylen);
      } else if (flags != 0) {
        lower_buf.resize(copylen);
        CX_RETURN_IF_ERROR(ReadLower(lpos, lower_buf));
        src = lower_buf;
      } else {
        CX_RETURN_IF_ERROR(ReadLower(lpos, {dst, copylen}));
      }
      if (flags != 0) {
        model->Predict(src, lpos, (seg << seg_log2) + t, flags, dst);
      } else if (batched) {
        std::memcpy(dst, src.data(), copylen);
      }
      // Locals, not members: a byte store through dst may alias the
      // vector's own fields, which would keep the loop from vectorizing.
      const uint8_t* add = diff.data() + d;
      for (uint64_t i = 0; i < copylen; ++i) dst[i] = static_cast<uint8_t>(dst[i] + add[i]);
      d += copylen;
      t += copylen;
      expected = lpos + copylen;
    } else if (zz != 0 || flags != 0) {
      return Corrupt(seg, "seek or flags on an entry without a copy");
    }
    if (extralen > extra.size() - x) return Corrupt(seg, "extra stream too short");
    // data() + offset: the offsets may equal the sizes (then nothing is copied).
    if (extralen > 0) std::memcpy(dst_seg + t, extra.data() + x, extralen);
    x += extralen;
    t += extralen;
  }
  if (t != size || d != diff.size() || x != extra.size()) {
    return Corrupt(seg, "control entries do not cover the segment exactly");
  }
  return Status::Ok();
}

Status DeltaReader::Impl::ReadSegment(uint64_t seg, uint64_t lo, uint64_t hi, uint8_t* out) {
  const uint64_t start = seg << seg_log2, size = SegSize(seg);
  if (seg == cached) {
    std::memcpy(out, cache.data() + (lo - start), hi - lo);
    return Status::Ok();
  }
  ++stats.segments_decoded;
  const auto payload = delta.subspan(offsets[seg], offsets[seg + 1] - offsets[seg]);
  if (payload.empty()) return ReadLower(lo, {out, hi - lo});  // identity (checked at open)
  if (payload.size() < 5) return Corrupt(seg, "truncated payload");
  const auto body = payload.first(payload.size() - 4);
  if (delta::Crc32c(body) != format::LoadLE32(&payload[payload.size() - 4])) {
    return Corrupt(seg, "checksum mismatch");
  }
  if (body[0] == delta::kKindCopy) {
    ByteCursor c(body.subspan(1));
    uint64_t lpos = 0;
    if (!c.Varint(&lpos) || c.remaining() != 0) return Corrupt(seg, "bad copy segment");
    if (lpos > lower_size || size > lower_size - lpos) {
      return Corrupt(seg,
                     "copy from lower offset " + std::to_string(lpos) + " past the lower file");
    }
    return ReadLower(lpos + (lo - start), {out, hi - lo});
  }
  if (body[0] != delta::kKindDelta) {
    return Corrupt(seg, "unknown segment kind " + std::to_string(body[0]));
  }
  if (lo == start && hi == start + size) return DecodeDelta(seg, body.subspan(1), out);
  cached = UINT64_MAX;
  cache.resize(size);
  Status st = DecodeDelta(seg, body.subspan(1), cache.data());
  if (!st.ok()) return st;
  cached = seg;
  std::memcpy(out, cache.data() + (lo - start), hi - lo);
  return Status::Ok();
}

DeltaReader::DeltaReader(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
DeltaReader::~DeltaReader() = default;
uint64_t DeltaReader::target_size() const { return impl_->target_size; }
uint32_t DeltaReader::segment_size() const { return uint32_t{1} << impl_->seg_log2; }
uint64_t DeltaReader::segment_count() const { return impl_->nseg; }
const DeltaReader::Stats& DeltaReader::stats() const { return impl_->stats; }

Status DeltaReader::ReadRange(uint64_t offset, std::span<uint8_t> out) {
  Impl& m = *impl_;
  if (offset > m.target_size || out.size() > m.target_size - offset) {
    return Status::InvalidArgument(m.context + ": read of " + std::to_string(out.size()) +
                                   " bytes at offset " + std::to_string(offset) +
                                   " beyond the patched size " + std::to_string(m.target_size));
  }
  uint64_t pos = offset;
  const uint64_t end = offset + out.size();
  while (pos < end) {
    const uint64_t seg = pos >> m.seg_log2;
    const uint64_t hi = std::min(end, (seg << m.seg_log2) + m.SegSize(seg));
    CX_RETURN_IF_ERROR(m.ReadSegment(seg, pos, hi, &out[pos - offset]));
    pos = hi;
  }
  return Status::Ok();
}

Result<std::vector<uint8_t>> ApplyDelta(std::span<const uint8_t> delta,
                                        std::span<const uint8_t> lower,
                                        const std::string& context) {
  auto read = [lower](uint64_t off, std::span<uint8_t> out) {
    std::memcpy(out.data(), &lower[off], out.size());
    return Status::Ok();
  };
  CX_ASSIGN_OR_RETURN(auto reader, DeltaReader::Open(delta, lower.size(), read, context));
  // Grows segment by segment: memory follows what actually decodes, not
  // what the header claims.
  std::vector<uint8_t> out;
  for (uint64_t off = 0; off < reader->target_size(); off += reader->segment_size()) {
    const uint64_t n = std::min<uint64_t>(reader->segment_size(), reader->target_size() - off);
    out.resize(off + n);
    CX_RETURN_IF_ERROR(reader->ReadRange(off, {out.data() + off, n}));
  }
  return out;
}

}  // namespace cryptex
