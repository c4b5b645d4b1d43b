// Verified random-access reading of a patch's delta file (docs/FORMAT.md
// §11, §12): the target bytes are decoded from a delta against a lower file,
// and every 4 KiB block served is checked against the fs-verity Merkle tree
// of the target, whose digest the patch's signature covers.
//
// The tree is held as its leaf hashes (SHA-256 of each 4 KiB block, 32 bytes
// per block: 0.8% of the file). Higher levels are only needed to bind the
// leaves to the signed digest, which happens once, when the leaves are
// accepted (VerityLeaves::Check); after that the leaves are trusted memory.
// Where the leaves come from is the caller's choice:
//  * PatchedFile computes them on first access with one pass over the
//    decoded file, its pieces decoded on a few threads (memory: one
//    segment per thread, plus the segments kept for the cache: at most
//    1/kKeepFraction of it);
//  * a store may later persist them (VerityLeaves::Serialize at install
//    time) and hand them back (VerityLeaves::Parse): untrusted bytes,
//    accepted only if they hash up to the signed digest.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <vector>

#include "delta.h"
#include "lru_cache.h"
#include "sha256.h"
#include "status.h"

namespace cryptex {

// The leaf level of a file's fs-verity tree, checked against the signed
// digest. Immutable once made.
class VerityLeaves final {
 public:
  // Accepts `leaves` for a file of `size` bytes iff there are
  // ceil(size / 4096) of them and the fs-verity digest they hash up to
  // equals `signed_digest`; else kCorruption naming `context` and both
  // digests.
  static Result<VerityLeaves> Check(std::vector<Digest> leaves, uint64_t size,
                                    const Digest& signed_digest, const std::string& context);
  // The leaves as stored bytes (32 per leaf), for a persistent cache.
  std::vector<uint8_t> Serialize() const;
  // Untrusted bytes from Serialize(): as Check (kCorruption if the length
  // is not 32 per block of `size`).
  static Result<VerityLeaves> Parse(std::span<const uint8_t> bytes, uint64_t size,
                                    const Digest& signed_digest, const std::string& context);

  uint64_t size() const { return size_; }
  uint64_t blocks() const { return leaves_.size(); }
  // SHA-256 of zero-padded block `i`. REQUIRES: i < blocks().
  const Digest& leaf(uint64_t i) const { return leaves_[i]; }

 private:
  VerityLeaves(std::vector<Digest> leaves, uint64_t size)
      : leaves_(std::move(leaves)), size_(size) {}
  std::vector<Digest> leaves_;
  uint64_t size_ = 0;
};

// Counters of all the patched files of one view (shared, readable any time).
struct PatchedFileStats {
  std::atomic<uint64_t> trees_built{0};       // first-access passes over a whole file
  std::atomic<uint64_t> pass_helpers{0};      // threads those passes started besides their caller's
  std::atomic<uint64_t> segments_decoded{0};  // delta segments decoded, all readers
  std::atomic<uint64_t> segment_cache_hits{0};
  std::atomic<uint64_t> blocks_verified{0};  // 4 KiB blocks checked against a leaf
  std::atomic<uint64_t> verify_failures{0};  // blocks or trees that did not match
};

// Decoded, verified segments of the delta files of one view, keyed by
// SegmentKey. Byte-bounded and thread safe (lru_cache.h).
using SegmentCache = LruCache<std::vector<uint8_t>>;

// What the delta files of one view share. Everything is optional and must
// outlive the files.
struct PatchedFileEnv {
  PatchedFileStats* stats = nullptr;
  SegmentCache* cache = nullptr;
  // Distinct per file sharing `cache`: below 2^43.
  uint64_t cache_id = 0;
  // Threads of a first-access pass (the caller's included), at most one
  // per piece; 0: min(hardware threads, PatchedFile::kMaxPassThreads).
  // Helpers beyond the caller's thread also count against a library-wide
  // cap (patched_file.cc), so a pass may get fewer.
  unsigned pass_threads = 0;
};

// Where a delta file's bytes come from. The functions are called from any
// thread, possibly concurrently, and must be thread safe.
struct PatchedFileSource {
  std::string context;  // "patch P: file F", prefixed to every error
  uint64_t size = 0;    // target size (the patch inode's size)
  Digest digest{};      // signed fs-verity digest of the target
  uint64_t delta_size = 0;
  // Fills out with delta bytes at offset (within delta_size).
  std::function<Status(uint64_t offset, std::span<uint8_t> out)> read_delta;
  uint64_t lower_size = 0;
  LowerReadFn read_lower;
};

// One delta file. Thread safe: Read may be called concurrently (each decode
// takes a DeltaReader from a small pool, so decodes run in parallel).
// Reads work in whole delta segments (the unit DeltaReader decodes anyway):
// each segment is decoded, every block of it checked against its leaf, and
// the verified segment kept in the shared cache, so the many small lower
// reads a delta stacked on a delta makes decode each lower segment once.
// The first-access pass (no leaves given) decodes the file's pieces on up
// to PatchedFileEnv::pass_threads threads, each with its own reader, and
// joins them before returning; read_lower must be thread safe.
// Memory, after first access and until destruction: the delta's bytes, the
// leaves (0.8% of the target) and up to kMaxIdleReaders idle readers (each
// its parsed index and one segment; the buffers a decode works in belong to
// the decoding thread, delta_decode.cc); plus its share of the bounded cache.
class PatchedFile final {
 public:
  PatchedFile(PatchedFileSource src, PatchedFileEnv env);
  // With leaves already checked (e.g. from a store): no first-access pass.
  PatchedFile(PatchedFileSource src, PatchedFileEnv env, VerityLeaves leaves);
  ~PatchedFile();
  PatchedFile(const PatchedFile&) = delete;
  PatchedFile& operator=(const PatchedFile&) = delete;

