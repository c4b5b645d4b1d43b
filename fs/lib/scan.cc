// ScanDirectory: the source-tree walk of `cryptex build`.
#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <deque>
#include <map>
#include <memory>

#include "builder.h"
#include "format.h"

namespace cryptex {

namespace {

struct DirCloser {
  void operator()(DIR* d) const { closedir(d); }
};

// `io` is passed to the system calls, `path` names the file in messages.
Status ReadXattrs(const std::string& io, const std::string& path, SourceNode* node) {
  std::vector<char> names(4096);
  ssize_t n;
  for (;;) {
    n = llistxattr(io.c_str(), names.data(), names.size());
    if (n >= 0) break;
    if (errno == ENOTSUP) return Status::Ok();
    if (errno != ERANGE) return Status::FromErrno(errno, path + ": listxattr");
    names.resize(names.size() * 4);
    if (names.size() > (1u << 24)) return Status::IOError(path + ": xattr list too large");
  }
  std::vector<char> value(4096);
  for (ssize_t off = 0; off < n;) {
    std::string name(names.data() + off);
    off += static_cast<ssize_t>(name.size()) + 1;
    if (name.empty()) continue;
    ssize_t vn;
    for (;;) {
      vn = lgetxattr(io.c_str(), name.c_str(), value.data(), value.size());
      if (vn >= 0) break;
      if (errno == ENODATA) break;
      if (errno != ERANGE) return Status::FromErrno(errno, path + ": getxattr " + name);
      value.resize(value.size() * 4);
      if (value.size() > 4 * format::kMaxXattrValueLen) {
        return Status::IOError(path + ": xattr " + name + " too large");
      }
    }
    if (vn < 0) continue;
    if (name.size() > format::kMaxXattrNameLen || vn > format::kMaxXattrValueLen) {
      return Status::InvalidArgument(path + ": xattr " + name + " exceeds format limits");
    }
    node->xattrs.emplace_back(name, std::string(value.data(), static_cast<size_t>(vn)));
  }
  std::sort(node->xattrs.begin(), node->xattrs.end());
  // The reader's per-inode limits (docs/FORMAT.md section 9).
  uint64_t name_bytes = 0, value_bytes = 0;
  for (const auto& [xname, xvalue] : node->xattrs) {
    name_bytes += xname.size() + 1;
    value_bytes += xvalue.size();
  }
  if (name_bytes > format::kMaxXattrListBytes || value_bytes > format::kMaxXattrValuesBytes) {
    return Status::InvalidArgument(path + ": xattrs exceed the format limits (" +
                                   std::to_string(name_bytes) + " bytes of names, " +
                                   std::to_string(value_bytes) + " bytes of values)");
  }
  return Status::Ok();
}

// A path naming `name` in the open directory `dfd` that system calls accept
// (for those without an *at() form), also when `path` is too long.
std::string IoPath(int dfd, const std::string& name, const std::string& path) {
  if (path.size() < PATH_MAX) return path;
  return "/proc/self/fd/" + std::to_string(dfd) + "/" + name;
}

}  // namespace

int OpenSourcePath(const std::string& path, int flags) {
  flags |= O_NOFOLLOW | O_CLOEXEC;
  const int fd = open(path.c_str(), flags);
  if (fd >= 0 || errno != ENAMETOOLONG) return fd;
  int dfd = open(path[0] == '/' ? "/" : ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  size_t pos = 0;
  while (dfd >= 0) {
    const size_t slash = path.find('/', pos);
    int next;
    if (slash == std::string::npos) {
      next = openat(dfd, path.c_str() + pos, flags);
    } else if (slash == pos) {
      next = dup(dfd);  // "//" or the leading "/"
    } else {
      const std::string dir = path.substr(pos, slash - pos);
      next = openat(dfd, dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    }
    const int err = errno;
    close(dfd);
    errno = err;
    if (slash == std::string::npos) return next;
    dfd = next;
    pos = slash + 1;
  }
  return -1;
}

Result<SourceTree> ScanDirectory(const std::string& dir) {
  SourceTree tree;
  struct stat st;
  if (lstat(dir.c_str(), &st) != 0) return Status::FromErrno(errno, dir);
  if (!S_ISDIR(st.st_mode)) return Status::NotDirectory(dir + ": not a directory");

  std::map<std::pair<dev_t, ino_t>, uint32_t> links;  // (dev, ino) -> first node
  // `path` names the entry in messages and for later reads; `io` is what
  // readlink and the xattr calls get (see IoPath).
  auto fill = [&](SourceNode& n, const std::string& path, const std::string& io,
                  const struct stat& s) -> Status {
    n.mode = s.st_mode;
    n.uid = s.st_uid;
    n.gid = s.st_gid;
    n.mtime_sec = s.st_mtim.tv_sec;
    n.mtime_nsec = static_cast<uint32_t>(s.st_mtim.tv_nsec);
    if (S_ISCHR(s.st_mode) || S_ISBLK(s.st_mode)) n.rdev = s.st_rdev;
    if (S_ISREG(s.st_mode)) {
      n.size = static_cast<uint64_t>(s.st_size);
      n.source_path = path;
    } else if (S_ISLNK(s.st_mode)) {
      std::vector<char> buf(format::kMaxSymlinkLen + 2);
      ssize_t len = readlink(io.c_str(), buf.data(), buf.size());
      if (len < 0) return Status::FromErrno(errno, path + ": readlink");
      if (len == 0 || static_cast<size_t>(len) > format::kMaxSymlinkLen) {
        return Status::InvalidArgument(path + ": symlink target length out of range");
      }
      n.symlink_target.assign(buf.data(), static_cast<size_t>(len));
      n.size = n.symlink_target.size();
    }
    return ReadXattrs(io, path, &n);
  };

  tree.nodes.emplace_back();
  CX_RETURN_IF_ERROR(fill(tree.nodes[0], dir, dir, st));
  std::vector<std::string> paths{dir};
  std::deque<uint32_t> queue{0};
  while (!queue.empty()) {
    uint32_t di = queue.front();
    queue.pop_front();
    const std::string dpath = paths[di];
    const int dfd = OpenSourcePath(dpath, O_RDONLY | O_DIRECTORY);
    std::unique_ptr<DIR, DirCloser> d(dfd < 0 ? nullptr : fdopendir(dfd));
    if (!d) {
      const int err = errno;
      if (dfd >= 0) close(dfd);
      return Status::FromErrno(err, dpath + ": cannot open directory");
    }
    std::vector<std::string> names;
    errno = 0;
    while (struct dirent* e = readdir(d.get())) {
      std::string name = e->d_name;
      if (name == "." || name == "..") continue;
      names.push_back(std::move(name));
    }
    if (errno != 0) return Status::FromErrno(errno, dpath + ": readdir");
    std::sort(names.begin(), names.end());
    for (auto& name : names) {
      std::string path = dpath + "/" + name;
      const std::string io = IoPath(dfd, name, path);
      struct stat cst;
      if (fstatat(dfd, name.c_str(), &cst, AT_SYMLINK_NOFOLLOW) != 0) {
        return Status::FromErrno(errno, path);
      }
      uint32_t idx = static_cast<uint32_t>(tree.nodes.size());
      if (idx >= 0xFFFFFFF0u) return Status::InvalidArgument(dir + ": too many entries");
      tree.nodes.emplace_back();
      SourceNode& n = tree.nodes.back();
      n.name = name;
      n.parent = di;
      if (!S_ISDIR(cst.st_mode) && cst.st_nlink > 1) {
        auto [it, inserted] = links.try_emplace({cst.st_dev, cst.st_ino}, idx);
        if (!inserted) n.hardlink_of = it->second;
      }
      if (n.hardlink_of < 0) {
        CX_RETURN_IF_ERROR(fill(n, path, io, cst));
        if (S_ISREG(cst.st_mode)) {
          // Fail early (with the path) on files we cannot read.
          if (faccessat(dfd, name.c_str(), R_OK, 0) != 0) {
            return Status::FromErrno(errno, path + ": cannot read");
          }
          tree.total_file_bytes += n.size;
          ++tree.regular_files;
        }
      } else {
        n.mode = cst.st_mode;
      }
      tree.nodes[di].children.push_back(idx);
      paths.push_back(S_ISDIR(cst.st_mode) ? path : std::string());
      if (S_ISDIR(cst.st_mode)) queue.push_back(idx);
    }
  }
  return tree;
}

}  // namespace cryptex
