// cryptex extract IMAGE DIR [--patch P ...]
//
// Safety: DIR must not exist; everything is created under a fresh temporary
// directory next to it through directory file descriptors (openat/mkdirat/
// symlinkat/mknodat with O_NOFOLLOW and O_EXCL), so nothing the image holds
// (symlinks, odd names) can make us write outside it. Names were validated by
// the image reader (no '/', not '.' or '..'). The temporary directory is
// renamed to DIR only when the extraction is complete; on any failure or
// signal it is removed, whatever modes the image gave its directories.
//
// Two passes, like tar's delayed directory attributes: the first creates
// every entry while every directory is still 0700 and ours (so that a 0500
// or 0600 directory of the image neither refuses its own entries nor a hard
// link made through it later); the second applies ownership, xattrs, mode
// and times to the directories, children before parents. Both walk with a
// bounded number of descriptors (DirStack) and cost O(1) system calls per
// entry at any depth, down to format::kMaxDirDepth (a hard link whose first
// name is in none of the last few directories linked to costs one open per
// level of that directory).
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <optional>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "cli.h"
#include "dir_stack.h"
#include "format.h"
#include "fsverity.h"

namespace cryptex::cli {

namespace {

// The first of SIGINT/SIGTERM/SIGHUP received during an extraction, or 0.
// Checked before each entry and each MiB of file content: the extraction
// stops, removes what it made and exits with 128 + the signal.
volatile sig_atomic_t g_signal = 0;
void OnSignal(int sig) {
  if (g_signal == 0) g_signal = sig;
}

Status Interrupted() { return Status::Internal("interrupted by a signal"); }

// `path` for a message: paths longer than this keep their last part only
// (a tree 4096 levels deep has paths of 8 KB and more).
constexpr size_t kShownPathMax = 200;
std::string Shown(const std::string& path) {
  if (path.size() <= kShownPathMax) return path;
  size_t from = path.size() - kShownPathMax;
  const size_t slash = path.find('/', from);
  if (slash != std::string::npos) from = slash + 1;
  return ".../" + path.substr(from);
}

class Extractor {
 public:
  // Extracts into the empty directory `root`, whose identity is `root_id`.
  Extractor(const View& img, Fd root, DirId root_id)
      : img_(img), stack_(std::move(root), root_id), root_(geteuid() == 0) {
    nodes_.push_back({0, "", img.root(), root_id});
  }

  // Pass 1: every entry below the root, with content, links and the
  // attributes of everything but directories. Does not rely on the reader
  // alone against hostile trees: a directory seen twice (a cycle) is refused
  // here too, and so is nesting deeper than format::kMaxDirDepth.
  Status Tree() {
    std::vector<Frame> frames{{0, 0}};
    while (true) {
      if (g_signal != 0) return Interrupted();
      const size_t node = frames.back().node;
      std::optional<DirEntry> e;
      CX_RETURN_IF_ERROR(
          img_.ReadDir(nodes_[node].ino, frames.back().next, [&](const DirEntry& d, uint64_t) {
            e = d;
            return false;
          }));
      if (!e) {  // directory complete
        if (frames.size() == 1) return Status::Ok();
        frames.pop_back();
        CX_RETURN_IF_ERROR(stack_.Pop([&] { return PathOf(node, ""); }).status());
        continue;
      }
      ++frames.back().next;
      CX_ASSIGN_OR_RETURN(InodeInfo in, img_.GetAttr(e->ino));
      if (!in.is_dir()) {
        CX_RETURN_IF_ERROR(Entry(node, e->name, in));
        continue;
      }
      // frames.size() is the depth of the new directory (the root's is 0).
      CX_RETURN_IF_ERROR(EnterDir(node, frames.size(), e->name, in));
      frames.push_back({nodes_.size() - 1, 0});
    }
  }

