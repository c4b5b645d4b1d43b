// Seals a directory tree into a signed image (cryptex build).
//
// Two stages: ScanDirectory() reads the source tree's metadata into a
// SourceTree (lstat, readlink, xattrs; follows no symlink below the root),
// then WriteImage() streams
// file contents into zstd frames (parallel compression, deduplicated, holes
// detected), lays out the metadata tables, builds the dm-verity tree and signs
// the superblock. Output goes to a temporary file next to the destination and
// is renamed into place only when complete; the destination is never
// overwritten.
//
// Reproducible: the same tree, key, options and epoch give identical bytes.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "keys.h"
#include "manifest.h"
#include "sha256.h"
#include "status.h"

namespace cryptex {

// One node of a tree to seal. Index 0 is the root directory.
struct SourceNode {
  std::string name;  // empty for the root
  uint32_t parent = 0;
  uint32_t mode = 0;  // st_mode
  uint32_t uid = 0;
  uint32_t gid = 0;
  uint64_t size = 0;
  int64_t mtime_sec = 0;
  uint32_t mtime_nsec = 0;
  uint64_t rdev = 0;
  uint32_t flags = 0;          // format::kInode* (whiteout/opaque, for patches)
  std::string symlink_target;  // symlinks
  uint64_t dev = 0, ino = 0;   // of the source file, to notice replacement
  int64_t ctime_sec = 0;       // regular files: source st_ctim at the scan
  uint32_t ctime_nsec = 0;
  std::vector<std::pair<std::string, std::string>> xattrs;  // sorted by name
  std::vector<uint32_t> children;                           // sorted by name (bytes)
  int64_t hardlink_of = -1;  // index of the first node of a hard-link group
  // Patch images (the patch builder sets these; ScanDirectory never does):
  //  * flags kInodeLowerContent: the content is the lower file at
  //    source_path; content_digest is its fs-verity digest; nothing stored.
  //  * flags kInodeDelta: `content` holds the delta against the lower file
  //    at source_path; content_digest is the target's digest, `size` its size.
  //  * otherwise, `content` (when set) holds the file's bytes (size bytes),
  //    read instead of the source file.
  std::string source_path;  // '/'-separated, relative to the root
  Digest content_digest{};
  std::shared_ptr<const std::string> content;

  bool is_sourced() const;
};

// Nodes are numbered in the order the scan meets them: a directory's children
// are contiguous, and directories are scanned depth first (parent < child).
struct SourceTree {
  std::string root_path;  // the directory given to ScanDirectory
  std::vector<SourceNode> nodes;
  uint64_t total_file_bytes = 0;
  uint64_t regular_files = 0;
  // Path components the scan handed to the kernel to resolve (each *at()
  // call on a name counts 1; a path counts its components). For tests: it
  // grows linearly with the tree, also for trees deeper than PATH_MAX.
  uint64_t components_resolved = 0;

  // root_path/.../name of node `i`, for messages (linear in its depth).
  std::string PathOf(uint32_t i) const;
};

// Walks `dir` (following it if it is a symlink, like `ls DIR/`) without
// following any symlink below it. Errors name the offending path. Paths may
// be longer than PATH_MAX; the walk holds at most two descriptors and costs
// time linear in the number of entries, whatever the depth. Refuses, before
// anything is written, what no reader would accept: directories nested
// deeper than format::kMaxDirDepth (the root is depth 0), and names, symlink
// targets and xattrs over the format limits (CheckSourceNode).
Result<SourceTree> ScanDirectory(const std::string& dir);

// The format limits (format.h) a node must meet to be written: name,
// symlink target, xattr name/value lengths and per-inode totals.
// kInvalidArgument naming the limit otherwise (the caller adds the path).
Status CheckSourceNode(const SourceNode& n, bool is_root);

// Visits the directories of `tree` depth first, each once, in the order
// ScanDirectory numbered them: calls visit(dir, fd) with an O_DIRECTORY
// descriptor of node `dir` (valid only during the call), then descends into
// dir's subdirectories in order. visit may append to tree.nodes (the scan
// does); nodes are re-read after each call. Descends with openat(name) and
// climbs with openat(".."), checking device and inode against the tree, so
// a replaced or moved directory fails with kIOError naming it. Refuses a
// directory deeper than format::kMaxDirDepth. *resolved counts the path
// components opened.
Status WalkSourceDirs(const SourceTree& tree, const std::function<Status(uint32_t, int)>& visit,
                      uint64_t* resolved);

struct BuildProgress {
  uint64_t files_done = 0;
  uint64_t files_total = 0;
  uint64_t bytes_done = 0;
  uint64_t bytes_total = 0;
};

struct BuildOptions {
  std::string output_path;
  const PrivateKey* key = nullptr;  // required
  Manifest manifest;                // name, version, release counter, created_at, ...
  uint32_t kind = 1;                // format::kKindBase
  int zstd_level = 9;
  uint32_t chunk_log2 = 17;
  int threads = 0;  // 0 = hardware concurrency
  // Write the compact layout (docs/FORMAT.md section 13: 64-byte header,
  // packed zstd metadata, 640-byte trailer) when the tables fit its limit
  // (format::kMaxPackedMetaBytes), else the classic one. mkpatch sets it: a
  // patch is small, so its fixed framing and tables are most of its bytes.
  bool compact = false;
  std::function<void(const BuildProgress&)> progress;
  // Test hook: called on the reading thread each time part of a source file
  // has been read (one chunk, or a whole small file), with the file's path
  // and the bytes read so far, before its next read. Tests use it to change
  // a file while it is being read.
  std::function<void(const std::string& path, uint64_t bytes_read)> after_source_read;
};

struct BuildStats {
  uint64_t files = 0;
  uint64_t directories = 0;
  uint64_t symlinks = 0;
  uint64_t other = 0;
  uint64_t content_bytes = 0;  // regular file bytes in
  uint64_t stored_bytes = 0;   // data region bytes out
  uint64_t frames = 0;
  uint64_t dedup_hits = 0;  // chunks or small files stored once for several uses
  uint64_t hole_chunks = 0;
  uint64_t image_size = 0;
  Digest root_hash{};
  uint64_t components_resolved = 0;  // as SourceTree::components_resolved, for the reads
};

// Checks the whole tree and the manifest against every limit a reader
// enforces, then seals it. Nothing is created when a check fails. A source
// file that differs from the scan (replaced, other size or mtime), or that
// changes while it is read (size, mtime or ctime; like tar's "file changed
// as we read it"), or whose content is not the size stat reports (procfs,
// sysfs) fails the build with kIOError naming it.
Result<BuildStats> WriteImage(const SourceTree& tree, const BuildOptions& opts);

}  // namespace cryptex
