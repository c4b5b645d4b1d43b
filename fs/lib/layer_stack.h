// The layer stack behind OpenStack (view.h): a base image with patches on it.
//
// Design (the overlay rules of docs/FORMAT.md §12 live here and only here):
//  * Open merges, once, every directory some patch carries: layer by layer,
//    bottom up, each patch directory's entries are laid over the merged
//    entries below (same name replaced, whiteout removes, opaque starts
//    empty). The result is one sorted vector per merged directory, found by
//    node id in a hash map, so Lookup is a hash probe and a binary search and
//    ReadDir an index, whatever the number of layers. A directory no patch
//    carries is the base's, served by the base image directly (its whole
//    subtree is the base's: a patch carries every ancestor of what it
//    changes). Memory: the entries of the directories the patches carry.
//  * Node ids (view.h): a directory carried by several layers keeps the
//    lowest layer's id, attributes of the topmost layer carrying it, size =
//    merged entry count, nlink = 2 + merged subdirectories. An opaque
//    directory (other than the root) replaces the lower one: it gets the
//    patch's id, like anything else a patch replaces. Patch directories are
//    only served under their merged id; the raw id of a patch directory or
//    a whiteout is kNotFound.
//  * Sourced files (lower content, delta) resolve at open: before patch k is
//    laid on, each of its sourced files' lower path is resolved in the state
//    of layers 0..k-1 (metadata only: a few lookups per file). The lower
//    node must be a regular file; for lower content its digest and size must
//    equal the patch inode's, else OpenStack fails with kCorruption naming
//    the patch, the path and both digests. A stack that opens therefore has
//    every source bound; bytes are checked on read (below).
//  * Delta files are PatchedFile objects (patched_file.h), one per node,
//    created at open and loaded on first read: that read decodes the file
//    once to build its fs-verity leaves (checked against the signed digest)
//    and keeps them, with the delta's bytes, for the view's lifetime (per
//    node, not a bounded cache: patches are small). Reads then decode only
//    the delta segments they overlap, check every block against its leaf,
//    and keep the verified segments in one stack-wide LRU cache bounded by
//    ImageOptions::frame_cache_bytes (so a delta over a delta decodes and
//    verifies each lower segment once, not once per small lower read).
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "patched_file.h"
#include "view.h"

namespace cryptex {

// Options of a stack beyond ImageOptions.
struct StackOptions {
  // Persisted fs-verity leaves (a store keeps them: store/trees.h). Called
  // at open for each delta file, with its layer (1 = the first patch) and
  // inode in that patch image; returns the bytes VerityLeaves::Serialize
  // made, or nullopt to build them on first read. The bytes are untrusted:
  // they are accepted only if they hash up to the file's signed digest
  // (VerityLeaves::Parse), else OpenStack fails with kCorruption naming the
  // patch and the file. Called during OpenStack only.
  std::function<std::optional<std::vector<uint8_t>>(uint32_t layer, uint64_t ino)> persisted_leaves;
};

// OpenStack (view.h) with `stack_opts`.
Result<std::unique_ptr<View>> OpenStack(const std::string& base,
                                        const std::vector<std::string>& patches,
                                        const ImageOptions& opts, StackOptions stack_opts);

// The checked fs-verity leaves of delta file `node` of a view made by
// OpenStack, built with one pass over the decoded file if they were not
// yet (a store persists them at install). kNotFound if `node` is not a
// delta file of a stack.
Result<std::shared_ptr<const VerityLeaves>> DeltaLeavesOf(const View& view, uint64_t node);

// The delta-file counters of a view made by OpenStack with at least one
// patch; nullptr for any other view (e.g. an ImageView).
const PatchedFileStats* DeltaStatsOf(const View& view);

}  // namespace cryptex