  // Pass 2: ownership, xattrs, mode and times of every directory, each after
  // everything inside it, the root (shown as `dest`) last.
  Status DirectoryAttributes(const std::string& dest) {
    std::vector<size_t> chain{0};  // nodes from the root to the current one
    auto leave = [&]() -> Status {
      const size_t node = chain.back();
      chain.pop_back();
      auto path = [&] { return PathOf(node, ""); };
      CX_ASSIGN_OR_RETURN(Fd fd, stack_.Pop(path));
      CX_ASSIGN_OR_RETURN(InodeInfo in, img_.GetAttr(nodes_[node].ino));
      return ApplyFd(fd.get(), in, path);
    };
    for (size_t i = 1; i < nodes_.size(); ++i) {
      while (chain.back() != nodes_[i].parent) CX_RETURN_IF_ERROR(leave());
      if (g_signal != 0) return Interrupted();
      Fd fd(OpenDirAt(stack_.fd(), nodes_[i].name));
      if (!fd.ok()) return Status::FromErrno(errno, PathOf(i, ""));
      CX_ASSIGN_OR_RETURN(DirId id, IdOf(fd.get(), nodes_[i].name));
      if (!(id == nodes_[i].id)) {
        return Status::IOError(PathOf(i, "") + ": replaced during the extraction");
      }
      stack_.Push(std::move(fd), id);
      chain.push_back(i);
    }
    while (chain.size() > 1) CX_RETURN_IF_ERROR(leave());
    if (g_signal != 0) return Interrupted();
    CX_ASSIGN_OR_RETURN(InodeInfo in, img_.GetAttr(img_.root()));
    return ApplyFd(stack_.fd(), in, [&] { return dest; });
  }

  const std::vector<std::string>& warnings() const { return warnings_; }

 private:
  // A directory created by pass 1, in creation (pre-)order; node 0 is the root.
  struct DirNode {
    size_t parent;
    std::string name;
    uint64_t ino;  // node id in the view
    DirId id;      // on disk
  };
  // Pass 1's position in directory `node`: the index of its next entry.
  struct Frame {
    size_t node;
    uint64_t next;
  };
  // Where the first name of a hard-linked inode was extracted.
  struct LinkSource {
    size_t node;
    std::string name;
  };

  // "a/b/name" for `name` in directory `node` (the directory itself when
  // `name` is empty; "/" for the root), shortened for messages.
  std::string PathOf(size_t node, const std::string& name) const {
    std::vector<const std::string*> parts;
    if (!name.empty()) parts.push_back(&name);
    for (size_t n = node; n != 0; n = nodes_[n].parent) parts.push_back(&nodes_[n].name);
    if (parts.empty()) return "/";
    std::string path;
    for (auto it = parts.rbegin(); it != parts.rend(); ++it) {
      if (!path.empty()) path += '/';
      path += **it;
    }
    return Shown(path);
  }

  // Creates directory `name` (at `depth`) in directory `parent`, the
  // current one, and enters it.
  Status EnterDir(size_t parent, size_t depth, const std::string& name, const InodeInfo& in) {
    if (depth > format::kMaxDirDepth) {
      return Status::Unsupported(PathOf(parent, name) + ": directory at depth " +
                                 std::to_string(depth) + "; cryptex extracts trees at most " +
                                 std::to_string(format::kMaxDirDepth) + " directories deep");
    }
    if (!dirs_seen_.insert(in.ino).second) {
      return Status::Corruption(PathOf(parent, name) + ": directory reached twice (cycle)");
    }
    if (mkdirat(stack_.fd(), name.c_str(), 0700) != 0) {
      return Status::FromErrno(errno, PathOf(parent, name) + ": cannot create directory");
    }
    Fd fd(OpenDirAt(stack_.fd(), name));
    if (!fd.ok()) return Status::FromErrno(errno, PathOf(parent, name));
    CX_ASSIGN_OR_RETURN(DirId id, IdOf(fd.get(), name));
    nodes_.push_back({parent, name, in.ino, id});
    stack_.Push(std::move(fd), id);
    return Status::Ok();
  }

