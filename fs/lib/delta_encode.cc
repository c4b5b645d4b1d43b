// The delta encoder: matches -> per-segment control/diff/extra streams.
#include <zstd.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <optional>
#include <system_error>
#include <thread>

#include "cpus.h"
#include "delta.h"
#include "delta_internal.h"

namespace cryptex {

using delta::Match;
using delta::RefModel;

namespace {

// One control entry: copylen bytes from lower lpos (plus diff), then
// extralen extra bytes.
struct Entry {
  uint64_t copylen = 0, extralen = 0, lpos = 0;
  unsigned flags = 0;
};

// Adjacent matches with the same shift (and small gaps) become one move.
std::vector<delta::Move> MovesFromMatches(const std::vector<Match>& matches) {
  std::vector<Match> by_lower = matches;
  std::sort(by_lower.begin(), by_lower.end(),
            [](const Match& a, const Match& b) { return a.lpos < b.lpos; });
  std::vector<delta::Move> moves;
  uint64_t covered_end = 0;
  for (const Match& m : by_lower) {
    uint64_t lo = std::max(m.lpos, covered_end);
    const uint64_t hi = m.lpos + m.size;
    if (lo >= hi) continue;
    const int64_t shift = static_cast<int64_t>(m.tpos) - static_cast<int64_t>(m.lpos);
    if (!moves.empty() && moves.back().shift == shift &&
        lo - (moves.back().lower + moves.back().size) <= 64) {
      moves.back().size = hi - moves.back().lower;
    } else {
      moves.push_back({lo, hi - lo, shift});
    }
    covered_end = hi;
  }
  return moves;
}

class SegmentEncoder {
 public:
  SegmentEncoder(std::span<const uint8_t> lower, std::span<const uint8_t> target,
                 const std::vector<Match>& matches, const DeltaOptions& opts)
      : L_(lower), T_(target), matches_(matches), opts_(opts) {}

  // How segment [s, e) will be encoded. With a model, each entry takes the
  // prediction flags that leave the fewest differing bytes; `saved` counts
  // the differing bytes that predictions removed.
  struct Plan {
    enum Kind { kIdentity, kCopy, kDelta } kind = kDelta;
    uint64_t s = 0, e = 0;
    std::vector<Entry> entries;
    uint64_t saved = 0, differing = 0;
  };
  Plan MakePlan(uint64_t s, uint64_t e, const RefModel* model) {
    Plan p;
    p.s = s;
    p.e = e;
    if (e <= L_.size() && std::memcmp(&T_[s], &L_[s], e - s) == 0) {
      p.kind = Plan::kIdentity;
      return p;
    }
    p.entries = Clip(s, e);
    if (p.entries.size() == 1 && p.entries[0].extralen == 0 &&
        std::memcmp(&T_[s], &L_[p.entries[0].lpos], e - s) == 0) {
      p.kind = Plan::kCopy;
      return p;
    }
    ChooseFlags(s, model, &p);
    return p;
  }

  // The payload of a plan (empty for identity), sealed with its checksum.
  // A delta whose copies are mostly wrong is also tried as plain data.
  std::vector<uint8_t> Encode(const Plan& p, const RefModel* model) {
    if (p.kind == Plan::kIdentity) return {};
    if (p.kind == Plan::kCopy) {
      std::vector<uint8_t> out{delta::kKindCopy};
      delta::PutVarint(&out, p.entries[0].lpos);
      return Seal(std::move(out));
    }
    std::vector<uint8_t> best = DeltaPayload(p.s, p.entries, model);
    if (p.differing * 4 > p.e - p.s) {
      std::vector<uint8_t> plain = DeltaPayload(p.s, {Entry{0, p.e - p.s, p.s, 0}}, nullptr);
      if (plain.size() < best.size()) best = std::move(plain);
    }
    return Seal(std::move(best));
  }

 private:
  static std::vector<uint8_t> Seal(std::vector<uint8_t> p) {
    delta::PutU32(&p, delta::Crc32c(p));
    return p;
  }

  // The matches' view of [s, e) as control entries.
  std::vector<Entry> Clip(uint64_t s, uint64_t e) const {
    std::vector<Entry> out;
    auto it = std::upper_bound(matches_.begin(), matches_.end(), s,
                               [](uint64_t t, const Match& m) { return t < m.tpos; });
    if (it != matches_.begin() && std::prev(it)->tpos + std::prev(it)->size > s) --it;
    uint64_t t = s, expected = s;
    auto add_extra = [&](uint64_t n) {
      if (n == 0) return;
      if (out.empty()) {
        out.push_back({0, n, expected, 0});
      } else {
        out.back().extralen += n;
      }
    };
    for (; it != matches_.end() && it->tpos < e; ++it) {
      const uint64_t lo = std::max(it->tpos, s), hi = std::min(it->tpos + it->size, e);
      if (lo >= hi) continue;
      add_extra(lo - t);
      out.push_back({hi - lo, 0, it->lpos + (lo - it->tpos), 0});
      expected = out.back().lpos + out.back().copylen;
      t = hi;
    }
    add_extra(e - t);
    return out;
  }

