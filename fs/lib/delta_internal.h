// Internals shared by the delta encoder and decoder (delta_*.cc): the byte
// layout constants of docs/FORMAT.md "Delta encoding", varints, CRC-32C,
// the zstd stream helpers and the ELF reference model. Not a public API.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "status.h"

namespace cryptex::delta {

// ---- layout ------------------------------------------------------------------

inline constexpr uint8_t kMagic[4] = {'C', 'X', 'D', '1'};
// Header flag: a reference model (ELF address maps + moves) follows the index.
inline constexpr uint8_t kFlagRefModel = 1;
// Segment kinds (first payload byte; an empty payload is an identity segment).
inline constexpr uint8_t kKindCopy = 1;
inline constexpr uint8_t kKindDelta = 2;
// Stream storage methods.
inline constexpr uint8_t kStreamRaw = 0;
inline constexpr uint8_t kStreamZstd = 1;
// Control entry prediction flags (low kPredictBits bits of the first varint).
inline constexpr unsigned kPredictBits = 3;
inline constexpr unsigned kPredictRel = 1;     // relative code references
inline constexpr unsigned kPredictAbs = 2;     // absolute 64-bit pointers
inline constexpr unsigned kPredictData32 = 4;  // 32-bit offsets in data (eh_frame)
inline constexpr unsigned kPredictAll = (1u << kPredictBits) - 1;
// A control stream holds at most this many bytes per target byte of its
// segment (each entry emits at least one byte and takes at most 30 bytes).
inline constexpr uint64_t kMaxCtrlBytesPerTargetByte = 30;
// The reference model, decompressed, is at most this large.
inline constexpr uint64_t kMaxRefModelBytes = 16u << 20;
inline constexpr uint64_t kMaxLoadSegments = 64;

// ---- bytes -------------------------------------------------------------------

void PutU32(std::vector<uint8_t>* out, uint32_t v);
void PutU64(std::vector<uint8_t>* out, uint64_t v);
void PutVarint(std::vector<uint8_t>* out, uint64_t v);
inline uint64_t ZigZag(int64_t v) {
  return (static_cast<uint64_t>(v) << 1) ^ static_cast<uint64_t>(v >> 63);
}
inline int64_t UnZigZag(uint64_t v) {
  return static_cast<int64_t>(v >> 1) ^ -static_cast<int64_t>(v & 1);
}

// Bounds-checked cursor over untrusted bytes. Every getter returns false
// (and consumes nothing) when the bytes run out or a varint is malformed.
class ByteCursor {
 public:
  explicit ByteCursor(std::span<const uint8_t> b) : b_(b) {}
  bool U8(uint8_t* v);
  bool U32(uint64_t* v);
  bool U64(uint64_t* v);
  bool Varint(uint64_t* v);
  bool Bytes(size_t n, std::span<const uint8_t>* out);
  size_t remaining() const { return b_.size() - pos_; }
  size_t pos() const { return pos_; }

 private:
  std::span<const uint8_t> b_;
  size_t pos_ = 0;
};

uint32_t Crc32c(std::span<const uint8_t> bytes, uint32_t crc = 0);

// Appends one stream: varint raw size, varint stored size, method byte, the
// stored bytes (zstd at `level` when that is smaller, else raw).
void PutStream(std::vector<uint8_t>* out, std::span<const uint8_t> raw, int level);
// Reads one stream whose raw size must be <= max_raw into *raw (resized).
// Returns a message on failure.
bool GetStream(ByteCursor* in, uint64_t max_raw, std::vector<uint8_t>* raw, std::string* why);
// A zstd frame of `raw` (level) without its magic number / its exact inverse
// (false unless the frame declares exactly raw_size bytes and is well formed).
std::vector<uint8_t> ZstdCompress(std::span<const uint8_t> raw, int level);
bool ZstdDecompress(std::span<const uint8_t> stored, uint64_t raw_size, std::vector<uint8_t>* raw);
std::optional<uint64_t> ZstdContentSize(std::span<const uint8_t> stored);

// ---- ELF reference model -----------------------------------------------------

// One PT_LOAD: its file-backed part (size) and the zero-filled rest (bss,
// up to memsize >= size).
struct LoadSegment {
  uint64_t offset = 0, vaddr = 0, size = 0, memsize = 0;
};
// Lower-file bytes [lower, lower + size) appear in the target at lower + shift.
struct Move {
  uint64_t lower = 0, size = 0;
  int64_t shift = 0;
};

enum class Arch : uint8_t { kX86_64 = 1, kAArch64 = 2 };

struct RefIndex;  // lookup tables of a RefModel (delta_elf.cc)

// What lets the decoder predict a moved reference: where the loadable parts
// of both files sit in memory, and where lower bytes moved to. Predictions
// are a pure function of this model and the lower bytes of a control entry.
class RefModel {
 public:
  Arch arch = Arch::kX86_64;
  std::vector<LoadSegment> lower_segs, target_segs;
  // .eh_frame_hdr (PT_GNU_EH_FRAME) of both files; size 0: none.
  uint64_t lower_ehhdr_va = 0, lower_ehhdr_size = 0, target_ehhdr_va = 0;
  std::vector<Move> moves;  // sorted by lower, disjoint

