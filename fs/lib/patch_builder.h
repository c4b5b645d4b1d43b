// Builds a patch image (cryptex mkpatch): the difference between a lower
// state (a base image, alone or with patches stacked on it, read through a
// View) and a target tree (a directory, or another base image), sealed as a
// kind-patch image (docs/FORMAT.md section 12).
//
// The patch tree holds every changed or added path with all its ancestors
// (directories carry the target's attributes), a whiteout for each removed
// path (one for a removed directory, whatever it held), and opaque
// directories where a directory replaces a non-directory or where replacing
// a directory whole is smaller than merging it. Each shipped regular file
// takes the cheapest form: lower content (a lower file with the same
// fs-verity digest: metadata-only changes, moved and copied files; nothing
// stored), a delta against the lower file at the same path (else one with the
// same name elsewhere) when it is smaller than the compressed data, or the
// data itself.
//
// Reproducible: the same lower state, target, key and options (epoch
// included) give identical bytes.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "builder.h"
#include "delta.h"
#include "keys.h"
#include "manifest.h"
#include "sha256.h"
#include "status.h"
#include "view.h"

namespace cryptex {

// What a patch binds to (manifest tags 17 and 18).
struct LowerIdentity {
  Digest base_root{};                  // root hash of the base image
  std::vector<std::string> patch_ids;  // patches of the lower state, bottom first
  std::string base_name;               // the base's manifest name and version
  std::string base_version;
};

// The identity of the state `lower` serves: its first layer is the base,
// the others its patches in order.
Result<LowerIdentity> LowerIdentityOf(const View& lower);

// The tree a patch brings the lower state to. `tree` holds the metadata of
// every node (SourceNode conventions, builder.h); file bytes come from the
// directory tree.root_path (ScanPatchTarget) or from `view` (a base image:
// PatchTargetFromView, which must outlive this).
struct PatchTarget {
  SourceTree tree;
  const View* view = nullptr;
  std::vector<uint64_t> view_nodes;  // view targets: the node of each tree node
  std::vector<Digest> digests;       // view targets: fs-verity digest per regular file
};

// ScanDirectory(dir), as cryptex build reads a source tree.
Result<PatchTarget> ScanPatchTarget(const std::string& dir);
// Every node of `view` (metadata only; bytes are read when shipped).
Result<PatchTarget> PatchTargetFromView(const View& view);

struct PatchOptions {
  std::string output_path;
  const PrivateKey* key = nullptr;  // required
  // Patch fields: patch_id (required), severity, cves, activation,
  // release_counter, released_at, created_at, description. name and version
  // default to the lower base's; base_root_digest and requires_patches are
  // set from the LowerIdentity (any value given is replaced).
  Manifest manifest;
  // The compact layout (BuildOptions::compact); false writes the classic one.
  bool compact = true;
  int zstd_level = 9;
  uint32_t chunk_log2 = format::kDefaultChunkLog2;
  int threads = 0;  // 0 = hardware concurrency (compression and deltas)
  bool use_deltas = true;
  DeltaOptions delta;  // threads is taken from `threads`
  std::function<void(const BuildProgress&)> progress;
  // Test hook, as BuildOptions::after_source_read: files of a directory
  // target shipped as data are read (again) while the image is written.
  std::function<void(const std::string& path, uint64_t bytes_read)> after_source_read;
  // Test hook: called once every target file's digest has been read and the
  // patch planned, before changed files are read again to be shipped.
  std::function<void()> after_digests;
};

// How one regular file of the patch is shipped.
enum class Shipped { kData, kLowerContent, kDelta };

struct ShippedFile {
  std::string path;  // '/'-separated, relative to the root
  Shipped how = Shipped::kData;
  std::string source;   // kLowerContent, kDelta: the lower file's path
  uint64_t size = 0;    // the target file's size
  uint64_t stored = 0;  // bytes the patch stores for it (data or delta)
};

struct PatchStats {
  uint64_t added = 0;          // paths new in the target (not counting ancestors)
  uint64_t changed = 0;        // paths whose type, content or grouping changed
  uint64_t removed = 0;        // whiteouts
  uint64_t metadata_only = 0;  // changed paths whose content is unchanged
  uint64_t opaque_dirs = 0;
  std::vector<ShippedFile> files;  // sorted by path
  uint64_t stored_file_bytes = 0;  // sum of files[].stored
  BuildStats build;                // of the sealed image (image_size: total patch bytes)
};

// Compares `target` with `lower` and seals the difference into
// opts.output_path. Refuses, writing nothing: an existing output (kExists),
// no key, a manifest the reader would refuse, a patch id already in the
// lower state, a target identical to the lower state (kInvalidArgument,
// "nothing to patch"), and anything over the format limits. A target
// directory file that changes while it is read fails with kIOError naming it.
// Reads every target file once (digests), then each changed file again:
// copied, with its lower file, into unnamed scratch files beside
// opts.output_path (disk space: the largest such pair, or a few small ones;
// nothing is left behind) and mapped, their pages dropped as the delta
// encoder reads on, so resident memory does not grow with the files' size.
// Small changed files are decided on `threads` threads, a few MiB of them
// at a time; the patch does not depend on the threads. Memory besides the
// two trees' metadata: that, the deltas kept, and, for an image target
// only, the files shipped as data.
Result<PatchStats> MakePatch(const View& lower, const LowerIdentity& id, const PatchTarget& target,
                             const PatchOptions& opts);

}  // namespace cryptex