  static uint64_t NonZero(const uint8_t* pred, const uint8_t* tgt, uint64_t n) {
    uint64_t c = 0;
    for (uint64_t i = 0; i < n; ++i) c += pred[i] != tgt[i];
    return c;
  }

  void ChooseFlags(uint64_t s, const RefModel* model, Plan* p) {
    uint64_t t = s;
    for (Entry& en : p->entries) {
      if (en.copylen > 0) {
        const auto in = L_.subspan(en.lpos, en.copylen);
        pred_.resize(en.copylen);
        const uint64_t unpredicted = NonZero(in.data(), &T_[t], en.copylen);
        uint64_t best = unpredicted;
        // Each predictor alone, then all that helped together.
        unsigned helped = 0;
        auto try_flags = [&](unsigned f) {
          model->Predict(in, en.lpos, t, f, pred_.data());
          const uint64_t c = NonZero(pred_.data(), &T_[t], en.copylen);
          if (c < best) {
            best = c;
            en.flags = f;
          }
          return c < unpredicted;
        };
        for (unsigned bit = 1; model && bit <= delta::kPredictAll && unpredicted > 0; bit <<= 1) {
          if (try_flags(bit)) helped |= bit;
        }
        if (helped != 0 && (helped & (helped - 1)) != 0) try_flags(helped);
        p->saved += unpredicted - best;
        p->differing += best;
      }
      t += en.copylen + en.extralen;
    }
  }

  std::vector<uint8_t> DeltaPayload(uint64_t s, const std::vector<Entry>& entries,
                                    const RefModel* model) {
    std::vector<uint8_t> ctrl, diff, extra;
    uint64_t t = s, expected = s;
    for (const Entry& en : entries) {
      delta::PutVarint(&ctrl, en.copylen << delta::kPredictBits | en.flags);
      delta::PutVarint(&ctrl, en.extralen);
      const uint64_t lpos = en.copylen > 0 ? en.lpos : expected;
      delta::PutVarint(&ctrl, delta::ZigZag(static_cast<int64_t>(lpos - expected)));
      if (en.copylen > 0) {
        const auto in = L_.subspan(lpos, en.copylen);
        pred_.resize(en.copylen);
        if (en.flags != 0) {
          model->Predict(in, lpos, t, en.flags, pred_.data());
        } else {
          std::memcpy(pred_.data(), in.data(), en.copylen);
        }
        for (uint64_t i = 0; i < en.copylen; ++i) {
          diff.push_back(static_cast<uint8_t>(T_[t + i] - pred_[i]));
        }
      }
      t += en.copylen;
      extra.insert(extra.end(), T_.data() + t, T_.data() + t + en.extralen);
      t += en.extralen;
      expected = lpos + en.copylen;
    }
    std::vector<uint8_t> p{delta::kKindDelta};
    delta::PutStream(&p, ctrl, opts_.zstd_level);
    delta::PutStream(&p, diff, opts_.zstd_level);
    delta::PutStream(&p, extra, opts_.zstd_level);
    return p;
  }