  // Up to buf.size() bytes at `offset` (0 at or past EOF). Decodes only the
  // segments overlapping the range that are not cached (plus, on first
  // access, one pass over the whole file to build the leaves), and verifies
  // every block of them against its leaf before copying any of it.
  // kCorruption (naming the context and offset) on any mismatch: never
  // wrong bytes.
  Result<size_t> Read(uint64_t offset, std::span<uint8_t> buf) const;
  // As Read, for a caller that keeps what it reads (a FUSE reply, which the
  // kernel's page cache keeps; an extract): a segment the range covers
  // whole that the cache lacks is decoded straight into `buf` and verified
  // there, and not cached. That saves a segment-sized allocation and a copy
  // per segment of a sequential read. A decoder reading its lower file
  // uses Read, so that a delta stacked on this one, making small reads of
  // the same segments, decodes each once.
  Result<size_t> ReadThrough(uint64_t offset, std::span<uint8_t> buf) const;
  // The checked leaves, building them if needed (for a store to persist).
  Result<std::shared_ptr<const VerityLeaves>> Leaves() const;
  uint64_t size() const { return src_.size; }

  static constexpr size_t kMaxIdleReaders = 4;
  // The first-access pass puts the segments it decoded into the cache (once
  // the leaves check out), up to 1/kKeepFraction of the cache's capacity.
  static constexpr uint64_t kKeepFraction = 4;
  // Threads a first-access pass uses by default (PatchedFileEnv::pass_threads).
  static constexpr unsigned kMaxPassThreads = 4;

 private:
  struct Loaded;  // delta bytes + leaves
  Result<std::shared_ptr<const Loaded>> Load() const;
  struct Pass;  // the shared state of one first-access pass
  // One pass over the decoded file: l.leaves, checked. REQUIRES: mu_ held.
  // The pass decodes pieces of the file on up to PassThreads() threads; on
  // failure the error of the lowest failing piece is returned, as a
  // sequential pass would.
  Status BuildLeaves(Loaded& l) const;
  unsigned PassThreads(uint64_t pieces) const;
  // Claims and decodes pieces until none is left (or one below failed).
  void RunPass(const Loaded& l, Pass& pass, DeltaReader& reader) const;
  // Piece p: its leaves, and its segments to keep, into `pass`.
  Status DecodePiece(const Loaded& l, Pass& pass, DeltaReader& reader, uint64_t p,
                     std::vector<uint8_t>& scratch) const;
  Result<std::unique_ptr<DeltaReader>> NewReader(const Loaded& l) const;
  uint64_t CacheKey(uint64_t seg) const;  // of segment `seg` in env_.cache
  // Verified segment `seg` (zero-padded to whole blocks), from the cache or
  // decoded.
  Result<std::shared_ptr<const std::vector<uint8_t>>> Segment(const Loaded& l, uint64_t seg) const;
  Status DecodeRange(const Loaded& l, uint64_t offset, std::span<uint8_t> out) const;
  // Checks the blocks of `bytes`, which start at block `first_block`, against
  // their leaves (the last one zero-padded if short).
  Status VerifyBlocks(const Loaded& l, uint64_t first_block, std::span<const uint8_t> bytes) const;
  Result<size_t> ReadImpl(uint64_t offset, std::span<uint8_t> buf, bool through) const;

  PatchedFileSource src_;
  PatchedFileEnv env_;
  mutable std::mutex mu_;  // guards loaded_, failed_, idle_
  mutable std::shared_ptr<const Loaded> loaded_;
  // A first-access pass that found corruption is not repeated: every later
  // read fails the same way at no cost. (I/O errors are retried.)
  mutable Status failed_;
  std::shared_ptr<const VerityLeaves> preset_leaves_;
  mutable std::vector<std::unique_ptr<DeltaReader>> idle_;
};

}  // namespace cryptex
