#include "verified_blocks.h"

#include <cstring>

#include "output_file.h"

namespace cryptex {

using format::kBlockSize;
using format::kHashSize;

namespace {
constexpr uint64_t kHashesPerBlock = kBlockSize / kHashSize;  // 128
}

VerifiedBlocks::VerifiedBlocks(int fd, std::string what, const SuperblockInfo& sb,
                               size_t hash_cache_bytes, std::atomic<uint64_t>* failures,
                               std::atomic<uint64_t>* verified)
    : fd_(fd),
      what_(std::move(what)),
      sb_(sb),
      geo_(TreeGeometry::For(sb.data_blocks)),
      hash_cache_(std::max<size_t>(hash_cache_bytes, 64 * kBlockSize), 8),
      failures_(failures),
      verified_(verified) {}

std::string VerifiedBlocks::DescribeOffset(uint64_t offset) const {
  const uint64_t header = sb_.compact() ? sizeof(format::DiskHeader) : kBlockSize;
  std::string region = offset < header ? "header" : "padding";
  auto owns = [offset](uint64_t at, uint64_t len) {
    return len != 0 && offset + kBlockSize > at && offset < at + len;
  };
  if (sb_.compact() && owns(sb_.packed_meta_offset, sb_.packed_meta_stored)) {
    region = "packed metadata";
  }
  for (uint32_t r = 0; r < format::kRegionCount; ++r) {
    const auto& reg = sb_.regions[r];
    if (!sb_.packed(r) && owns(reg.offset, reg.length)) {
      region = format::RegionName(r);
      break;
    }
  }
  return "offset " + std::to_string(offset) + " (region " + region + ")";
}

Result<std::shared_ptr<const std::vector<uint8_t>>> VerifiedBlocks::HashBlock(
    size_t level, uint64_t index) const {
  const auto& lv = geo_.levels[level];
  const uint64_t area_block = lv.start + index;
  if (auto hit = hash_cache_.Get(area_block)) return hit;

  auto block = std::make_shared<std::vector<uint8_t>>(kBlockSize);
  const uint64_t off = sb_.hash_offset + area_block * kBlockSize;
  CX_RETURN_IF_ERROR(PReadFull(fd_, block->data(), kBlockSize, off, what_));
  Digest expected;
  if (level + 1 == geo_.levels.size()) {
    expected = sb_.root_hash;
  } else {
    CX_ASSIGN_OR_RETURN(auto parent, HashBlock(level + 1, index / kHashesPerBlock));
    std::memcpy(expected.data(), parent->data() + (index % kHashesPerBlock) * kHashSize, kHashSize);
  }
  if (SaltedBlockHash(sb_.salt, block->data()) != expected) {
    failures_->fetch_add(1, std::memory_order_relaxed);
    return Status::Corruption(what_ + ": hash tree level " + std::to_string(level) + " block " +
                              std::to_string(index) + " at offset " + std::to_string(off) +
                              " (region hash-tree) does not match its parent");
  }
  hash_cache_.Put(area_block, block, kBlockSize + 64);
  return std::shared_ptr<const std::vector<uint8_t>>(std::move(block));
}

Status VerifiedBlocks::CheckRoot() const {
  if (geo_.levels.empty()) {  // one data block: its hash is the root hash
    std::vector<uint8_t> block(kBlockSize);
    return Read(0, 1, block.data());
  }
  auto top = HashBlock(geo_.levels.size() - 1, 0);
  return top.ok() ? Status::Ok() : top.status();
}

Status VerifiedBlocks::Read(uint64_t first, uint64_t count, uint8_t* out) const {
  if (count == 0) return Status::Ok();
  if (first >= sb_.data_blocks || count > sb_.data_blocks - first) {
    return Status::Corruption(what_ + ": read of blocks [" + std::to_string(first) + ", +" +
                              std::to_string(count) + ") past the verified area");
  }
  CX_RETURN_IF_ERROR(PReadFull(fd_, out, count * kBlockSize, first * kBlockSize, what_));
  std::shared_ptr<const std::vector<uint8_t>> leaf;
  uint64_t leaf_index = UINT64_MAX;
  for (uint64_t i = 0; i < count; ++i) {
    const uint64_t b = first + i;
    Digest got = SaltedBlockHash(sb_.salt, out + i * kBlockSize);
    const uint8_t* want;
    if (geo_.levels.empty()) {  // one data block: its hash is the root hash
      want = sb_.root_hash.data();
    } else {
      if (b / kHashesPerBlock != leaf_index) {
        leaf_index = b / kHashesPerBlock;
        CX_ASSIGN_OR_RETURN(leaf, HashBlock(0, leaf_index));
      }
      want = leaf->data() + (b % kHashesPerBlock) * kHashSize;
    }
    if (std::memcmp(got.data(), want, kHashSize) != 0) {
      failures_->fetch_add(1, std::memory_order_relaxed);
      return Status::Corruption(what_ + ": block " + std::to_string(b) + " at " +
                                DescribeOffset(b * kBlockSize) + " does not match the hash tree");
    }
  }
  verified_->fetch_add(count, std::memory_order_relaxed);
  return Status::Ok();
}

}  // namespace cryptex