  std::span<const uint8_t> L_, T_;
  const std::vector<Match>& matches_;
  const DeltaOptions& opts_;
  std::vector<uint8_t> pred_;
};

// ParallelFor over [0, n) in batches of segments covering about
// kDeltaReleaseEvery target bytes, with `release` called (when set) after
// each batch, its workers joined: no thread reads the inputs then.
template <typename Fn>
void ParallelForReleasing(uint64_t n, unsigned workers, uint64_t seg,
                          const std::function<void()>& release, const Fn& fn) {
  const uint64_t batch = release ? std::max<uint64_t>(1, kDeltaReleaseEvery / seg) : n;
  for (uint64_t first = 0; first < n; first += batch) {
    const uint64_t count = std::min(batch, n - first);
    delta::ParallelFor(count, static_cast<unsigned>(std::min<uint64_t>(workers, count)),
                       [&](unsigned w, uint64_t i) { fn(w, first + i); });
    if (release) release();
  }
}

std::optional<RefModel> BuildModel(std::span<const uint8_t> lower, std::span<const uint8_t> target,
                                   const std::vector<Match>& matches) {
  RefModel model;
  delta::Arch target_arch{};
  uint64_t target_ehhdr_size = 0;
  if (!delta::ParseElfLoads(lower, &model.arch, &model.lower_segs, &model.lower_ehhdr_va,
                            &model.lower_ehhdr_size) ||
      !delta::ParseElfLoads(target, &target_arch, &model.target_segs, &model.target_ehhdr_va,
                            &target_ehhdr_size) ||
      target_arch != model.arch) {
    return std::nullopt;
  }
  model.moves = MovesFromMatches(matches);
  if (model.moves.empty()) return std::nullopt;
  model.BuildIndex();
  return model;
}

}  // namespace

Result<std::vector<uint8_t>> EncodeDelta(std::span<const uint8_t> lower,
                                         std::span<const uint8_t> target,
                                         const DeltaOptions& opts) {
  if (opts.segment_log2 < format::kMinChunkLog2 || opts.segment_log2 > format::kMaxChunkLog2) {
    return Status::InvalidArgument("delta segment size log2 must be " +
                                   std::to_string(format::kMinChunkLog2) + ".." +
                                   std::to_string(format::kMaxChunkLog2));
  }
  if (opts.threads < 0) return Status::InvalidArgument("delta threads must be >= 0");
  if (opts.zstd_level < 1 || opts.zstd_level > ZSTD_maxCLevel()) {
    return Status::InvalidArgument("zstd level must be 1.." + std::to_string(ZSTD_maxCLevel()));
  }
  const uint64_t seg = uint64_t{1} << opts.segment_log2;
  const uint64_t nseg = (target.size() + seg - 1) / seg;
  if (nseg > kMaxDeltaSegments) {
    return Status::InvalidArgument("target of " + std::to_string(target.size()) +
                                   " bytes needs more than " + std::to_string(kMaxDeltaSegments) +
                                   " delta segments");
  }
  const unsigned threads = opts.threads > 0 ? static_cast<unsigned>(opts.threads) : UsableCpus();
  const std::vector<Match> matches =
      delta::FindMatches(lower, target, opts.release_inputs, threads);
  std::optional<RefModel> model;
  if (opts.elf_references) model = BuildModel(lower, target, matches);

  // The model is kept when the differing bytes its predictions remove
  // outnumber its own (compressed) bytes; each segment is compressed once.
  const unsigned workers =
      static_cast<unsigned>(std::min<uint64_t>(threads, std::max<uint64_t>(nseg, 1)));
  std::vector<SegmentEncoder> encoders;
  encoders.reserve(workers);
  for (unsigned w = 0; w < workers; ++w) encoders.emplace_back(lower, target, matches, opts);
  std::vector<SegmentEncoder::Plan> plans(nseg);
  ParallelForReleasing(nseg, workers, seg, opts.release_inputs, [&](unsigned w, uint64_t i) {
    const uint64_t s = i * seg, e = std::min(s + seg, uint64_t{target.size()});
    plans[i] = encoders[w].MakePlan(s, e, model ? &*model : nullptr);
  });
  uint64_t saved = 0;
  for (const auto& p : plans) saved += p.saved;
  std::vector<uint8_t> model_bytes;
  if (model) {
    model_bytes = delta::ZstdCompress(model->Serialize(), opts.zstd_level);
    if (model_bytes.empty() || saved <= model_bytes.size()) {
      model.reset();
      model_bytes.clear();
      for (auto& p : plans) {
        for (auto& en : p.entries) en.flags = 0;
      }
    }
  }
  std::vector<std::vector<uint8_t>> payloads(nseg);
  ParallelForReleasing(nseg, workers, seg, opts.release_inputs, [&](unsigned w, uint64_t i) {
    payloads[i] = encoders[w].Encode(plans[i], model ? &*model : nullptr);
    plans[i] = {};
  });

  std::vector<uint8_t> index_raw, index;
  for (const auto& p : payloads) delta::PutU32(&index_raw, static_cast<uint32_t>(p.size()));
  delta::PutStream(&index, index_raw, opts.zstd_level);

  std::vector<uint8_t> out(std::begin(delta::kMagic), std::end(delta::kMagic));
  out.push_back(static_cast<uint8_t>(opts.segment_log2));
  out.push_back(model ? delta::kFlagRefModel : 0);
  delta::PutVarint(&out, lower.size());
  delta::PutVarint(&out, target.size());
  delta::PutVarint(&out, index.size());
  delta::PutVarint(&out, model_bytes.size());
  uint32_t crc = delta::Crc32c(out);
  crc = delta::Crc32c(index, crc);
  crc = delta::Crc32c(model_bytes, crc);
  delta::PutU32(&out, crc);
  out.insert(out.end(), index.begin(), index.end());
  out.insert(out.end(), model_bytes.begin(), model_bytes.end());
  for (const auto& p : payloads) out.insert(out.end(), p.begin(), p.end());
  return out;
}

}  // namespace cryptex
