#include "fsverity.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "format.h"

namespace cryptex {
namespace {

constexpr size_t kBlock = 4096;
constexpr uint8_t kLogBlock = 12;

// The struct whose SHA-256 is the fs-verity file digest (Linux
// include/uapi/linux/fsverity.h, struct fsverity_descriptor; the kernel's
// trailing signature[] is empty and sig_size zero when digesting).
struct FsVerityDescriptor {
  uint8_t version;             // 1
  uint8_t hash_algorithm;      // FS_VERITY_HASH_ALG_SHA256 == 1
  uint8_t log_blocksize;       // 12
  uint8_t salt_size;           // 0
  format::Le32 reserved_0x04;  // sig_size in the kernel's copy; 0 here
  format::Le64 data_size;      // file size in bytes
  uint8_t root_hash[64];       // SHA-256 root hash, zero padded
  uint8_t salt[32];            // unused (no salt)
  uint8_t reserved[144];       // zero
};
static_assert(sizeof(FsVerityDescriptor) == 256);

[[noreturn]] void ContractViolation(const char* what) {
  std::fprintf(stderr, "cryptex: FsVerityHasher misuse: %s\n", what);
  std::abort();
}

Digest BlockHash(const uint8_t* block) { return Sha256::Hash(block, kBlock); }

// SHA-256 of `len` (< 4096) bytes zero-padded to a block.
Digest PaddedBlockHash(const uint8_t* data, size_t len) {
  uint8_t buf[kBlock];
  std::memcpy(buf, data, len);
  std::memset(buf + len, 0, kBlock - len);
  return BlockHash(buf);
}

}  // namespace

FsVerityHasher::FsVerityHasher() { partial_.reserve(kBlock); }

void FsVerityHasher::PushHash(size_t level, const Digest& d) {
  // A level only grows when the one below completes a block, so levels are
  // created one at a time, at most ceil(log128(blocks)) + 1 of them.
  if (level == pending_.size()) {
    pending_.emplace_back().reserve(kBlock);
    level_counts_.push_back(0);
  }
  std::vector<uint8_t>& p = pending_[level];
  p.insert(p.end(), d.begin(), d.end());
  ++level_counts_[level];
  if (p.size() == kBlock) {
    const Digest up = BlockHash(p.data());
    p.clear();
    PushHash(level + 1, up);
  }
}

void FsVerityHasher::Update(const void* data, size_t len) {
  if (len == 0) return;
  if (tail_added_) ContractViolation("Update after a partial-block AddLeafHashes");
  const auto* p = static_cast<const uint8_t*>(data);
  size_ += len;
  if (!partial_.empty()) {
    const size_t take = std::min(len, kBlock - partial_.size());
    partial_.insert(partial_.end(), p, p + take);
    p += take;
    len -= take;
    if (partial_.size() < kBlock) return;
    PushHash(0, BlockHash(partial_.data()));
    partial_.clear();
  }
  for (; len >= kBlock; p += kBlock, len -= kBlock) PushHash(0, BlockHash(p));
  partial_.insert(partial_.end(), p, p + len);
}

void FsVerityHasher::AddLeafHashes(std::span<const Digest> leaves, uint64_t bytes) {
  if (!partial_.empty() || tail_added_) {
    ContractViolation("AddLeafHashes at an offset that is not a multiple of 4096");
  }
  if ((bytes + kBlock - 1) / kBlock != leaves.size()) {
    ContractViolation("AddLeafHashes: leaf count does not match the byte count");
  }
  for (const Digest& d : leaves) PushHash(0, d);
  size_ += bytes;
  tail_added_ = bytes % kBlock != 0;
}

Digest FsVerityHasher::Final() {
  if (!partial_.empty()) {
    PushHash(0, PaddedBlockHash(partial_.data(), partial_.size()));
    partial_.clear();
  }
  FsVerityDescriptor desc;
  std::memset(&desc, 0, sizeof(desc));
  desc.version = 1;
  desc.hash_algorithm = 1;
  desc.log_blocksize = kLogBlock;
  desc.salt_size = 0;
  desc.data_size.set(size_);
  // Root: for an empty file all zeros; for one block the hash of that block
  // (the tree has no levels); otherwise the hash of the single top block.
  // Partial blocks are flushed bottom-up until a level holds one hash.
  for (size_t level = 0; level < pending_.size(); ++level) {
    if (level_counts_[level] == 1) {
      std::memcpy(desc.root_hash, pending_[level].data(), sizeof(Digest));
      break;
    }
    std::vector<uint8_t>& p = pending_[level];
    if (!p.empty()) {
      const size_t n = p.size();
      p.resize(kBlock, 0);
      const Digest up = BlockHash(p.data());
      p.resize(n);
      PushHash(level + 1, up);
    }
  }
  const Digest digest = Sha256::Hash(&desc, sizeof(desc));
  // Reset for reuse (keeping the buffers' capacity).
  for (std::vector<uint8_t>& p : pending_) p.clear();
  std::fill(level_counts_.begin(), level_counts_.end(), 0);
  size_ = 0;
  tail_added_ = false;
  return digest;
}

std::vector<Digest> LeafHashes(const uint8_t* data, size_t len) {
  std::vector<Digest> out;
  out.reserve((len + kBlock - 1) / kBlock);
  size_t off = 0;
  for (; len - off >= kBlock; off += kBlock) out.push_back(BlockHash(data + off));
  if (off < len) out.push_back(PaddedBlockHash(data + off, len - off));
  return out;
}

Digest FsVerityDigest(const void* data, size_t len) {
  FsVerityHasher h;
  h.Update(data, len);
  return h.Final();
}

}  // namespace cryptex