  std::vector<uint8_t> Serialize() const;
  // Fills *out and builds its index.
  static bool Parse(std::span<const uint8_t> bytes, RefModel* out, std::string* why);

  // Precomputes the lookup tables Predict uses (a few KiB for the load
  // segments; up to 8 bytes per move, at most 8 MiB, for the moves). Call
  // after filling or changing the fields; without a current index Predict
  // builds the tables on every call (same results, slower).
  void BuildIndex();

  // Writes the predicted target bytes of a control entry: lower bytes `in`
  // (at lower offset lpos) copied to target offset tpos, with references
  // rewritten per `flags` (kPredict*). out has in.size(). Thread safe (const).
  void Predict(std::span<const uint8_t> in, uint64_t lpos, uint64_t tpos, unsigned flags,
               uint8_t* out) const;

 private:
  struct Lookup;  // an index plus per-call cursors
  std::shared_ptr<const RefIndex> MakeIndex() const;
  void PredictX86(std::span<const uint8_t> in, uint64_t lpos, uint64_t tpos, Lookup& lk,
                  uint8_t* out) const;
  void PredictA64(std::span<const uint8_t> in, uint64_t lpos, uint64_t tpos, Lookup& lk,
                  uint8_t* out) const;
  void PredictAbs(std::span<const uint8_t> in, uint64_t lpos, Lookup& lk, uint8_t* out) const;
  void PredictData32(std::span<const uint8_t> in, uint64_t lpos, uint64_t tpos, Lookup& lk,
                     uint8_t* out) const;

  std::shared_ptr<const RefIndex> index_;  // immutable once built, shared by copies
};

// Load segments, machine and PT_GNU_EH_FRAME (vaddr, memsz; 0, 0 if none) of
// a 64-bit little-endian ELF file; false if `file` is not one.
bool ParseElfLoads(std::span<const uint8_t> file, Arch* arch, std::vector<LoadSegment>* segs,
                   uint64_t* ehhdr_va, uint64_t* ehhdr_size);

// File offset <-> VA through load segments (the first segment holding it);
// false when not file-backed. The reference semantics of RefModel's index.
bool OffsetToVa(const std::vector<LoadSegment>& segs, uint64_t off, uint64_t* va);
bool VaToOffset(const std::vector<LoadSegment>& segs, uint64_t va, uint64_t* off);

// ---- matching (encoder) ------------------------------------------------------

// Target bytes [tpos, tpos + size) are encoded as lower [lpos, lpos + size)
// plus a byte difference; target bytes covered by no match are extra bytes.
struct Match {
  uint64_t tpos = 0, lpos = 0, size = 0;
};

// bsdiff-class approximate matches of target against lower, sorted by tpos
// and disjoint in the target. `release` (may be empty): called from the
// calling thread after about every kDeltaReleaseEvery input bytes read
// (DeltaOptions::release_inputs), and once after a parallel scan. A large
// target may be scanned on up to `threads` threads; the matches do not
// depend on it.
std::vector<Match> FindMatches(std::span<const uint8_t> lower, std::span<const uint8_t> target,
                               const std::function<void()>& release = {}, unsigned threads = 1);

// Runs fn(worker, i) for i in [0, n) on `workers` threads (the caller's
// thread included); each index exactly once.
template <typename Fn>
void ParallelFor(uint64_t n, unsigned workers, const Fn& fn) {
  std::atomic<uint64_t> next{0};
  auto run = [&](unsigned w) {
    for (uint64_t i = next++; i < n; i = next++) fn(w, i);
  };
  std::vector<std::thread> threads;
  for (unsigned w = 1; w < workers; ++w) {
    try {
      threads.emplace_back(run, w);
    } catch (const std::system_error&) {
      break;  // fewer threads: the others take the work
    }
  }
  run(0);
  for (auto& t : threads) t.join();
}

}  // namespace cryptex::delta
