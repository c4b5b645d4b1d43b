// Binary delta codec for patch images: a target file encoded against a lower
// file (docs/FORMAT.md, "Delta encoding").
//
// Encoding is bsdiff-class: approximate matches found with a suffix array of
// the lower file (unchanged 4 KiB blocks are found first by hash, so a huge
// file with a few changed bytes needs no suffix array), a byte-difference
// stream, and separate control / diff / extra streams compressed with zstd.
// For ELF files, code and data references (x86-64 rel32 and RIP-relative
// displacements, AArch64 branch immediates, absolute pointers such as
// R_*_RELATIVE addends) that move with the code they point to are predicted
// and cost nothing.
//
// The target is cut into segments of 2^segment_log2 bytes, each decodable on
// its own from random-access reads of the lower file, so reading a few bytes
// of a patched file decodes only the segments that overlap them.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "format.h"
#include "status.h"

namespace cryptex {

struct DeltaOptions {
  // Target segment size: format::kMinChunkLog2..kMaxChunkLog2.
  uint32_t segment_log2 = format::kDefaultChunkLog2;
  // zstd level of the control, diff and extra streams: 1..ZSTD_maxCLevel().
  // 15: on the Debian pairs of tests/bench it costs 0.2% more bytes than 19
  // and a third less zstd time (16 and 17 are larger than either).
  int zstd_level = 15;
  // Predict moved ELF references (kept only where it makes the delta smaller).
  bool elf_references = true;
  // Threads that encode segments; 0 = hardware concurrency. The output does
  // not depend on it.
  int threads = 0;
  // Optional. Called from the calling thread after every few MiB of input
  // read (kDeltaReleaseEvery), at moments when no other thread of the
  // encoder reads the inputs. A caller whose inputs are read-only file
  // mappings may drop their pages then (madvise MADV_DONTNEED; what is read
  // again comes back from the page cache), so that a large pair of files
  // need not be resident at once. The output does not depend on it.
  std::function<void()> release_inputs;
};

// Input bytes an encoder pass reads between two calls of release_inputs
// (about: passes read in steps of up to a segment or block).
inline constexpr uint64_t kDeltaReleaseEvery = uint64_t{8} << 20;

// Encodes `target` against `lower`. Either may be empty. The result decodes
// with DeltaReader against exactly these lower bytes. Memory besides the
// inputs: 4 bytes per lower byte for the suffix array (built only when the
// lower file is under 16 MiB or the bytes no unchanged 4 KiB block covers
// are at least 1/16 of it; never for 2 GiB or more; when those bytes are
// under 1/4 of it, only windows of the lower file around them are sorted,
// unless those would cover 3/4 of it),
// 64 MiB of search buckets from 16 MiB sorted on, the output, and
// per-segment buffers. A target of 8 MiB or more whose lower file is
// sorted whole is scanned on `threads` threads, with both inputs resident
// meanwhile (release_inputs is called after). kInvalidArgument for bad
// options or a target needing more than kMaxDeltaSegments segments.
Result<std::vector<uint8_t>> EncodeDelta(std::span<const uint8_t> lower,
                                         std::span<const uint8_t> target,
                                         const DeltaOptions& opts = {});

// Reads `out.size()` lower-file bytes at `offset` (always within the lower
// size the reader was opened with) into `out`; any error is passed through.
using LowerReadFn = std::function<Status(uint64_t offset, std::span<uint8_t> out)>;

// Random-access decoder of one delta. Open() checks the header and segment
// index (bounded: at most kMaxDeltaSegments segments); each ReadRange decodes
// only the segments overlapping the range, with memory bounded by a few
// segment sizes. A corrupt delta (or one made for a lower file of another
// size) gives kCorruption naming `context` (e.g. "patch P: file F") and the
// target offset; it never reads or writes out of bounds. Not thread safe.
class DeltaReader final {
 public:
  struct Stats {
    uint64_t segments_decoded = 0;  // segments whose streams were decoded
    uint64_t lower_reads = 0;       // calls of the LowerReadFn
    uint64_t lower_bytes = 0;       // bytes requested from it
  };

  // `delta` must outlive the reader.
  static Result<std::unique_ptr<DeltaReader>> Open(std::span<const uint8_t> delta,
                                                   uint64_t lower_size, LowerReadFn read_lower,
                                                   std::string context);
  ~DeltaReader();
  DeltaReader(const DeltaReader&) = delete;
  DeltaReader& operator=(const DeltaReader&) = delete;

  uint64_t target_size() const;
  uint32_t segment_size() const;
  uint64_t segment_count() const;
  // Fills `out` with target bytes [offset, offset + out.size()); the range
  // must lie within target_size() (else kInvalidArgument).
  Status ReadRange(uint64_t offset, std::span<uint8_t> out);
  const Stats& stats() const;

 private:
  struct Impl;
  explicit DeltaReader(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Decodes the whole target (convenience for tests and tools); memory grows
// with the bytes decoded, segment by segment.
Result<std::vector<uint8_t>> ApplyDelta(std::span<const uint8_t> delta,
                                        std::span<const uint8_t> lower, const std::string& context);

// Most segments one delta may declare; with segment_log2 <= 20 this bounds a
// target at 1 TiB and the reader's index at 8 MiB.
inline constexpr uint64_t kMaxDeltaSegments = uint64_t{1} << 20;

}  // namespace cryptex
