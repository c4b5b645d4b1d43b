// Image surgery for hardening tests: take a valid image apart, rewrite its
// metadata, and RE-SEAL it (recompute the dm-verity tree and the superblock
// signature with a test key), so that an attack gets past the signature and
// reaches the parsers behind the tree. Test-only code: nothing in the product
// links it.
//
// Nothing here validates what it writes: producing malformed images is the
// point. Functions fail only when the input is too broken to take apart.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "format.h"
#include "keys.h"
#include "status.h"
#include "superblock.h"

namespace cryptex::surgery {

using Bytes = std::vector<uint8_t>;
using SuperblockBytes = std::array<uint8_t, sizeof(format::DiskSuperblock)>;

// A freshly generated signing key saved as DIR/test.key and DIR/test.key.pub;
// `trust_dir` (== DIR) is a trust store holding exactly its public key.
struct TestKey {
  PrivateKey key;
  std::string trust_dir;
};
Result<TestKey> MakeTestKey(const std::string& dir);

Result<Bytes> ReadAll(const std::string& path);
Status WriteAll(const std::string& path, std::span<const uint8_t> bytes);

// The 512 signed bytes at the start of the image's last block.
SuperblockBytes SuperblockOf(std::span<const uint8_t> image);

// Decodes the superblock of `image` (no signature check).
Result<SuperblockInfo> Peek(std::span<const uint8_t> image);

// Re-signs the last block of `image` over its first 512 bytes as they are,
// writing a fresh signature block (key id of `key`) and zeroing the rest; or,
// when the superblock magic is not there but starts the last 640 bytes (the
// compact layout's trailer), that trailer likewise.
// REQUIRES: image->size() >= 4096.
Status SignLastBlock(Bytes* image, const PrivateKey& key);

// A complete image from `data_area` (file bytes [0, end); zero-padded to a
// whole number of blocks, at least 2) and `sb`, whose geometry fields
// (image_size, data_blocks, hash_offset, hash_blocks, tree_levels, root_hash)
// are recomputed: the dm-verity tree over the data area with sb's salt,
// then the signature. Every other superblock byte is kept as given.
Result<Bytes> SealRaw(Bytes data_area, const SuperblockBytes& sb, const PrivateKey& key);

// An image's metadata regions decoded into editable tables.
struct Tables {
  Bytes manifest;
  std::vector<format::DiskInode> inodes;  // inode n is inodes[n - 1]
  std::vector<format::DiskDirent> dirents;
  std::vector<format::DiskExtent> extents;
  std::vector<format::DiskXattr> xattrs;
  Bytes strings;
  std::vector<format::DiskFrame> frames;

  // Appends s to the strings table; returns its offset.
  uint64_t AddString(std::string_view s);
  std::string Name(const format::DiskDirent& d) const;
  format::DiskInode& Inode(uint64_t ino) { return inodes.at(ino - 1); }
  // Index into `dirents` of the entry for "a/b/c" (no leading slash).
  std::optional<size_t> FindDirent(std::string_view path) const;
  // Inode number of "a/b/c" ("" is the root).
  std::optional<uint32_t> FindInode(std::string_view path) const;
};
Result<Tables> ReadTables(std::span<const uint8_t> image);

// Lays the tables out as new regions right after the data region (the
// header block and the data region are kept byte for byte, the old metadata
// is dropped), points the superblock at them, lets `edit` change superblock
// fields, and re-seals. Frames keep their offsets.
Result<Bytes> Rebuild(std::span<const uint8_t> image, const Tables& t, const PrivateKey& key,
                      const std::function<void(SuperblockInfo*)>& edit = {});

// Re-signs `image` after `edit` changed fields of its decoded superblock
// WITHOUT recomputing the tree or any geometry (for geometry attacks).
Result<Bytes> ResignSuperblock(std::span<const uint8_t> image, const PrivateKey& key,
                               const std::function<void(SuperblockInfo*)>& edit);

}  // namespace cryptex::surgery
