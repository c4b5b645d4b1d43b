// fs-verity file digests (version 1, SHA-256, 4 KiB Merkle blocks, no salt),
// equal to what `fsverity digest FILE` prints.
//
// Streaming: feed content in order with Update(); chunks may be any size. For
// parallel builders, leaf hashes of 4 KiB-aligned pieces can be computed
// elsewhere (LeafHashes) and fed with AddLeafHashes().
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "sha256.h"

namespace cryptex {

class FsVerityHasher final {
 public:
  FsVerityHasher();
  void Update(const void* data, size_t len);
  // `leaves` are SHA-256 of zero-padded 4 KiB blocks (see LeafHashes);
  // `bytes` the content length they cover.
  // REQUIRES: total bytes fed so far is a multiple of 4096; if `bytes` is
  // not, this is the last input before Final(). Violations abort.
  void AddLeafHashes(std::span<const Digest> leaves, uint64_t bytes);
  // The fs-verity file digest (SHA-256 of the fsverity_descriptor). Resets
  // the hasher to the empty state, so it can be reused for the next file.
  Digest Final();

 private:
  // pending_[i] holds hashes of level i (0 = hashes of data blocks) not yet
  // folded into a full hash block: at most 4096 bytes per level, so memory is
  // O(levels * 4 KiB) whatever the file size.
  void PushHash(size_t level, const Digest& d);
  std::vector<std::vector<uint8_t>> pending_;  // per level: partial hash block
  std::vector<uint64_t> level_counts_;         // hashes pushed per level
  std::vector<uint8_t> partial_;               // partial data block
  uint64_t size_ = 0;
  bool tail_added_ = false;  // AddLeafHashes ended mid-block: no more input
};

// SHA-256 of each 4 KiB block of `data` (last block zero-padded).
std::vector<Digest> LeafHashes(const uint8_t* data, size_t len);

// One-shot digest of a buffer.
Digest FsVerityDigest(const void* data, size_t len);

}  // namespace cryptex
