#include "patched_file.h"

#include <algorithm>
#include <array>
#include <cstring>
#include <system_error>
#include <thread>
#include <utility>

#include "cpus.h"
#include "format.h"
#include "fsverity.h"

namespace cryptex {
namespace {

constexpr uint64_t kBlock = format::kBlockSize;
// What a thread of the first-access pass claims at a time (rounded to whole
// segments); a file of one piece is decoded on its caller's thread alone.
constexpr uint64_t kPieceBytes = 256 * 1024;

uint64_t BlocksFor(uint64_t size) { return (size + kBlock - 1) / kBlock; }

std::string Hex(const Digest& d) { return HexEncode(d); }

}  // namespace

// ---- VerityLeaves -------------------------------------------------------------

Result<VerityLeaves> VerityLeaves::Check(std::vector<Digest> leaves, uint64_t size,
                                         const Digest& signed_digest, const std::string& context) {
  if (leaves.size() != BlocksFor(size)) {
    return Status::Corruption(context + ": " + std::to_string(leaves.size()) +
                              " Merkle leaves for " + std::to_string(size) + " bytes");
  }
  FsVerityHasher h;
  h.AddLeafHashes(leaves, size);
  const Digest got = h.Final();
  if (got != signed_digest) {
    return Status::Corruption(context + ": content has fs-verity digest " + Hex(got) +
                              ", the patch signs " + Hex(signed_digest));
  }
  return VerityLeaves(std::move(leaves), size);
}

std::vector<uint8_t> VerityLeaves::Serialize() const {
  std::vector<uint8_t> out(leaves_.size() * sizeof(Digest));
  for (size_t i = 0; i < leaves_.size(); ++i) {
    std::memcpy(out.data() + i * sizeof(Digest), leaves_[i].data(), sizeof(Digest));
  }
  return out;
}

Result<VerityLeaves> VerityLeaves::Parse(std::span<const uint8_t> bytes, uint64_t size,
                                         const Digest& signed_digest, const std::string& context) {
  if (bytes.size() % sizeof(Digest) != 0 || bytes.size() / sizeof(Digest) != BlocksFor(size)) {
    return Status::Corruption(context + ": stored Merkle leaves are " +
                              std::to_string(bytes.size()) + " bytes, expected " +
                              std::to_string(BlocksFor(size) * sizeof(Digest)));
  }
  std::vector<Digest> leaves(bytes.size() / sizeof(Digest));
  for (size_t i = 0; i < leaves.size(); ++i) {
    std::memcpy(leaves[i].data(), bytes.data() + i * sizeof(Digest), sizeof(Digest));
  }
  return Check(std::move(leaves), size, signed_digest, context);
}

// ---- PatchedFile --------------------------------------------------------------

struct PatchedFile::Loaded {
  std::vector<uint8_t> delta;  // readers point into it: never changes once loaded
  std::shared_ptr<const VerityLeaves> leaves;
  uint64_t segment_size = 0;
};

PatchedFile::PatchedFile(PatchedFileSource src, PatchedFileEnv env)
    : src_(std::move(src)), env_(env) {}

PatchedFile::PatchedFile(PatchedFileSource src, PatchedFileEnv env, VerityLeaves leaves)
    : src_(std::move(src)),
      env_(env),
      preset_leaves_(std::make_shared<const VerityLeaves>(std::move(leaves))) {}

PatchedFile::~PatchedFile() = default;

uint64_t PatchedFile::CacheKey(uint64_t seg) const {
  // Segments per file are at most kMaxDeltaSegments (2^20).
  return (env_.cache_id << 20) | seg;
}

Result<std::unique_ptr<DeltaReader>> PatchedFile::NewReader(const Loaded& l) const {
  CX_ASSIGN_OR_RETURN(auto r,
                      DeltaReader::Open(l.delta, src_.lower_size, src_.read_lower, src_.context));
  if (r->target_size() != src_.size) {
    return Status::Corruption(src_.context + ": delta decodes to " +
                              std::to_string(r->target_size()) + " bytes, the inode says " +
                              std::to_string(src_.size));
  }
  return r;
}

Result<std::shared_ptr<const PatchedFile::Loaded>> PatchedFile::Load() const {
  std::lock_guard<std::mutex> lock(mu_);
  if (loaded_) return loaded_;
  if (!failed_.ok()) return failed_;
  auto l = std::make_shared<Loaded>();
  l->delta.resize(src_.delta_size);
  CX_RETURN_IF_ERROR(src_.read_delta(0, l->delta));
  Status st;
  if (preset_leaves_) {
    if (preset_leaves_->size() != src_.size) {
      return Status::Internal(src_.context + ": leaves given for another size");
    }
    l->leaves = preset_leaves_;
    auto reader = NewReader(*l);
    st = reader.status();
    if (st.ok()) {
      l->segment_size = (*reader)->segment_size();
      idle_.push_back(std::move(reader).value());
    }
  } else {
    st = BuildLeaves(*l);
  }
  if (!st.ok()) {
    if (st.code() == Code::kCorruption) failed_ = st;
    return st;
  }
  loaded_ = std::move(l);
  return loaded_;
}

// The first-access pass of one file, shared by the threads running it:
// pieces of kPieceBytes are claimed in turn; each thread decodes its pieces
// with its own reader and writes their leaves (and the segments to keep) to
// their own slots, so the result does not depend on which thread did what.
struct PatchedFile::Pass {
  uint64_t piece = 0, pieces = 0;
  uint64_t keep_segments = 0;  // segments [0, keep_segments) are kept for the cache
  std::vector<Digest> leaves;  // one per block, in order
  std::vector<std::shared_ptr<const std::vector<uint8_t>>> kept;  // keep_segments
  std::atomic<uint64_t> next{0};                                  // next piece to claim
  std::atomic<uint64_t> first_failed{UINT64_MAX};                 // lowest piece that failed
  std::mutex mu;                                                  // guards error
  Status error;                                                   // of piece first_failed
  std::atomic<uint64_t> segments_decoded{0};