  // Any entry but a directory, in directory `node` (the current one).
  Status Entry(size_t node, const std::string& name, const InodeInfo& in) {
    const int dir_fd = stack_.fd();
    if (in.nlink > 1) {
      auto it = links_.find(in.ino);
      if (it != links_.end()) return HardLink(it->second, dir_fd, node, name);
      links_[in.ino] = {node, name};
    }
    switch (in.mode & S_IFMT) {
      case S_IFREG: {
        Fd fd(openat(dir_fd, name.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
                     0600));
        if (!fd.ok()) return Status::FromErrno(errno, PathOf(node, name) + ": cannot create");
        CX_RETURN_IF_ERROR(Content(fd.get(), in, node, name));
        return ApplyFd(fd.get(), in, [&] { return PathOf(node, name); });
      }
      case S_IFLNK: {
        CX_ASSIGN_OR_RETURN(std::string target, img_.ReadLink(in.ino));
        if (symlinkat(target.c_str(), dir_fd, name.c_str()) != 0) {
          return Status::FromErrno(errno, PathOf(node, name) + ": cannot create symlink");
        }
        return ApplyAt(dir_fd, name, in, node);
      }
      default: {
        if (mknodat(dir_fd, name.c_str(), (in.mode & S_IFMT) | 0600, in.rdev) != 0) {
          if (!root_ && (errno == EPERM || errno == EACCES)) {
            warnings_.push_back(PathOf(node, name) + ": device node not created (needs root)");
            return Status::Ok();
          }
          return Status::FromErrno(errno, PathOf(node, name) + ": cannot create special file");
        }
        return ApplyAt(dir_fd, name, in, node);
      }
    }
  }

  // Links `name` in dir_fd to the inode's first name.
  Status HardLink(const LinkSource& first, int dir_fd, size_t node, const std::string& name) {
    CX_ASSIGN_OR_RETURN(int dir, LinkDir(first.node));
    if (linkat(dir, first.name.c_str(), dir_fd, name.c_str(), 0) != 0) {
      return Status::FromErrno(errno, PathOf(node, name) + ": cannot create hard link");
    }
    return Status::Ok();
  }

  // A descriptor of directory `node` for HardLink, from a cache of the
  // kLinkDirs directories used last (names linked to one directory cost
  // O(1) each), else opened from the root one level at a time (no path
  // length limit, two descriptors) and checked to be the directory pass 1
  // made.
  static constexpr size_t kLinkDirs = 4;
  Result<int> LinkDir(size_t node) {
    for (size_t i = 0; i < link_dirs_.size(); ++i) {
      if (link_dirs_[i].first == node) {
        std::rotate(link_dirs_.begin(), link_dirs_.begin() + static_cast<ptrdiff_t>(i),
                    link_dirs_.begin() + static_cast<ptrdiff_t>(i) + 1);
        return link_dirs_.front().second.get();
      }
    }
    std::vector<size_t> down;
    for (size_t n = node; n != 0; n = nodes_[n].parent) down.push_back(n);
    Fd dir(fcntl(stack_.root_fd(), F_DUPFD_CLOEXEC, 0));
    for (auto it = down.rbegin(); dir.ok() && it != down.rend(); ++it) {
      dir = Fd(OpenDirAt(dir.get(), nodes_[*it].name));
    }
    if (!dir.ok()) return Status::FromErrno(errno, PathOf(node, "") + ": cannot reopen");
    CX_ASSIGN_OR_RETURN(DirId id, IdOf(dir.get(), PathOf(node, "")));
    if (!(id == nodes_[node].id)) {
      return Status::IOError(PathOf(node, "") + ": replaced during the extraction");
    }
    if (link_dirs_.size() == kLinkDirs) link_dirs_.pop_back();
    link_dirs_.insert(link_dirs_.begin(), {node, std::move(dir)});
    return link_dirs_.front().second.get();
  }

