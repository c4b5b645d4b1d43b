// Seals a directory tree into a signed image (cryptex build).
//
// Two stages: Scan() reads the source tree's metadata into a SourceTree
// (lstat, readlink, xattrs; never follows symlinks), then WriteImage() streams
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
  std::string source_path;     // regular files: where to read content
  std::vector<std::pair<std::string, std::string>> xattrs;  // sorted by name
  std::vector<uint32_t> children;                           // sorted by name (bytes)
  int64_t hardlink_of = -1;  // index of the first node of a hard-link group
};

struct SourceTree {
  std::vector<SourceNode> nodes;
  uint64_t total_file_bytes = 0;
  uint64_t regular_files = 0;
};

// Walks `dir` without following symlinks. Errors name the offending path.
// Paths may be longer than PATH_MAX.
Result<SourceTree> ScanDirectory(const std::string& dir);

// open(path, flags | O_NOFOLLOW | O_CLOEXEC) without the PATH_MAX limit: a
// longer path is opened one directory at a time. -1 with errno on failure.
int OpenSourcePath(const std::string& path, int flags);

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
  std::function<void(const BuildProgress&)> progress;
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
};

Result<BuildStats> WriteImage(const SourceTree& tree, const BuildOptions& opts);

}  // namespace cryptex
