// What differs between two trees read through View (two base images, or a
// stack before and after a patch): `cryptex diff`.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "image.h"
#include "status.h"
#include "view.h"

namespace cryptex {

// What changed on a path present in both trees (bits of TreeChange::what).
enum TreeChangeBit : uint32_t {
  kChangeType = 1u << 0,     // file type (e.g. regular file -> directory); alone
  kChangeContent = 1u << 1,  // regular files: fs-verity digest (hence bytes or size)
  kChangeMode = 1u << 2,     // permission bits (mode & 07777)
  kChangeOwner = 1u << 3,    // uid or gid
  kChangeXattrs = 1u << 4,   // names added, removed, or values changed
  kChangeMtime = 1u << 5,    // seconds or nanoseconds
  kChangeTarget = 1u << 6,   // symlinks: target
  kChangeRdev = 1u << 7,     // character and block devices: device number
  kChangeLinks = 1u << 8,    // non-directories: the set of paths sharing the node
};

struct TreeChange {
  enum class Kind { kAdded, kRemoved, kChanged };
  Kind kind = Kind::kChanged;
  // "/" for the root, else "/a/b": the names joined, bytes as they are.
  std::string path;
  // TreeChangeBit bits; kChanged only (nonzero there).
  uint32_t what = 0;
  // Attributes in the old tree (kRemoved, kChanged) and in the new one
  // (kAdded, kChanged); ino is the node id in that view.
  InodeInfo old_info, new_info;
  // kChangeXattrs: names (sorted, bytes) only in the new tree, only in the
  // old one, and in both with different values.
  std::vector<std::string> xattrs_added, xattrs_removed, xattrs_changed;
  // kChangeTarget: the symlink targets.
  std::string old_target, new_target;
  // kChangeLinks: the paths (sorted as `path`s are) naming the node in each
  // tree, `path` itself included.
  std::vector<std::string> old_links, new_links;
};

// Compares `old_view` with `new_view` and returns every difference, in tree
// order: a directory before what it holds, the entries of a directory by
// name (bytes, memcmp), so paths sort component by component. An added or
// removed directory is listed with everything below it (each path once).
// A path whose file type differs is kChanged with kChangeType alone, and
// the old directory's entries (if it was one) are listed removed and the
// new one's added. Hard links: a non-directory whose set of names differs
// between the trees (a group split, joined, grown or shrunk) is kChanged
// with kChangeLinks, on every path of the group present in both trees.
// Cost: every directory and inode of both trees is read once (metadata
// only, plus symlink targets and xattrs of paths in both trees; file
// contents are compared by their signed digests, never read); memory is
// the changes, the names of nodes with more than one link, and the entries
// of the directories on the current path. Errors of either view are
// returned as they are (they name the image and path).
Result<std::vector<TreeChange>> DiffTrees(const View& old_view, const View& new_view);

// "file", "dir", "symlink", "char", "block", "fifo", "socket" ("unknown"
// otherwise) for the type bits of `mode`.
const char* FileTypeName(uint32_t mode);

}  // namespace cryptex
