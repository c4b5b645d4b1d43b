#include "patched_file.h"

#include <algorithm>
#include <cstring>
#include <utility>

#include "format.h"
#include "fsverity.h"

namespace cryptex {
namespace {

constexpr uint64_t kBlock = format::kBlockSize;
// Decode granularity of the first-access pass: bounded memory whatever the
// file size.
constexpr uint64_t kPieceBytes = 256 * 1024;

uint64_t BlocksFor(uint64_t size) { return (size + kBlock - 1) / kBlock; }

// A segment's bytes as the cache holds them: zero-padded to whole blocks,
// as fs-verity hashes the last block.
std::shared_ptr<std::vector<uint8_t>> PaddedSegment(const uint8_t* data, uint64_t len) {
  auto v = std::make_shared<std::vector<uint8_t>>(BlocksFor(len) * kBlock, 0);
  std::memcpy(v->data(), data, len);
  return v;
}

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

Status PatchedFile::BuildLeaves(Loaded& l) const {
  CX_ASSIGN_OR_RETURN(auto reader, NewReader(l));
  l.segment_size = reader->segment_size();
  std::vector<Digest> leaves;
  leaves.reserve(BlocksFor(src_.size));
  const uint64_t piece =
      std::max<uint64_t>(l.segment_size, kPieceBytes) / l.segment_size * l.segment_size;
  std::vector<uint8_t> buf(std::min<uint64_t>(piece, src_.size));
  // The segments decoded here are verified once the leaves check out: up to
  // kKeepFraction of the cache of them is kept to be cached then, so the
  // read that caused this pass does not decode and hash them again.
  const uint64_t keep_budget = env_.cache ? env_.cache->capacity() / kKeepFraction : 0;
  uint64_t kept_bytes = 0;
  std::vector<std::pair<uint64_t, std::shared_ptr<const std::vector<uint8_t>>>> kept;
  for (uint64_t off = 0; off < src_.size; off += piece) {
    const uint64_t n = std::min<uint64_t>(piece, src_.size - off);
    const uint64_t before = reader->stats().segments_decoded;
    Status st = reader->ReadRange(off, std::span<uint8_t>(buf.data(), n));
    if (env_.stats) env_.stats->segments_decoded += reader->stats().segments_decoded - before;
    CX_RETURN_IF_ERROR(st);
    const std::vector<Digest> part = LeafHashes(buf.data(), n);
    leaves.insert(leaves.end(), part.begin(), part.end());
    for (uint64_t s = 0; s < n; s += l.segment_size) {
      const uint64_t len = std::min<uint64_t>(l.segment_size, n - s);
      if (kept_bytes + BlocksFor(len) * kBlock > keep_budget) break;
      kept.emplace_back((off + s) / l.segment_size, PaddedSegment(buf.data() + s, len));
      kept_bytes += kept.back().second->size();
    }
  }
  if (env_.stats) ++env_.stats->trees_built;
  auto checked = VerityLeaves::Check(std::move(leaves), src_.size, src_.digest, src_.context);
  if (!checked.ok()) {
    if (env_.stats) ++env_.stats->verify_failures;
    return checked.status();
  }
  l.leaves = std::make_shared<const VerityLeaves>(std::move(checked).value());
  for (auto& [seg, bytes] : kept) env_.cache->Put(CacheKey(seg), bytes, bytes->size());
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
  const uint64_t first_block = start / kBlock;
  for (uint64_t i = 0; i < bytes->size() / kBlock; ++i) {
    // The tail of the last block is zero-padded, as fs-verity hashes it.
    const Digest got = Sha256::Hash(bytes->data() + i * kBlock, kBlock);
    if (env_.stats) ++env_.stats->blocks_verified;
    if (got != l.leaves->leaf(first_block + i)) {
      if (env_.stats) ++env_.stats->verify_failures;
      return Status::Corruption(src_.context + ": block at offset " +
                                std::to_string((first_block + i) * kBlock) +
                                " does not match the signed fs-verity tree");
    }
  }
  std::shared_ptr<const std::vector<uint8_t>> out = std::move(bytes);
  if (env_.cache) env_.cache->Put(key, out, out->size());
  return out;
}

Result<size_t> PatchedFile::Read(uint64_t offset, std::span<uint8_t> buf) const {
  // Loaded (so checked against the signed digest) even to read nothing: an
  // empty target whose digest is wrong is refused too.
  CX_ASSIGN_OR_RETURN(auto l, Load());
  if (offset >= src_.size || buf.empty()) return size_t{0};
  const uint64_t end = offset + std::min<uint64_t>(buf.size(), src_.size - offset);
  for (uint64_t pos = offset; pos < end;) {
    const uint64_t seg = pos / l->segment_size;
    CX_ASSIGN_OR_RETURN(auto bytes, Segment(*l, seg));
    const uint64_t seg_start = seg * l->segment_size;
    const uint64_t n = std::min(end, seg_start + l->segment_size) - pos;
    std::memcpy(buf.data() + (pos - offset), bytes->data() + (pos - seg_start), n);
    pos += n;
  }
  return static_cast<size_t>(end - offset);
}

}  // namespace cryptex