  // Writes the content, keeping holes (all-zero 4 KiB blocks are skipped and
  // ftruncate sets the size), and checks it against the file's fs-verity
  // digest as it goes: what lands on disk is what the vendor signed.
  Status Content(int fd, const InodeInfo& in, size_t node, const std::string& name) {
    buf_.resize(1u << 20);
    FsVerityHasher hasher;
    for (uint64_t off = 0; off < in.size;) {
      if (g_signal != 0) return Interrupted();
      auto n = img_.Read(in.ino, off, buf_);
      if (!n.ok()) return n.status().Prefixed(PathOf(node, name));
      if (*n == 0) return Status::Corruption(PathOf(node, name) + ": short read");
      hasher.Update(buf_.data(), *n);
      size_t w = 0;
      while (w < *n) {
        // Skip a run of zero blocks, then write the following run of data
        // blocks with one pwrite.
        auto zero_block = [&](size_t at) {
          const size_t len = std::min<size_t>(4096, *n - at);
          for (size_t i = 0; i < len; ++i)
            if (buf_[at + i] != 0) return false;
          return true;
        };
        while (w < *n && zero_block(w)) w += std::min<size_t>(4096, *n - w);
        size_t end = w;
        while (end < *n && !zero_block(end)) end += std::min<size_t>(4096, *n - end);
        while (w < end) {
          ssize_t k = pwrite(fd, buf_.data() + w, end - w, static_cast<off_t>(off + w));
          if (k < 0) {
            if (errno == EINTR && g_signal != 0) return Interrupted();
            if (errno == EINTR) continue;
            return Status::FromErrno(errno, PathOf(node, name) + ": write");
          }
          w += static_cast<size_t>(k);
        }
      }
      off += *n;
    }
    if (ftruncate(fd, static_cast<off_t>(in.size)) != 0) {
      return Status::FromErrno(errno, PathOf(node, name) + ": truncate");
    }
    if (hasher.Final() != in.digest) {
      return Status::Corruption(PathOf(node, name) +
                                ": content does not match its signed fs-verity digest");
    }
    return Status::Ok();
  }

  // Ownership first (chown clears setuid bits and capabilities), then
  // xattrs (user.* ones need write permission, which the mode may take
  // away), then mode, then times.
  // `path()` names the entry in messages (built only for one).
  template <class PathFn>
  Status ApplyFd(int fd, const InodeInfo& in, const PathFn& path) {
    if (fchown(fd, in.uid, in.gid) != 0) CX_RETURN_IF_ERROR(OwnerFailed(path));
    CX_ASSIGN_OR_RETURN(auto xs, img_.ListXattrs(in.ino));
    for (const auto& x : xs) {
      if (fsetxattr(fd, x.name.c_str(), x.value.data(), x.value.size(), 0) != 0) {
        CX_RETURN_IF_ERROR(XattrFailed(path, x.name));
      }
    }
    if (fchmod(fd, in.mode & 07777) != 0) return Status::FromErrno(errno, path() + ": chmod");
    struct timespec ts[2] = {{in.mtime_sec, in.mtime_nsec}, {in.mtime_sec, in.mtime_nsec}};
    if (futimens(fd, ts) != 0) return Status::FromErrno(errno, path() + ": set times");
    return Status::Ok();
  }

