// The verified read layer: raw image file -> blocks checked against the
// dm-verity tree whose root hash the signed superblock holds. Verified hash
// blocks are cached (bounded); data blocks are hashed on every read unless the
// caller caches what it derived from them.
//
// Thread safe.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "lru_cache.h"
#include "merkle.h"
#include "status.h"
#include "superblock.h"

namespace cryptex {

class VerifiedBlocks final {
 public:
  // `fd` stays owned by the caller and must outlive this object.
  VerifiedBlocks(int fd, std::string what, const SuperblockInfo& sb, size_t hash_cache_bytes,
                 std::atomic<uint64_t>* failures, std::atomic<uint64_t>* verified);

  // Reads data blocks [first, first + count) into out (count * 4096 bytes) and
  // verifies each. kCorruption names the block, its offset and region.
  Status Read(uint64_t first, uint64_t count, uint8_t* out) const;

  // Verifies the top tree level against the root hash (cheap; done at open).
  Status CheckRoot() const;

  // Describes a data-area byte offset: "offset N (region R)".
  std::string DescribeOffset(uint64_t offset) const;

 private:
  // Verified hash block `index` of tree level `level`.
  Result<std::shared_ptr<const std::vector<uint8_t>>> HashBlock(size_t level, uint64_t index) const;

  int fd_;
  std::string what_;
  const SuperblockInfo& sb_;
  TreeGeometry geo_;
  mutable LruCache<std::vector<uint8_t>> hash_cache_;
  std::atomic<uint64_t>* failures_;
  std::atomic<uint64_t>* verified_;
};

}  // namespace cryptex
