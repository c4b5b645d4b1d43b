// Read side of a sealed image: open (signature + superblock checks), then
// verified access to metadata and file contents. Every byte returned was
// checked against the Merkle tree whose root the signature covers (DESIGN.md
// invariant 1); corrupt bytes give Code::kCorruption naming the region and
// offset, never wrong data.
//
// Thread safety: after Open(), all const methods may be called concurrently
// from any number of threads (caches are internally synchronised).
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "format.h"
#include "keys.h"
#include "manifest.h"
#include "sha256.h"
#include "status.h"
#include "superblock.h"

namespace cryptex {

struct InodeInfo {
  uint64_t ino = 0;
  uint32_t mode = 0;  // st_mode
  uint32_t uid = 0;
  uint32_t gid = 0;
  uint32_t nlink = 0;
  uint64_t size = 0;
  int64_t mtime_sec = 0;
  uint32_t mtime_nsec = 0;
  uint32_t flags = 0;  // format::kInode*
  uint64_t rdev = 0;
  uint64_t payload = 0;
  uint32_t payload_count = 0;
  uint32_t xattr_count = 0;
  uint64_t xattr_index = 0;
  Digest digest{};  // regular files: fs-verity digest
  // Patch images, regular files with kInodeLowerContent or kInodeDelta: the
  // lower file's path (strings region) and, for deltas, the delta's bytes.
  uint64_t source_offset = 0;
  uint32_t source_len = 0;
  uint64_t stored_size = 0;

  bool is_dir() const;
  bool is_reg() const;
  bool is_symlink() const;
  // Regular file whose content is (derived from) a lower-state file.
  bool is_sourced() const {
    return (flags & (format::kInodeLowerContent | format::kInodeDelta)) != 0;
  }
  // Bytes the image itself stores for a regular file: its size, the delta's
  // size, or 0 for lower content.
  uint64_t stored_bytes() const;
  uint64_t blocks512() const;  // st_blocks estimate (allocated = size rounded up)
};

struct DirEntry {
  std::string name;
  uint64_t ino = 0;
  uint8_t type = 0;  // format::EntryType
};

struct Xattr {
  std::string name;
  std::string value;
};

// The node `path` names, walked from `root` with `lookup` (a directory and
// a name to its entry): "/a/b" or "a/b", empty and "." components skipped,
// no symlink followed. kNotFound naming the path if a component is missing
// or a whiteout; other lookup errors as they are. Image::Resolve and
// View::Resolve.
Result<uint64_t> WalkPath(
    std::string_view path, uint64_t root,
    const std::function<Result<DirEntry>(uint64_t, std::string_view)>& lookup);

// Counters, readable at any time (e.g. exported by cryptexfs as xattrs).
struct ImageStats {
  std::atomic<uint64_t> verify_failures{0};  // blocks that failed the tree check
  std::atomic<uint64_t> blocks_verified{0};  // data+metadata blocks hashed
  std::atomic<uint64_t> frame_cache_hits{0};
  std::atomic<uint64_t> frame_cache_misses{0};
  std::atomic<uint64_t> decompress_failures{0};
};

struct ImageOptions {
  // Keys the superblock signature must verify against. Required.
  const TrustStore* trust = nullptr;
  // Upper bound of decompressed frames kept in memory (bytes).
  size_t frame_cache_bytes = 64ull << 20;
  // Upper bound of verified metadata and hash-tree blocks kept in memory.
  size_t block_cache_bytes = 32ull << 20;
};

class Image final {
 public:
  ~Image();
  Image(const Image&) = delete;
  Image& operator=(const Image&) = delete;

  // Opens and checks: file size, superblock magic/version/features, the
  // signature against opts.trust, the tree geometry and the root hash of the
  // top tree level, region bounds, and the manifest. Cost independent of image
  // size.
  static Result<std::unique_ptr<Image>> Open(const std::string& path, const ImageOptions& opts);

  const std::string& path() const;
  const SuperblockInfo& superblock() const;
  const Manifest& manifest() const;
  const KeyId& signer() const;
  uint64_t root_ino() const { return 1; }
  uint64_t inode_count() const;
  ImageStats& stats() const;

  Result<InodeInfo> GetInode(uint64_t ino) const;
  // kNotFound if `name` is not in directory `dir` (binary search).
  Result<DirEntry> Lookup(uint64_t dir, std::string_view name) const;
  // Calls fn(entry, index) for entries index >= start in name order until fn
  // returns false.
  Status ReadDir(uint64_t dir, uint64_t start,
                 const std::function<bool(const DirEntry&, uint64_t index)>& fn) const;
  // Reads up to buf.size() bytes at offset; returns bytes read (0 at EOF).
  // kUnsupported for a sourced inode (its content needs the lower state: a
  // LayerStack reads it).
  Result<size_t> Read(uint64_t ino, uint64_t offset, std::span<uint8_t> buf) const;
  // The bytes this image stores for regular file `ino` (InodeInfo::stored_bytes):
  // for a kInodeDelta inode, the delta; otherwise as Read.
  Result<size_t> ReadStored(uint64_t ino, uint64_t offset, std::span<uint8_t> buf) const;
  // The lower file's path of a sourced inode ('/'-separated, no leading '/').
  Result<std::string> SourcePath(uint64_t ino) const;
  // The frame holding all of a regular file's bytes when they sit in one
  // stored frame (a file of at most one chunk, not a hole), else kNoFrame.
  // Small files are packed into shared frames in inode order, so the files
  // around `ino` with the same frame are the ones decoded together with it.
  static constexpr uint64_t kNoFrame = UINT64_MAX;
  Result<uint64_t> SingleFrameOf(uint64_t ino) const;

  Result<std::string> ReadLink(uint64_t ino) const;
  Result<std::vector<Xattr>> ListXattrs(uint64_t ino) const;
  // kNotFound if absent.
  Result<std::string> GetXattr(uint64_t ino, std::string_view name) const;
  // "/a/b" or "a/b" relative to the root; does not follow symlinks.
  Result<InodeInfo> Resolve(std::string_view path) const;

  // Full check (cryptex verify): every block against the tree, every frame
  // decompresses to its size, every file's content matches its fs-verity
  // digest, every directory is sorted, names valid, references in range, no
  // cycles. Returns the first problem, naming region/file/block.
  // progress(done, total) is called now and then with byte counts.
  Status VerifyAll(const std::function<void(uint64_t, uint64_t)>& progress = {}) const;

 private:
  struct Impl;
  explicit Image(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace cryptex
