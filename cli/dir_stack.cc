#include "dir_stack.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <utility>

namespace cryptex::cli {

Fd& Fd::operator=(Fd&& o) noexcept {
  if (this != &o) {
    Close();
    fd_ = o.fd_;
    o.fd_ = -1;
  }
  return *this;
}

void Fd::Close() {
  if (fd_ < 0) return;
  const int err = errno;
  close(fd_);
  fd_ = -1;
  errno = err;
}

Result<DirId> IdOf(int fd, const std::string& what) {
  struct stat st;
  if (fstat(fd, &st) != 0) return Status::FromErrno(errno, what + ": stat");
  return DirId{st.st_dev, st.st_ino};
}

int OpenDirAt(int dir_fd, const std::string& name) {
  return openat(dir_fd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
}

DirStack::DirStack(Fd root, DirId id) { levels_.push_back({std::move(root), id}); }

void DirStack::Push(Fd child, DirId id) {
  levels_.push_back({std::move(child), id});
  if (levels_.size() - first_open_ > kFdBudget) {
    levels_[first_open_].fd.Close();
    ++first_open_;
  }
}

Result<Fd> DirStack::Pop(const std::function<std::string()>& what) {
  Level left = std::move(levels_.back());
  levels_.pop_back();
  Level& parent = levels_.back();
  if (!parent.fd.ok()) {
    Fd up(openat(left.fd.get(), "..", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!up.ok()) return Status::FromErrno(errno, what() + ": cannot reopen its parent directory");
    CX_ASSIGN_OR_RETURN(DirId id, IdOf(up.get(), ".."));
    if (!(id == parent.id)) {
      return Status::IOError(what() +
                             ": its parent directory was moved or replaced during the walk");
    }
    parent.fd = std::move(up);
    first_open_ = levels_.size() - 1;
  }
  return std::move(left.fd);
}

namespace {

// Opens directory `name` in `dir_fd` for emptying it. When its owner lacks
// read, write or search permission (an image's 0555 or 0000), they are
// given back first, through /proc/self/fd (a directory without search
// permission cannot be opened for reading; an O_PATH descriptor can).
Result<Fd> OpenForRemoval(int dir_fd, const std::string& name, const std::string& what) {
  Fd handle(openat(dir_fd, name.c_str(), O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (!handle.ok()) return Status::FromErrno(errno, what);
  struct stat st;
  if (fstat(handle.get(), &st) != 0) return Status::FromErrno(errno, what + ": stat");
  if ((st.st_mode & S_IRWXU) != S_IRWXU) {
    const std::string proc = "/proc/self/fd/" + std::to_string(handle.get());
    if (chmod(proc.c_str(), S_IRWXU) != 0) {
      return Status::FromErrno(errno, what + ": cannot give its owner write permission back");
    }
  }
  Fd fd(OpenDirAt(dir_fd, name));
  if (!fd.ok()) return Status::FromErrno(errno, what);
  CX_ASSIGN_OR_RETURN(DirId id, IdOf(fd.get(), what));
  if (!(id == DirId{st.st_dev, st.st_ino})) {
    return Status::IOError(what + ": replaced while being removed");
  }
  return fd;
}

// Unlinks every non-directory in `fd` and appends the names of its
// subdirectories to *subdirs. Returns the first failure, after trying all.
Status UnlinkFiles(int fd, const std::string& what, std::vector<std::string>* subdirs) {
  std::vector<std::string> names;
  {
    const int copy = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    DIR* d = copy >= 0 ? fdopendir(copy) : nullptr;
    if (d == nullptr) {
      Status st = Status::FromErrno(errno, what + ": cannot list");
      if (copy >= 0) close(copy);
      return st;
    }
    rewinddir(d);
    errno = 0;
    while (const struct dirent* e = readdir(d)) {
      const std::string n = e->d_name;
      if (n != "." && n != "..") names.push_back(n);
    }
    const int err = errno;
    closedir(d);
    if (err != 0) return Status::FromErrno(err, what + ": cannot list");
  }
  Status first;
  for (auto& n : names) {
    if (unlinkat(fd, n.c_str(), 0) == 0) continue;
    if (errno == EISDIR) {
      subdirs->push_back(std::move(n));
    } else if (first.ok()) {
      first = Status::FromErrno(errno, what + "/" + n + ": cannot remove");
    }
  }
  return first;
}

}  // namespace

Status RemoveTree(const std::string& path) {
  Status first;
  auto note = [&first](const Status& st) {
    if (first.ok() && !st.ok()) first = st;
  };
  auto root = OpenForRemoval(AT_FDCWD, path, path);
  if (!root.ok()) return root.status().code() == Code::kNotFound ? Status::Ok() : root.status();
  CX_ASSIGN_OR_RETURN(DirId root_id, IdOf(root->get(), path));
  DirStack stack(std::move(*root), root_id);
  struct Level {
    std::string name;
    std::vector<std::string> subdirs;  // still to remove
  };
  std::vector<Level> levels(1);
  note(UnlinkFiles(stack.fd(), path, &levels.back().subdirs));
  // Names deep down as "PATH/.../NAME": paths of any length stay readable.
  auto where = [&](const std::string& name) {
    return path + (levels.size() > 1 ? "/.../" : "/") + name;
  };
  while (true) {
    if (!levels.back().subdirs.empty()) {
      std::string name = std::move(levels.back().subdirs.back());
      levels.back().subdirs.pop_back();
      const std::string what = where(name);
      auto child = OpenForRemoval(stack.fd(), name, what);
      if (!child.ok()) {
        note(child.status());
        continue;
      }
      auto id = IdOf(child->get(), what);
      if (!id.ok()) {
        note(id.status());
        continue;
      }
      stack.Push(std::move(*child), *id);
      levels.push_back({std::move(name), {}});
      note(UnlinkFiles(stack.fd(), what, &levels.back().subdirs));
      continue;
    }
    if (levels.size() == 1) break;
    const std::string name = std::move(levels.back().name);
    levels.pop_back();
    const std::string what = where(name);
    auto left = stack.Pop([&] { return what; });
    if (!left.ok()) return left.status();  // no safe way up: stop here
    left->Close();
    if (unlinkat(stack.fd(), name.c_str(), AT_REMOVEDIR) != 0) {
      note(Status::FromErrno(errno, what + ": cannot remove"));
    }
  }
  if (rmdir(path.c_str()) != 0) note(Status::FromErrno(errno, path + ": cannot remove"));
  return first;
}

}  // namespace cryptex::cli
