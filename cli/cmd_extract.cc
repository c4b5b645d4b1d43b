// cryptex extract IMAGE DIR
//
// Safety: DIR must not exist; everything is created under a fresh temporary
// directory next to it through directory file descriptors (openat/mkdirat/
// symlinkat/mknodat with O_NOFOLLOW and O_EXCL), so nothing the image holds
// (symlinks, odd names) can make us write outside it. Names were validated by
// the image reader (no '/', not '.' or '..'). The temporary directory is
// renamed to DIR only when the extraction is complete.
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <map>
#include <set>
#include <vector>

#include "cli.h"
#include "format.h"
#include "fsverity.h"

namespace cryptex::cli {

namespace {

class Fd {
 public:
  explicit Fd(int fd = -1) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }
  // Closes the current descriptor (keeping errno) and owns `fd` instead.
  void reset(int fd) {
    const int err = errno;
    if (fd_ >= 0) close(fd_);
    fd_ = fd;
    errno = err;
  }

 private:
  int fd_;
};

// Set by SIGINT/SIGTERM/SIGHUP during an extraction: the walk stops at the
// next entry and the temporary directory is removed as on any failure.
volatile sig_atomic_t g_interrupted = 0;
void OnSignal(int) { g_interrupted = 1; }

class Extractor {
 public:
  Extractor(const Image& img, int root_fd) : img_(img), root_fd_(root_fd), root_(geteuid() == 0) {}

  // Extracts directory dir_ino's entries into dir_fd. Does not rely on the
  // reader alone against hostile trees: a directory seen twice (a cycle) and
  // nesting deeper than kMaxDepth (stack exhaustion) are refused here too.
  Status Dir(int dir_fd, uint64_t dir_ino, const std::string& rel) {
    static constexpr int kMaxDepth = 4096;
    if (!dirs_seen_.insert(dir_ino).second) {
      return Status::Corruption((rel.empty() ? "/" : rel) + ": directory reached twice (cycle)");
    }
    if (depth_ >= kMaxDepth) {
      return Status::Corruption(rel + ": directories nested deeper than " +
                                std::to_string(kMaxDepth) + " levels");
    }
    ++depth_;
    struct Leave {
      int& d;
      ~Leave() { --d; }
    } leave{depth_};
    std::vector<DirEntry> entries;
    CX_RETURN_IF_ERROR(img_.ReadDir(dir_ino, 0, [&](const DirEntry& e, uint64_t) {
      entries.push_back(e);
      return true;
    }));
    for (const auto& e : entries) {
      if (e.type == format::kTypeWhiteout) continue;
      const std::string path = rel.empty() ? e.name : rel + "/" + e.name;
      CX_ASSIGN_OR_RETURN(InodeInfo in, img_.GetInode(e.ino));
      CX_RETURN_IF_ERROR(Entry(dir_fd, e.name, in, path));
    }
    return Status::Ok();
  }

  // Ownership, mode, xattrs and times of the extraction root itself (the
  // image's "/"), applied last like every directory's.
  Status RootAttributes(int fd, const std::string& dest) {
    CX_ASSIGN_OR_RETURN(InodeInfo in, img_.GetInode(1));
    return ApplyFd(fd, in, dest);
  }

  const std::vector<std::string>& warnings() const { return warnings_; }

