// ScanDirectory and WalkSourceDirs: the source-tree walk of `cryptex build`.
#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <functional>
#include <map>
#include <memory>

#include "builder.h"
#include "format.h"

namespace cryptex {

namespace {

// An owned file descriptor.
class Fd {
 public:
  explicit Fd(int fd = -1) : fd_(fd) {}
  ~Fd() { Reset(); }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }
  int Release() {
    const int fd = fd_;
    fd_ = -1;
    return fd;
  }
  void Reset(int fd = -1) {
    if (fd_ >= 0) close(fd_);
    fd_ = fd;
  }

 private:
  int fd_;
};

struct DirCloser {
  void operator()(DIR* d) const { closedir(d); }
};

// The path of an entry, built only when a message needs it (building it
// for every entry would cost time quadratic in the depth).
using PathFn = std::function<std::string()>;

// Number of components in `path` (what the kernel resolves for it).
uint64_t Components(const std::string& path) {
  uint64_t n = 0;
  for (size_t i = 0; i < path.size(); ++i) {
    if (path[i] != '/' && (i == 0 || path[i - 1] == '/')) ++n;
  }
  return n;
}

// A path naming `name` in the open directory `dfd` for the system calls that
// have no *at() form (the xattr calls): /proc/self/fd/N/name resolves in
// constant time whatever the depth. `path` where /proc is not mounted.
std::string IoPath(int dfd, const std::string& name, const PathFn& path) {
  static const bool have_proc = access("/proc/self/fd", X_OK) == 0;
  if (!have_proc) return path();
  return "/proc/self/fd/" + std::to_string(dfd) + "/" + name;
}

// Reads the xattrs of `io` (a path, not followed), or of `fd` when io is
// empty, into node->xattrs, sorted. `path` names the file in messages.
Status ReadXattrs(int fd, const std::string& io, const PathFn& path, SourceNode* node) {
  auto list = [&](char* buf, size_t size) {
    return io.empty() ? flistxattr(fd, buf, size) : llistxattr(io.c_str(), buf, size);
  };
  auto get = [&](const char* name, char* buf, size_t size) {
    return io.empty() ? fgetxattr(fd, name, buf, size) : lgetxattr(io.c_str(), name, buf, size);
  };
  std::vector<char> names(4096);
  ssize_t n;
  for (;;) {
    n = list(names.data(), names.size());
    if (n >= 0) break;
    if (errno == ENOTSUP) return Status::Ok();
    if (errno != ERANGE) return Status::FromErrno(errno, path() + ": listxattr");
    names.resize(names.size() * 4);
    if (names.size() > (1u << 24)) return Status::IOError(path() + ": xattr list too large");
  }
  std::vector<char> value(4096);
  for (ssize_t off = 0; off < n;) {
    std::string name(names.data() + off);
    off += static_cast<ssize_t>(name.size()) + 1;
    if (name.empty()) continue;
    ssize_t vn;
    for (;;) {
      vn = get(name.c_str(), value.data(), value.size());
      if (vn >= 0) break;
      if (errno == ENODATA) break;
      if (errno != ERANGE) return Status::FromErrno(errno, path() + ": getxattr " + name);
      value.resize(value.size() * 4);
      if (value.size() > 4 * format::kMaxXattrValueLen) {
        return Status::BadSource(path() + ": xattr " + name + " is larger than " +
                                 std::to_string(format::kMaxXattrValueLen) +
                                 " bytes, the format limit");
      }
    }
    if (vn < 0) continue;
    node->xattrs.emplace_back(name, std::string(value.data(), static_cast<size_t>(vn)));
  }
  std::sort(node->xattrs.begin(), node->xattrs.end());
  return Status::Ok();
}

// Message text for a path that may be thousands of bytes long.
std::string Shorten(const std::string& path) {
  constexpr size_t kKeep = 120;  // of each end
  if (path.size() <= 2 * kKeep + 32) return path;
  return path.substr(0, kKeep) + "/.../" + path.substr(path.size() - kKeep) + " (a path of " +
         std::to_string(path.size()) + " bytes)";
}

// Fills the metadata of `n` from `s`; `dfd`/`name` locate it for readlink
// and the xattr calls (`fd` instead for the root).
Status Fill(SourceNode& n, const struct stat& s, int dfd, const std::string& name, int fd,
            const PathFn& path, uint64_t* resolved) {
  n.mode = s.st_mode;
  n.uid = s.st_uid;
  n.gid = s.st_gid;
  n.mtime_sec = s.st_mtim.tv_sec;
  n.mtime_nsec = static_cast<uint32_t>(s.st_mtim.tv_nsec);
  n.dev = s.st_dev;
  n.ino = s.st_ino;
  if (S_ISCHR(s.st_mode) || S_ISBLK(s.st_mode)) n.rdev = s.st_rdev;
  if (S_ISREG(s.st_mode)) {
    n.size = static_cast<uint64_t>(s.st_size);
    n.ctime_sec = s.st_ctim.tv_sec;
    n.ctime_nsec = static_cast<uint32_t>(s.st_ctim.tv_nsec);
  } else if (S_ISLNK(s.st_mode)) {
    std::vector<char> buf(format::kMaxSymlinkLen + 2);
    ++*resolved;
    const ssize_t len = readlinkat(dfd, name.c_str(), buf.data(), buf.size());
    if (len < 0) return Status::FromErrno(errno, path() + ": readlink");
    n.symlink_target.assign(buf.data(), static_cast<size_t>(len));
    n.size = n.symlink_target.size();
  }
  const std::string io = fd >= 0 ? std::string() : IoPath(dfd, name, path);
  *resolved += Components(io);
  return ReadXattrs(fd, io, path, &n);
}

// Reads the entries of directory node `di` (open as `dfd`) into the tree.
Status ScanEntries(SourceTree& tree, uint32_t di, int dfd,
                   std::map<std::pair<dev_t, ino_t>, uint32_t>& links) {
  const int dup_fd = fcntl(dfd, F_DUPFD_CLOEXEC, 0);
  std::unique_ptr<DIR, DirCloser> d(dup_fd < 0 ? nullptr : fdopendir(dup_fd));
  if (!d) {
    const int err = errno;
    if (dup_fd >= 0) close(dup_fd);
    return Status::FromErrno(err, Shorten(tree.PathOf(di)) + ": cannot read directory");
  }
  std::vector<std::string> names;
  errno = 0;
  while (struct dirent* e = readdir(d.get())) {
    std::string name = e->d_name;
    if (name == "." || name == "..") continue;
    names.push_back(std::move(name));
  }
  if (errno != 0) return Status::FromErrno(errno, Shorten(tree.PathOf(di)) + ": readdir");
  std::sort(names.begin(), names.end());
  for (auto& name : names) {
    const PathFn path = [&] { return Shorten(tree.PathOf(di) + "/" + name); };
    struct stat cst;
    ++tree.components_resolved;
    if (fstatat(dfd, name.c_str(), &cst, AT_SYMLINK_NOFOLLOW) != 0) {
      return Status::FromErrno(errno, path());
    }
    const auto idx = static_cast<uint32_t>(tree.nodes.size());
    if (idx >= 0xFFFFFFF0u) return Status::BadSource(tree.root_path + ": too many entries");
    SourceNode n;
    n.name = name;
    n.parent = di;
    if (!S_ISDIR(cst.st_mode) && cst.st_nlink > 1) {
      auto [it, inserted] = links.try_emplace({cst.st_dev, cst.st_ino}, idx);
      if (!inserted) n.hardlink_of = it->second;
    }
    if (n.hardlink_of < 0) {
      CX_RETURN_IF_ERROR(Fill(n, cst, dfd, name, -1, path, &tree.components_resolved));
      if (Status st = CheckSourceNode(n, false); !st.ok()) return st.Prefixed(path());
      if (S_ISREG(cst.st_mode)) {
        // Fail early (with the path) on files we cannot read.
        ++tree.components_resolved;
        if (faccessat(dfd, name.c_str(), R_OK, 0) != 0) {
          return Status::FromErrno(errno, path() + ": cannot read");
        }
        tree.total_file_bytes += n.size;
        ++tree.regular_files;
      }
    } else {
      n.mode = cst.st_mode;
    }
    tree.nodes.push_back(std::move(n));
    tree.nodes[di].children.push_back(idx);
  }
  return Status::Ok();
}

// Opens `name` in `dfd` as a directory and checks that it is node `want`.
Status OpenDirAt(const SourceTree& tree, int dfd, const char* name, uint32_t want, Fd* out,
                 uint64_t* resolved) {
  ++*resolved;
  out->Reset(openat(dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (out->get() < 0) {
    return Status::FromErrno(errno, Shorten(tree.PathOf(want)) + ": cannot open directory");
  }
  struct stat st;
  if (fstat(out->get(), &st) != 0) return Status::FromErrno(errno, Shorten(tree.PathOf(want)));
  const SourceNode& n = tree.nodes[want];
  if (st.st_dev != n.dev || st.st_ino != n.ino) {
    return Status::IOError(Shorten(tree.PathOf(want)) +
                           ": directory replaced or moved during the build");
  }
  return Status::Ok();
}

}  // namespace

bool SourceNode::is_sourced() const {
  return (flags & (format::kInodeLowerContent | format::kInodeDelta)) != 0;
}

std::string SourceTree::PathOf(uint32_t i) const {
  std::vector<uint32_t> chain;
  for (uint32_t k = i; k != 0 && k < nodes.size(); k = nodes[k].parent) {
    chain.push_back(k);
    if (nodes[k].parent >= k) break;  // not a tree ScanDirectory made
  }
  std::string path = root_path;
  for (auto it = chain.rbegin(); it != chain.rend(); ++it) path += "/" + nodes[*it].name;
  return path;
}

Status CheckSourceNode(const SourceNode& n, bool is_root) {
  using namespace format;
  if (!is_root &&
      (n.name.empty() || n.name.size() > kMaxNameLen || n.name == "." || n.name == ".." ||
       n.name.find_first_of(std::string("/\0", 2)) != std::string::npos)) {
    return Status::BadSource("name of " + std::to_string(n.name.size()) +
                             " bytes is not a valid entry name (1.." + std::to_string(kMaxNameLen) +
                             " bytes, no '/' or NUL)");
  }
  if (S_ISLNK(n.mode) && (n.symlink_target.empty() || n.symlink_target.size() > kMaxSymlinkLen)) {
    return Status::BadSource("symlink target of " + std::to_string(n.symlink_target.size()) +
                             " bytes; the format allows 1.." + std::to_string(kMaxSymlinkLen));
  }
  // The reader's per-inode limits (docs/FORMAT.md section 9).
  uint64_t name_bytes = 0, value_bytes = 0;
  for (const auto& [xname, xvalue] : n.xattrs) {
    if (xname.empty() || xname.size() > kMaxXattrNameLen || xvalue.size() > kMaxXattrValueLen ||
        xname.find('\0') != std::string::npos) {
      return Status::BadSource("xattr " + xname + " (name " + std::to_string(xname.size()) +
                               " bytes, value " + std::to_string(xvalue.size()) +
                               " bytes) exceeds the format limits (name 1.." +
                               std::to_string(kMaxXattrNameLen) + " bytes, value " +
                               std::to_string(kMaxXattrValueLen) + " bytes)");
    }
    name_bytes += xname.size() + 1;
    value_bytes += xvalue.size();
  }
  if (name_bytes > kMaxXattrListBytes || value_bytes > kMaxXattrValuesBytes) {
    return Status::BadSource("xattrs exceed the format limits (" + std::to_string(name_bytes) +
                             " bytes of names, limit " + std::to_string(kMaxXattrListBytes) + "; " +
                             std::to_string(value_bytes) + " bytes of values, limit " +
                             std::to_string(kMaxXattrValuesBytes) + ")");
  }
  return Status::Ok();
}

Status WalkSourceDirs(const SourceTree& tree, const std::function<Status(uint32_t, int)>& visit,
                      uint64_t* resolved) {
  Fd cur;
  *resolved += Components(tree.root_path);
  cur.Reset(open(tree.root_path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (cur.get() < 0) return Status::FromErrno(errno, tree.root_path);
  struct stat st;
  if (fstat(cur.get(), &st) != 0) return Status::FromErrno(errno, tree.root_path);
  if (st.st_dev != tree.nodes[0].dev || st.st_ino != tree.nodes[0].ino) {
    return Status::IOError(tree.root_path + ": directory replaced during the build");
  }
  struct Frame {
    uint32_t dir;
    size_t next = 0;  // index into the directory's children
  };
  std::vector<Frame> stack{{0}};
  CX_RETURN_IF_ERROR(visit(0, cur.get()));
  while (!stack.empty()) {
    Frame& top = stack.back();
    const std::vector<uint32_t>& children = tree.nodes[top.dir].children;
    while (top.next < children.size() && !S_ISDIR(tree.nodes[children[top.next]].mode)) {
      ++top.next;
    }
    if (top.next < children.size()) {
      const uint32_t c = children[top.next++];
      const size_t child_depth = stack.size();  // the root is depth 0
      if (child_depth > format::kMaxDirDepth) {
        return Status::BadSource(Shorten(tree.PathOf(c)) + ": directories nested deeper than " +
                                 std::to_string(format::kMaxDirDepth) +
                                 " levels, the format limit");
      }
      Fd next;
      CX_RETURN_IF_ERROR(
          OpenDirAt(tree, cur.get(), tree.nodes[c].name.c_str(), c, &next, resolved));
      cur.Reset(next.Release());
      stack.push_back({c});
      CX_RETURN_IF_ERROR(visit(c, cur.get()));
      continue;
    }
    stack.pop_back();
    if (!stack.empty()) {
      Fd up;
      CX_RETURN_IF_ERROR(OpenDirAt(tree, cur.get(), "..", stack.back().dir, &up, resolved));
      cur.Reset(up.Release());
    }
  }
  return Status::Ok();
}

Result<SourceTree> ScanDirectory(const std::string& dir) {
  SourceTree tree;
  tree.root_path = dir;
  tree.components_resolved += Components(dir);
  // The root is followed if it is a symlink (like `ls DIR/`); nothing below.
  Fd root(open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (root.get() < 0) {
    if (errno == ENOTDIR) return Status::NotDirectory(dir + ": not a directory");
    return Status::FromErrno(errno, dir);
  }
  struct stat st;
  if (fstat(root.get(), &st) != 0) return Status::FromErrno(errno, dir);
  tree.nodes.emplace_back();
  const PathFn root_path = [&] { return dir; };
  CX_RETURN_IF_ERROR(
      Fill(tree.nodes[0], st, -1, "", root.get(), root_path, &tree.components_resolved));
  if (Status s = CheckSourceNode(tree.nodes[0], true); !s.ok()) return s.Prefixed(dir);
  root.Reset();

  std::map<std::pair<dev_t, ino_t>, uint32_t> links;  // (dev, ino) -> first node
  uint64_t resolved = 0;
  CX_RETURN_IF_ERROR(WalkSourceDirs(
      tree, [&](uint32_t di, int dfd) { return ScanEntries(tree, di, dfd, links); }, &resolved));
  tree.components_resolved += resolved;
  return tree;
}

}  // namespace cryptex