  // Records the error of piece p; the lowest piece's error wins.
  void Fail(uint64_t p, Status st) {
    std::lock_guard<std::mutex> lock(mu);
    if (p < first_failed.load()) {
      first_failed.store(p);
      error = std::move(st);
    }
  }
};

namespace {

// Helper threads of first-access passes running now, library-wide: however
// many files are first read at once (a FUSE daemon), each pass runs on its
// caller's thread plus what is left of this many helpers.
constexpr unsigned kMaxPassHelpers = 4;
std::atomic<unsigned> g_pass_helpers{0};

// Up to `want` helper slots, released on destruction.
class HelperSlots {
 public:
  explicit HelperSlots(unsigned want) {
    unsigned cur = g_pass_helpers.load();
    while (want > 0 && cur < kMaxPassHelpers) {
      const unsigned take = std::min(want, kMaxPassHelpers - cur);
      if (g_pass_helpers.compare_exchange_weak(cur, cur + take)) {
        n_ = take;
        break;
      }
    }
  }
  ~HelperSlots() { g_pass_helpers.fetch_sub(n_); }
  HelperSlots(const HelperSlots&) = delete;
  HelperSlots& operator=(const HelperSlots&) = delete;
  unsigned count() const { return n_; }

 private:
  unsigned n_ = 0;
};

}  // namespace

unsigned PatchedFile::PassThreads(uint64_t pieces) const {
  const unsigned want =
      env_.pass_threads != 0 ? env_.pass_threads : std::min(kMaxPassThreads, UsableCpus());
  return static_cast<unsigned>(std::min<uint64_t>(want, pieces));
}

Status PatchedFile::DecodePiece(const Loaded& l, Pass& pass, DeltaReader& reader, uint64_t p,
                                std::vector<uint8_t>& scratch) const {
  const uint64_t begin = p * pass.piece;
  const uint64_t end = std::min(src_.size, begin + pass.piece);
  for (uint64_t off = begin; off < end; off += l.segment_size) {
    const uint64_t seg = off / l.segment_size;
    const uint64_t len = std::min<uint64_t>(l.segment_size, end - off);
    uint8_t* dst;
    std::shared_ptr<std::vector<uint8_t>> keep;
    if (seg < pass.keep_segments) {  // decoded straight into the bytes the cache will hold
      keep = std::make_shared<std::vector<uint8_t>>(BlocksFor(len) * kBlock);
      dst = keep->data();
    } else {
      scratch.resize(l.segment_size);
      dst = scratch.data();
    }
    const uint64_t before = reader.stats().segments_decoded;
    Status st = reader.ReadRange(off, std::span<uint8_t>(dst, len));
    pass.segments_decoded += reader.stats().segments_decoded - before;
    CX_RETURN_IF_ERROR(st);
    const std::vector<Digest> part = LeafHashes(dst, len);
    std::copy(part.begin(), part.end(), pass.leaves.begin() + static_cast<ptrdiff_t>(off / kBlock));
    if (keep) pass.kept[seg] = std::move(keep);
  }
  return Status::Ok();
}

void PatchedFile::RunPass(const Loaded& l, Pass& pass, DeltaReader& reader) const {
  std::vector<uint8_t> scratch;
  for (;;) {
    const uint64_t p = pass.next.fetch_add(1);
    // Pieces past a failed one cannot change the outcome.
    if (p >= pass.pieces || p > pass.first_failed.load()) return;
    Status st = DecodePiece(l, pass, reader, p, scratch);
    if (!st.ok()) {
      pass.Fail(p, std::move(st));
      return;
    }
  }
}

Status PatchedFile::BuildLeaves(Loaded& l) const {
  CX_ASSIGN_OR_RETURN(auto reader, NewReader(l));
  l.segment_size = reader->segment_size();
  Pass pass;
  pass.piece = std::max<uint64_t>(l.segment_size, kPieceBytes) / l.segment_size * l.segment_size;
  pass.pieces = (src_.size + pass.piece - 1) / pass.piece;
  pass.leaves.resize(BlocksFor(src_.size));
  // The segments decoded here are verified once the leaves check out: the
  // first ones, up to 1/kKeepFraction of the cache, are kept to be cached
  // then, so the read that caused this pass does not decode and hash them
  // again. All segments but the last are whole blocks of segment_size.
  const uint64_t keep_budget = env_.cache ? env_.cache->capacity() / kKeepFraction : 0;
  const uint64_t segments = (src_.size + l.segment_size - 1) / l.segment_size;
  pass.keep_segments = std::min(segments, keep_budget / l.segment_size);
  if (pass.keep_segments + 1 == segments &&
      (segments - 1) * l.segment_size + BlocksFor(src_.size % l.segment_size) * kBlock <=
          keep_budget) {
    pass.keep_segments = segments;  // the short last segment fits too
  }
  pass.kept.resize(pass.keep_segments);

  // Helpers, each with a reader of its own, take pieces alongside this
  // thread; a one-piece file takes no thread.
  std::vector<std::unique_ptr<DeltaReader>> helper_readers;
  std::vector<std::thread> helpers;
  {
    const unsigned threads = PassThreads(pass.pieces);  // 0 for an empty file
    HelperSlots slots(threads > 1 ? threads - 1 : 0);
    for (unsigned i = 0; i < slots.count(); ++i) {
      auto r = NewReader(l);  // validated above by the first reader: cannot fail but for memory
      if (!r.ok()) break;
      helper_readers.push_back(std::move(r).value());
    }
    for (auto& r : helper_readers) {
      try {
        helpers.emplace_back([this, &l, &pass, rd = r.get()] { RunPass(l, pass, *rd); });
      } catch (const std::system_error&) {
        break;  // no thread to be had: the pieces left are this thread's
      }
    }
    if (env_.stats) env_.stats->pass_helpers += helpers.size();
    RunPass(l, pass, *reader);
    for (auto& t : helpers) t.join();
  }
  if (env_.stats) env_.stats->segments_decoded += pass.segments_decoded.load();
  if (pass.first_failed.load() != UINT64_MAX) return pass.error;

  if (env_.stats) ++env_.stats->trees_built;
  auto checked = VerityLeaves::Check(std::move(pass.leaves), src_.size, src_.digest, src_.context);
  if (!checked.ok()) {
    if (env_.stats) ++env_.stats->verify_failures;
    return checked.status();
  }
  l.leaves = std::make_shared<const VerityLeaves>(std::move(checked).value());
  for (uint64_t seg = 0; seg < pass.kept.size(); ++seg) {
    env_.cache->Put(CacheKey(seg), pass.kept[seg], pass.kept[seg]->size());
  }
  // One reader stays, as after a pass on one thread: the helpers' buffers
  // (up to a few segments each) are not kept for every file ever opened.
  idle_.push_back(std::move(reader));
  return Status::Ok();
}

Result<std::shared_ptr<const VerityLeaves>> PatchedFile::Leaves() const {
  CX_ASSIGN_OR_RETURN(auto l, Load());
  return l->leaves;
}

Status PatchedFile::DecodeRange(const Loaded& l, uint64_t offset, std::span<uint8_t> out) const {
  std::unique_ptr<DeltaReader> reader;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!idle_.empty()) {
      reader = std::move(idle_.back());
      idle_.pop_back();
    }
  }
  if (!reader) {
    CX_ASSIGN_OR_RETURN(reader, NewReader(l));
  }
  const uint64_t before = reader->stats().segments_decoded;
  Status st = reader->ReadRange(offset, out);
  if (env_.stats) env_.stats->segments_decoded += reader->stats().segments_decoded - before;
  if (!st.ok()) return st;  // the reader is dropped: its state after an error is not relied on
  std::lock_guard<std::mutex> lock(mu_);
  if (idle_.size() < kMaxIdleReaders) idle_.push_back(std::move(reader));
  return Status::Ok();
}