 private:
  Status Entry(int dir_fd, const std::string& name, const InodeInfo& in, const std::string& path) {
    if (g_interrupted) return Status::Internal("interrupted by signal");
    if (!in.is_dir() && in.nlink > 1) {
      auto it = links_.find(in.ino);
      if (it != links_.end()) return HardLink(it->second, dir_fd, name, path);
      links_[in.ino] = path;
    }
    switch (in.mode & S_IFMT) {
      case S_IFDIR: {
        if (mkdirat(dir_fd, name.c_str(), 0700) != 0) {
          return Status::FromErrno(errno, path + ": cannot create directory");
        }
        Fd fd(openat(dir_fd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
        if (fd.get() < 0) return Status::FromErrno(errno, path);
        CX_RETURN_IF_ERROR(Dir(fd.get(), in.ino, path));
        return ApplyFd(fd.get(), in, path);
      }
      case S_IFREG: {
        Fd fd(openat(dir_fd, name.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
                     0600));
        if (fd.get() < 0) return Status::FromErrno(errno, path + ": cannot create");
        CX_RETURN_IF_ERROR(Content(fd.get(), in, path));
        return ApplyFd(fd.get(), in, path);
      }
      case S_IFLNK: {
        CX_ASSIGN_OR_RETURN(std::string target, img_.ReadLink(in.ino));
        if (symlinkat(target.c_str(), dir_fd, name.c_str()) != 0) {
          return Status::FromErrno(errno, path + ": cannot create symlink");
        }
        return ApplyAt(dir_fd, name, in, path);
      }
      default: {
        if (mknodat(dir_fd, name.c_str(), (in.mode & S_IFMT) | 0600, in.rdev) != 0) {
          if (!root_ && (errno == EPERM || errno == EACCES)) {
            warnings_.push_back(path + ": device node not created (needs root)");
            return Status::Ok();
          }
          return Status::FromErrno(errno, path + ": cannot create special file");
        }
        return ApplyAt(dir_fd, name, in, path);
      }
    }
  }

  // Links `name` in dir_fd to `first` (relative to the root), opening its
  // directory one component at a time so that no path exceeds PATH_MAX.
  Status HardLink(const std::string& first, int dir_fd, const std::string& name,
                  const std::string& path) {
    Fd parent(dup(root_fd_));
    size_t pos = 0;
    for (size_t slash; parent.get() >= 0 && (slash = first.find('/', pos)) != std::string::npos;
         pos = slash + 1) {
      const std::string dir = first.substr(pos, slash - pos);
      parent.reset(
          openat(parent.get(), dir.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    }
    if (parent.get() < 0 ||
        linkat(parent.get(), first.c_str() + pos, dir_fd, name.c_str(), 0) != 0) {
      return Status::FromErrno(errno, path + ": cannot create hard link");
    }
    return Status::Ok();
  }

  // Writes the content, keeping holes (all-zero 4 KiB blocks are skipped and
  // ftruncate sets the size), and checks it against the file's fs-verity
  // digest as it goes: what lands on disk is what the vendor signed.
  Status Content(int fd, const InodeInfo& in, const std::string& path) {
    buf_.resize(1u << 20);
    FsVerityHasher hasher;
    for (uint64_t off = 0; off < in.size;) {
      auto n = img_.Read(in.ino, off, buf_);
      if (!n.ok()) return n.status().Prefixed(path);
      if (*n == 0) return Status::Corruption(path + ": short read");
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
          if (k < 0) return Status::FromErrno(errno, path + ": write");
          w += static_cast<size_t>(k);
        }
      }
      off += *n;
    }
    if (ftruncate(fd, static_cast<off_t>(in.size)) != 0) {
      return Status::FromErrno(errno, path + ": truncate");
    }
    if (hasher.Final() != in.digest) {
      return Status::Corruption(path + ": content does not match its signed fs-verity digest");
    }
    return Status::Ok();
  }

  // Ownership first (chown clears setuid bits and capabilities), then mode,
  // then xattrs, then times.
  Status ApplyFd(int fd, const InodeInfo& in, const std::string& path) {
    if (fchown(fd, in.uid, in.gid) != 0) CX_RETURN_IF_ERROR(OwnerFailed(path));
    if (fchmod(fd, in.mode & 07777) != 0) return Status::FromErrno(errno, path + ": chmod");
    CX_ASSIGN_OR_RETURN(auto xs, img_.ListXattrs(in.ino));
    for (const auto& x : xs) {
      if (fsetxattr(fd, x.name.c_str(), x.value.data(), x.value.size(), 0) != 0) {
        CX_RETURN_IF_ERROR(XattrFailed(path, x.name));
      }
    }
    struct timespec ts[2] = {{in.mtime_sec, in.mtime_nsec}, {in.mtime_sec, in.mtime_nsec}};
    if (futimens(fd, ts) != 0) return Status::FromErrno(errno, path + ": set times");
    return Status::Ok();
  }

  Status ApplyAt(int dir_fd, const std::string& name, const InodeInfo& in,
                 const std::string& path) {
    if (fchownat(dir_fd, name.c_str(), in.uid, in.gid, AT_SYMLINK_NOFOLLOW) != 0) {
      CX_RETURN_IF_ERROR(OwnerFailed(path));
    }
    if (!in.is_symlink() &&
        fchmodat(dir_fd, name.c_str(), in.mode & 07777, AT_SYMLINK_NOFOLLOW) != 0) {
      return Status::FromErrno(errno, path + ": chmod");
    }
    CX_ASSIGN_OR_RETURN(auto xs, img_.ListXattrs(in.ino));
    const std::string proc = "/proc/self/fd/" + std::to_string(dir_fd) + "/" + name;
    for (const auto& x : xs) {
      if (lsetxattr(proc.c_str(), x.name.c_str(), x.value.data(), x.value.size(), 0) != 0) {
        CX_RETURN_IF_ERROR(XattrFailed(path, x.name));
      }
    }
    struct timespec ts[2] = {{in.mtime_sec, in.mtime_nsec}, {in.mtime_sec, in.mtime_nsec}};
    if (utimensat(dir_fd, name.c_str(), ts, AT_SYMLINK_NOFOLLOW) != 0) {
      return Status::FromErrno(errno, path + ": set times");
    }
    return Status::Ok();
  }

  Status OwnerFailed(const std::string& path) {
    if (root_) return Status::FromErrno(errno, path + ": chown");
    ++owner_failures_;
    if (owner_failures_ == 1)
      warnings_.push_back("ownership not restored (needs root), e.g. " + path);
    return Status::Ok();
  }

  Status XattrFailed(const std::string& path, const std::string& name) {
    if (root_ && errno != ENOTSUP) return Status::FromErrno(errno, path + ": setxattr " + name);
    warnings_.push_back(path + ": xattr " + name + " not restored: " + std::strerror(errno));
    return Status::Ok();
  }

  const Image& img_;
  int root_fd_;
  bool root_;
  std::map<uint64_t, std::string> links_;  // inode -> first extracted path
  std::set<uint64_t> dirs_seen_;
  int depth_ = 0;
  std::vector<std::string> warnings_;
  std::vector<uint8_t> buf_;
  uint64_t owner_failures_ = 0;
};

// Removes `name` in `dir_fd` and everything below it, never following a
// symlink and with no path length limit. Best effort.
void RemoveTree(int dir_fd, const std::string& name) {
  if (unlinkat(dir_fd, name.c_str(), 0) == 0 || errno != EISDIR) return;
  Fd fd(openat(dir_fd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (fd.get() >= 0) {
    std::vector<std::string> names;
    if (DIR* d = fdopendir(dup(fd.get()))) {
      while (const struct dirent* e = readdir(d)) {
        const std::string n = e->d_name;
        if (n != "." && n != "..") names.push_back(n);
      }
      closedir(d);
    }
    for (const auto& n : names) RemoveTree(fd.get(), n);
  }
  unlinkat(dir_fd, name.c_str(), AT_REMOVEDIR);
}

}  // namespace

int CmdExtract(int argc, char** argv) {
  Args args(argc, argv, {"--trust", "--pubkey"}, {});
  if (args.help()) {
    std::printf(
        "usage: cryptex extract IMAGE DIR [--trust DIR | --pubkey FILE]\n\n"
        "Extracts IMAGE into DIR, which must not exist. Every byte is verified.\n"
        "As root, restores ownership, modes (incl. setuid/setgid/sticky), xattrs\n"
        "(incl. security.capability), device nodes, hard links and nanosecond\n"
        "mtimes; as another user, restores what it can and lists what it could not.\n"
        "Nothing is left behind on failure.\n");
    return kExitOk;
  }
  if (!args.ok()) return Usage("extract", args.error());
  const auto& pos = args.positional();
  if (pos.size() != 2) return Usage("extract", "expected IMAGE DIR");
  std::string dest = pos[1];
  while (dest.size() > 1 && dest.back() == '/') dest.pop_back();
  struct stat st;
  if (lstat(dest.c_str(), &st) == 0) {
    return Fail("extract", Status::Exists(dest + ": already exists (refusing to overwrite)"));
  }
  auto img = OpenImage(pos[0], args);
  if (!img.ok()) return Fail("extract", img.status());

  std::string tmp = dest + ".tmp-XXXXXX";
  if (mkdtemp(tmp.data()) == nullptr) {
    return Fail("extract", Status::FromErrno(errno, dest + ": cannot create temporary directory"));
  }
  struct sigaction sa {};
  sa.sa_handler = OnSignal;
  sigemptyset(&sa.sa_mask);
  for (int sig : {SIGINT, SIGTERM, SIGHUP}) sigaction(sig, &sa, nullptr);
  Status st2;
  std::vector<std::string> warnings;
  {
    Fd root(open(tmp.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (root.get() < 0) {
      st2 = Status::FromErrno(errno, tmp);
    } else {
      Extractor x(**img, root.get());
      st2 = x.Dir(root.get(), 1, "");
      if (st2.ok()) st2 = x.RootAttributes(root.get(), dest);
      warnings = x.warnings();
    }
  }
  if (st2.ok() && renameat2(AT_FDCWD, tmp.c_str(), AT_FDCWD, dest.c_str(), RENAME_NOREPLACE) != 0) {
    st2 = Status::FromErrno(errno, dest + ": cannot rename into place");
  }
  if (!st2.ok()) {
    RemoveTree(AT_FDCWD, tmp);
    if (g_interrupted) {
      std::fprintf(stderr, "cryptex extract: interrupted; the partial extraction was removed\n");
      return 128 + SIGINT;
    }
    return Fail("extract", st2);
  }
  for (const auto& w : warnings) std::fprintf(stderr, "cryptex extract: warning: %s\n", w.c_str());
  return kExitOk;
}

}  // namespace cryptex::cli