  // The same for `name` in dir_fd (symlinks and special files), in that order.
  Status ApplyAt(int dir_fd, const std::string& name, const InodeInfo& in, size_t node) {
    auto path = [&] { return PathOf(node, name); };
    if (fchownat(dir_fd, name.c_str(), in.uid, in.gid, AT_SYMLINK_NOFOLLOW) != 0) {
      CX_RETURN_IF_ERROR(OwnerFailed(path));
    }
    CX_ASSIGN_OR_RETURN(auto xs, img_.ListXattrs(in.ino));
    const std::string proc = "/proc/self/fd/" + std::to_string(dir_fd) + "/" + name;
    for (const auto& x : xs) {
      if (lsetxattr(proc.c_str(), x.name.c_str(), x.value.data(), x.value.size(), 0) != 0) {
        CX_RETURN_IF_ERROR(XattrFailed(path, x.name));
      }
    }
    if (!in.is_symlink() &&
        fchmodat(dir_fd, name.c_str(), in.mode & 07777, AT_SYMLINK_NOFOLLOW) != 0) {
      return Status::FromErrno(errno, PathOf(node, name) + ": chmod");
    }
    struct timespec ts[2] = {{in.mtime_sec, in.mtime_nsec}, {in.mtime_sec, in.mtime_nsec}};
    if (utimensat(dir_fd, name.c_str(), ts, AT_SYMLINK_NOFOLLOW) != 0) {
      return Status::FromErrno(errno, PathOf(node, name) + ": set times");
    }
    return Status::Ok();
  }

  template <class PathFn>
  Status OwnerFailed(const PathFn& path) {
    if (root_) return Status::FromErrno(errno, path() + ": chown");
    ++owner_failures_;
    if (owner_failures_ == 1)
      warnings_.push_back("ownership not restored (needs root), e.g. " + path());
    return Status::Ok();
  }

  template <class PathFn>
  Status XattrFailed(const PathFn& path, const std::string& name) {
    const int err = errno;
    if (root_ && err != ENOTSUP) return Status::FromErrno(err, path() + ": setxattr " + name);
    warnings_.push_back(path() + ": xattr " + name + " not restored: " + std::strerror(err));
    return Status::Ok();
  }