Status PatchedFile::VerifyBlocks(const Loaded& l, uint64_t first_block,
                                 std::span<const uint8_t> bytes) const {
  for (uint64_t i = 0; i * kBlock < bytes.size(); ++i) {
    const uint64_t n = std::min<uint64_t>(kBlock, bytes.size() - i * kBlock);
    Digest got;
    if (n == kBlock) {
      got = Sha256::Hash(bytes.data() + i * kBlock, kBlock);
    } else {  // the file's last block, zero-padded as fs-verity hashes it
      std::array<uint8_t, kBlock> padded{};
      std::memcpy(padded.data(), bytes.data() + i * kBlock, n);
      got = Sha256::Hash(padded.data(), kBlock);
    }
    if (env_.stats) ++env_.stats->blocks_verified;
    if (got != l.leaves->leaf(first_block + i)) {
      if (env_.stats) ++env_.stats->verify_failures;
      return Status::Corruption(src_.context + ": block at offset " +
                                std::to_string((first_block + i) * kBlock) +
                                " does not match the signed fs-verity tree");
    }
  }
  return Status::Ok();
}

Result<std::shared_ptr<const std::vector<uint8_t>>> PatchedFile::Segment(const Loaded& l,
                                                                         uint64_t seg) const {
  const uint64_t key = CacheKey(seg);
  if (env_.cache) {
    if (auto hit = env_.cache->Get(key)) {
      if (env_.stats) ++env_.stats->segment_cache_hits;
      return hit;
    }
  }
  const uint64_t start = seg * l.segment_size;
  const uint64_t len = std::min(l.segment_size, src_.size - start);
  auto bytes = std::make_shared<std::vector<uint8_t>>(BlocksFor(len) * kBlock, 0);
  CX_RETURN_IF_ERROR(DecodeRange(l, start, std::span<uint8_t>(bytes->data(), len)));
  // Hashed whole: the tail of the last block is zero-padded already.
  CX_RETURN_IF_ERROR(VerifyBlocks(l, start / kBlock, *bytes));
  std::shared_ptr<const std::vector<uint8_t>> out = std::move(bytes);
  if (env_.cache) env_.cache->Put(key, out, out->size());
  return out;
}

