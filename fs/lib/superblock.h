// Decoded, validated superblock and signature block.
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "format.h"
#include "keys.h"
#include "merkle.h"
#include "status.h"

namespace cryptex {

struct RegionInfo {
  uint64_t offset = 0;
  uint64_t length = 0;
};

struct SuperblockInfo {
  uint32_t format_version = 0;
  uint64_t compat = 0;
  uint64_t incompat = 0;
  uint32_t kind = 0;
  uint32_t chunk_log2 = 0;
  uint64_t image_size = 0;
  uint64_t data_blocks = 0;
  uint64_t hash_offset = 0;
  uint64_t hash_blocks = 0;
  uint32_t tree_levels = 0;
  std::array<uint8_t, 32> salt{};
  Digest root_hash{};
  RegionInfo regions[format::kRegionCount];
  uint64_t created_at = 0;
  // Compact layout only: the packed metadata (format.h, kIncompatCompact).
  uint64_t packed_meta_offset = 0;
  uint64_t packed_meta_stored = 0;
  uint64_t packed_meta_raw = 0;
  // Signature block.
  KeyId key_id{};
  Ed25519Sig sig{};

  TreeGeometry geometry() const { return TreeGeometry::For(data_blocks); }
  bool compact() const { return (incompat & format::kIncompatCompact) != 0; }
  // Compact layout: the packed tables are stored by columns.
  bool columns() const { return (incompat & format::kIncompatColumns) != 0; }
  // Whether region r's offset is into the packed metadata's decompressed
  // bytes (compact layout: every table region) rather than into the file.
  bool packed(uint32_t r) const {
    return compact() && r != format::kRegionManifest && r != format::kRegionData;
  }
  // Where the superblock lies in the file.
  uint64_t superblock_offset() const {
    return image_size - (compact() ? format::kTrailerSize : format::kBlockSize);
  }
  uint64_t chunk_size() const { return 1ull << chunk_log2; }
  const char* kind_name() const;
  // The exact veritysetup command line that checks this image's tree, for
  // /bin/sh: the path is quoted by `quote` (default ShellQuote), so any path
  // (quotes, spaces, newlines) is passed through as one argument.
  std::string VeritysetupCommand(const std::string& image_path,
                                 std::string (*quote)(std::string_view) = nullptr) const;
};

// `arg` in POSIX sh single quotes ('it'\''s'): one word, byte for byte.
std::string ShellQuote(std::string_view arg);

// `tail` is the last 4096 bytes of a file. Returns its superblock and
// signature block (kTrailerSize bytes): the start of `tail` if a superblock
// begins there (classic layout), else its last 640 bytes if one begins there
// (compact layout), else an empty span (not an image).
std::span<const uint8_t> TrailerOf(std::span<const uint8_t> tail);

// Decodes and validates the superblock in `tail` (the last 4096 bytes of an
// image) against the actual file size. Does not check the signature (see
// VerifySuperblockSignature). `what` names the file in errors.
Result<SuperblockInfo> DecodeSuperblock(std::span<const uint8_t> tail, uint64_t file_size,
                                        const std::string& what);

// Checks the signature block of the trailer in `tail` (as DecodeSuperblock;
// with no superblock magic anywhere, the classic place) over the
// superblock's 512 bytes against the trust store. kSignature with the key id
// when unknown or wrong.
Status VerifySuperblockSignature(std::span<const uint8_t> tail, const TrustStore& trust,
                                 const std::string& what);

// Encodes a superblock (the signed 512 bytes) from info.
std::array<uint8_t, sizeof(format::DiskSuperblock)> EncodeSuperblock(const SuperblockInfo& info);

}  // namespace cryptex