  const View& img_;
  DirStack stack_;  // pass 1 and 2: from the root to the current directory
  bool root_;
  std::vector<DirNode> nodes_;
  std::unordered_set<uint64_t> dirs_seen_;
  std::unordered_map<uint64_t, LinkSource> links_;  // by inode
  std::vector<std::pair<size_t, Fd>> link_dirs_;    // most recently used first
  std::vector<std::string> warnings_;
  std::vector<uint8_t> buf_;
  uint64_t owner_failures_ = 0;
};

// The directory DIR is created in ("." for a bare name).
std::string ParentOf(const std::string& dest) {
  const size_t slash = dest.rfind('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return dest.substr(0, slash);
}

// Checks DIR before any work: it does not exist, and its parent is a
// directory this process may create entries in.
Status CheckDestination(const std::string& dest) {
  struct stat st;
  if (lstat(dest.c_str(), &st) == 0) {
    return Status::Exists(dest + ": already exists (refusing to overwrite)");
  }
  if (errno != ENOENT) return Status::FromErrno(errno, dest);
  const std::string parent = ParentOf(dest);
  if (stat(parent.c_str(), &st) != 0) {
    return Status::FromErrno(errno, dest + ": parent directory " + parent);
  }
  if (!S_ISDIR(st.st_mode))
    return Status::NotDirectory(dest + ": " + parent + " is not a directory");
  if (faccessat(AT_FDCWD, parent.c_str(), W_OK | X_OK, AT_EACCESS) != 0) {
    return Status::FromErrno(errno, dest + ": cannot create entries in " + parent);
  }
  return Status::Ok();
}

// Both passes into the fresh directory `tmp`.
Status ExtractInto(const View& img, const std::string& tmp, const std::string& dest,
                   std::vector<std::string>* warnings) {
  Fd root(OpenDirAt(AT_FDCWD, tmp));
  if (!root.ok()) return Status::FromErrno(errno, tmp);
  CX_ASSIGN_OR_RETURN(DirId id, IdOf(root.get(), tmp));
  Extractor x(img, std::move(root), id);
  Status st = x.Tree();
  if (st.ok()) st = x.DirectoryAttributes(dest);
  *warnings = x.warnings();
  return st;
}

const char* SignalName(int sig) {
  switch (sig) {
    case SIGINT:
      return "SIGINT";
    case SIGTERM:
      return "SIGTERM";
    case SIGHUP:
      return "SIGHUP";
    default:
      return "a signal";
  }
}

}  // namespace

int CmdExtract(int argc, char** argv) {
  Args args(argc, argv, {"--trust", "--pubkey", "--patch"}, {});
  if (args.help()) {
    std::printf(
        "usage: cryptex extract IMAGE DIR [--patch PATCH ...]\n"
        "                       [--trust DIR | --pubkey FILE]\n\n"
        "Extracts IMAGE (with --patch, repeatable and bottom first: IMAGE with the\n"
        "patches applied) into DIR, which must not exist. Every byte is verified.\n"
        "As root, restores ownership, modes (incl. setuid/setgid/sticky), xattrs\n"
        "(incl. security.capability), device nodes, hard links and nanosecond\n"
        "mtimes; as another user, restores what it can and lists what it could not.\n"
        "Trees up to %u directories deep. Nothing is left behind on failure or on\n"
        "SIGINT/SIGTERM/SIGHUP (exit status 128 + the signal).\n",
        format::kMaxDirDepth);
    return kExitOk;
  }
  if (!args.ok()) return Usage("extract", args.error());
  const auto& pos = args.positional();
  if (pos.size() != 2) return Usage("extract", "expected IMAGE DIR");
  if (pos[0].empty()) return Usage("extract", "IMAGE is an empty string");
  if (pos[1].empty()) return Usage("extract", "DIR is an empty string");
  std::string dest = pos[1];
  while (dest.size() > 1 && dest.back() == '/') dest.pop_back();
  if (Status st = CheckDestination(dest); !st.ok()) return Fail("extract", st);

  struct sigaction sa {};
  sa.sa_handler = OnSignal;  // no SA_RESTART: a blocked write returns early
  sigemptyset(&sa.sa_mask);
  for (int sig : {SIGINT, SIGTERM, SIGHUP}) sigaction(sig, &sa, nullptr);
  auto interrupted = [](const char* what) {
    std::fprintf(stderr, "cryptex extract: interrupted by %s%s\n", SignalName(g_signal), what);
    return 128 + g_signal;
  };

  auto img = OpenView(pos[0], args.GetAll("--patch"), args);
  if (g_signal != 0) return interrupted("");
  if (!img.ok()) return Fail("extract", img.status());

  std::string tmp = dest + ".tmp-XXXXXX";
  if (mkdtemp(tmp.data()) == nullptr) {
    return Fail("extract", Status::FromErrno(errno, dest + ": cannot create temporary directory"));
  }
  std::vector<std::string> warnings;
  Status st = ExtractInto(**img, tmp, dest, &warnings);
  if (st.ok() && g_signal != 0) st = Interrupted();
  if (st.ok() && renameat2(AT_FDCWD, tmp.c_str(), AT_FDCWD, dest.c_str(), RENAME_NOREPLACE) != 0) {
    st = Status::FromErrno(errno, dest + ": cannot rename into place");
  }
  if (!st.ok()) {
    const Status removed = RemoveTree(tmp);
    const std::string leftover = removed.ok() ? std::string()
                                              : "; could not remove the partial extraction " + tmp +
                                                    ": " + removed.ToString();
    if (g_signal != 0) {
      return interrupted(removed.ok() ? "; the partial extraction was removed" : leftover.c_str());
    }
    const int code = Fail("extract", st);
    if (!removed.ok()) std::fprintf(stderr, "cryptex extract: %s\n", leftover.c_str() + 2);
    return code;
  }
  for (const auto& w : warnings) std::fprintf(stderr, "cryptex extract: warning: %s\n", w.c_str());
  return kExitOk;
}

}  // namespace cryptex::cli