Result<size_t> PatchedFile::Read(uint64_t offset, std::span<uint8_t> buf) const {
  return ReadImpl(offset, buf, false);
}

Result<size_t> PatchedFile::ReadThrough(uint64_t offset, std::span<uint8_t> buf) const {
  return ReadImpl(offset, buf, true);
}

Result<size_t> PatchedFile::ReadImpl(uint64_t offset, std::span<uint8_t> buf, bool through) const {
  // Loaded (so checked against the signed digest) even to read nothing: an
  // empty target whose digest is wrong is refused too.
  CX_ASSIGN_OR_RETURN(auto l, Load());
  if (offset >= src_.size || buf.empty()) return size_t{0};
  const uint64_t end = offset + std::min<uint64_t>(buf.size(), src_.size - offset);
  for (uint64_t pos = offset; pos < end;) {
    const uint64_t seg = pos / l->segment_size;
    const uint64_t seg_start = seg * l->segment_size;
    const uint64_t seg_end = std::min(src_.size, seg_start + l->segment_size);
    const uint64_t n = std::min(end, seg_end) - pos;
    uint8_t* dst = buf.data() + (pos - offset);
    if (through && pos == seg_start && n == seg_end - seg_start &&
        !(env_.cache && env_.cache->Contains(CacheKey(seg)))) {
      // Nothing of these bytes reaches the caller unless all verify: a
      // failure fails the whole read.
      const std::span<uint8_t> out(dst, n);
      CX_RETURN_IF_ERROR(DecodeRange(*l, seg_start, out));
      CX_RETURN_IF_ERROR(VerifyBlocks(*l, seg_start / kBlock, out));
    } else {
      CX_ASSIGN_OR_RETURN(auto bytes, Segment(*l, seg));
      std::memcpy(dst, bytes->data() + (pos - seg_start), n);
    }
    pos += n;
  }
  return static_cast<size_t>(end - offset);
}

}  // namespace cryptex
