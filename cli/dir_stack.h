// Walking and removing directory trees of any depth through directory file
// descriptors, with a bounded number of descriptors: what `cryptex extract`
// needs to create a tree (and to remove it again after a failure) without a
// path length limit, without following symlinks, and without running out of
// descriptors (EMFILE) however deep the tree is.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <functional>
#include <string>
#include <vector>

#include "status.h"

namespace cryptex::cli {

// An owned file descriptor (-1: none). Movable, not copyable.
class Fd final {
 public:
  explicit Fd(int fd = -1) : fd_(fd) {}
  ~Fd() { Close(); }
  Fd(Fd&& o) noexcept : fd_(o.fd_) { o.fd_ = -1; }
  Fd& operator=(Fd&& o) noexcept;
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;

  int get() const { return fd_; }
  bool ok() const { return fd_ >= 0; }
  // Closes the descriptor (keeping errno).
  void Close();

 private:
  int fd_;
};

// Identity of a directory: device and inode number.
struct DirId {
  dev_t dev = 0;
  ino_t ino = 0;
  bool operator==(const DirId&) const = default;
};
// fstat(fd)'s identity; `what` names fd in the error.
Result<DirId> IdOf(int fd, const std::string& what);

// openat(dir_fd, name) as a directory, never following a symlink; -1 and
// errno on failure.
int OpenDirAt(int dir_fd, const std::string& name);

// The chain of directories from a root to the current directory, as a walk
// descends and climbs. Only the root and the innermost kFdBudget directories
// hold descriptors, so a walk of any depth uses at most kFdBudget + 1 (plus
// one transiently in Pop). Climbing back to a directory whose descriptor was
// released reopens it as ".." of its child and checks that it is the very
// directory (device and inode) that was entered, so a directory renamed
// meanwhile can never make the walk continue outside the tree.
//
// Cost: O(1) system calls per Push and Pop; memory O(depth).
class DirStack final {
 public:
  static constexpr size_t kFdBudget = 16;

  // REQUIRES: root is an open directory with identity `id`.
  DirStack(Fd root, DirId id);

  // Number of directories entered below the root (0 at the root).
  size_t depth() const { return levels_.size() - 1; }
  // Descriptor of the current directory.
  int fd() const { return levels_.back().fd.get(); }
  // Descriptor of the root (open as long as the stack lives).
  int root_fd() const { return levels_.front().fd.get(); }

  // Enters `child`, an open directory (owned from now on) of identity `id`
  // inside the current directory.
  void Push(Fd child, DirId id);

  // Leaves the current directory for its parent and hands back the left
  // directory's descriptor (for work that must follow the climb, e.g.
  // taking away permissions the climb needs). `what()` names the current
  // directory in errors (built only for one). REQUIRES: depth() > 0.
  Result<Fd> Pop(const std::function<std::string()>& what);

 private:
  struct Level {
    Fd fd;  // -1 once released (only between the root and the budget)
    DirId id;
  };
  std::vector<Level> levels_;
  size_t first_open_ = 1;  // levels_[first_open_ ..] hold descriptors (and [0])
};

// Removes the directory `path` and everything below it, at any depth and
// with a bounded number of descriptors, never following a symlink. Removes
// what an extraction makes even when the image's modes took away the
// owner's permissions (0555, 0000 directories): a directory's owner gets
// read, write and search permission back on the way down. Keeps going past
// what it cannot remove and returns the first failure (Ok when `path` is
// gone).
Status RemoveTree(const std::string& path);

}  // namespace cryptex::cli
