// dm-verity compatible Merkle tree (format 1, SHA-256, 4 KiB data and hash
// blocks, salt prepended to every hashed block, levels stored top first), so
// that `veritysetup verify --no-superblock ...` checks our trees.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "format.h"
#include "sha256.h"
#include "status.h"

namespace cryptex {

// Shape of a tree over `data_blocks` blocks. Level 0 hashes data blocks; the
// last level has exactly one block, whose salted hash is the root hash.
// Exception, exactly as dm-verity / veritysetup compute it: with
// data_blocks == 1 there are no levels and no hash blocks (levels is empty,
// total_hash_blocks == 0) and the root hash is SaltedBlockHash(data block 0).
struct TreeGeometry {
  uint64_t data_blocks = 0;
  // levels[i] = {first block index within the hash area, block count} for
  // level i (0 = leaves). Storage order is top level first, so levels.back()
  // starts at hash-area block 0.
  struct Level {
    uint64_t start = 0;
    uint64_t count = 0;
  };
  std::vector<Level> levels;
  uint64_t total_hash_blocks = 0;

  // REQUIRES: data_blocks >= 1.
  static TreeGeometry For(uint64_t data_blocks);
};

// hash = SHA-256(salt || block). `block` is exactly 4096 bytes.
Digest SaltedBlockHash(std::span<const uint8_t> salt, const uint8_t* block);

// Builds the hash area. `read_block(i, buf)` fills buf (4096 bytes) with data
// block i and returns a Status. Uses up to `threads` threads for level 0.
// On success *hash_area holds geometry.total_hash_blocks * 4096 bytes and
// *root the root hash. The first failing read_block status (lowest block
// index among those tried) is returned; *hash_area is then unspecified.
// REQUIRES: data_blocks >= 1 (else kInvalidArgument); salt.size() <= 256;
// with threads > 1, read_block is called concurrently from several threads
// (each with its own buf) and must be thread safe; it must not throw.
Status BuildMerkleTree(uint64_t data_blocks, std::span<const uint8_t> salt,
                       const std::function<Status(uint64_t, uint8_t*)>& read_block, int threads,
                       std::vector<uint8_t>* hash_area, Digest* root);

}  // namespace cryptex
