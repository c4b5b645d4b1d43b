#include "merkle.h"

#include <algorithm>
#include <atomic>
#include <cstring>
#include <string>
#include <system_error>
#include <thread>

namespace cryptex {
namespace {

constexpr uint64_t kBlock = format::kBlockSize;
constexpr uint64_t kHashesPerBlock = kBlock / format::kHashSize;  // 128
constexpr size_t kMaxSalt = 256;                                  // dm-verity's limit
// Below this many data blocks per thread, starting a thread costs more than
// it saves.
constexpr uint64_t kMinBlocksPerThread = 256;

void PutHash(uint8_t* area, uint64_t block, uint64_t index_in_level, const Digest& d) {
  // `block` is the first hash-area block of the level; hashes are packed
  // 128 per block, so the level is one contiguous array of digests.
  std::memcpy(area + block * kBlock + index_in_level * format::kHashSize, d.data(), d.size());
}

// Hashes data blocks [begin, end) into level 0. Stops early once *stop is set
// (another worker failed).
Status HashLeaves(uint64_t begin, uint64_t end, std::span<const uint8_t> salt,
                  const std::function<Status(uint64_t, uint8_t*)>& read_block,
                  uint64_t level0_start, uint8_t* area, std::atomic<bool>* stop) {
  std::vector<uint8_t> buf(kBlock);
  for (uint64_t i = begin; i < end; ++i) {
    if (stop->load(std::memory_order_relaxed)) return Status::Ok();
    Status st = read_block(i, buf.data());
    if (!st.ok()) {
      stop->store(true, std::memory_order_relaxed);
      return st;
    }
    PutHash(area, level0_start, i, SaltedBlockHash(salt, buf.data()));
  }
  return Status::Ok();
}

}  // namespace

TreeGeometry TreeGeometry::For(uint64_t data_blocks) {
  TreeGeometry g;
  g.data_blocks = data_blocks;
  // Level i has ceil(data_blocks / 128^(i+1)) blocks; levels are added until
  // one has a single block. This equals dm-verity's count (the number of
  // base-128 digits of data_blocks - 1), including 0 levels for one block.
  for (uint64_t blocks = data_blocks; blocks > 1;) {
    blocks = (blocks + kHashesPerBlock - 1) / kHashesPerBlock;
    g.levels.push_back({0, blocks});
  }
  // Top level first in storage.
  uint64_t pos = 0;
  for (size_t i = g.levels.size(); i-- > 0;) {
    g.levels[i].start = pos;
    pos += g.levels[i].count;
  }
  g.total_hash_blocks = pos;
  return g;
}

Digest SaltedBlockHash(std::span<const uint8_t> salt, const uint8_t* block) {
  thread_local Sha256 h;
  h.Update(salt.data(), salt.size());
  h.Update(block, kBlock);
  return h.Final();
}

Status BuildMerkleTree(uint64_t data_blocks, std::span<const uint8_t> salt,
                       const std::function<Status(uint64_t, uint8_t*)>& read_block, int threads,
                       std::vector<uint8_t>* hash_area, Digest* root) {
  if (data_blocks == 0) return Status::InvalidArgument("Merkle tree over 0 data blocks");
  if (salt.size() > kMaxSalt) {
    return Status::InvalidArgument("Merkle salt of " + std::to_string(salt.size()) +
                                   " bytes (max " + std::to_string(kMaxSalt) + ")");
  }
  const TreeGeometry g = TreeGeometry::For(data_blocks);
  hash_area->assign(g.total_hash_blocks * kBlock, 0);

  if (g.levels.empty()) {  // one data block: its salted hash is the root
    std::vector<uint8_t> buf(kBlock);
    CX_RETURN_IF_ERROR(read_block(0, buf.data()));
    *root = SaltedBlockHash(salt, buf.data());
    return Status::Ok();
  }

  // Level 0, split into contiguous ranges, one per worker.
  uint8_t* area = hash_area->data();
  const uint64_t level0_start = g.levels[0].start;
  uint64_t workers = static_cast<uint64_t>(std::max(threads, 1));
  workers = std::min(workers, std::max<uint64_t>(1, data_blocks / kMinBlocksPerThread));
  std::atomic<bool> stop{false};
  std::vector<Status> results(workers);
  std::vector<std::thread> pool;
  const uint64_t per = data_blocks / workers;
  const uint64_t extra = data_blocks % workers;
  uint64_t begin = 0;
  for (uint64_t w = 0; w < workers; ++w) {
    const uint64_t end = begin + per + (w < extra ? 1 : 0);
    auto job = [&, w, begin, end] {
      results[w] = HashLeaves(begin, end, salt, read_block, level0_start, area, &stop);
    };
    if (w + 1 == workers) {
      job();  // the calling thread takes the last range
    } else {
      try {
        pool.emplace_back(job);
      } catch (const std::system_error&) {
        job();  // could not start a thread: do the range here
      }
    }
    begin = end;
  }
  for (std::thread& t : pool) t.join();
  for (Status& st : results) {
    if (!st.ok()) return st;
  }

  // Upper levels: each hashes the blocks of the level below (1/128 of the
  // work of level 0, so single threaded).
  for (size_t l = 1; l < g.levels.size(); ++l) {
    const TreeGeometry::Level& below = g.levels[l - 1];
    for (uint64_t j = 0; j < below.count; ++j) {
      PutHash(area, g.levels[l].start, j, SaltedBlockHash(salt, area + (below.start + j) * kBlock));
    }
  }
  *root = SaltedBlockHash(salt, area + g.levels.back().start * kBlock);
  return Status::Ok();
}

}  // namespace cryptex
