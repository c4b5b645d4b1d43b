#include "output_file.h"

#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <memory>

namespace cryptex {

OutputFile::~OutputFile() {
  if (fd_ >= 0) close(fd_);
  if (!committed_ && !tmp_.empty()) unlink(tmp_.c_str());
}

Result<std::unique_ptr<OutputFile>> OutputFile::Create(const std::string& dest, int mode) {
  struct stat st;
  if (lstat(dest.c_str(), &st) == 0) {
    return Status::Exists(dest + ": already exists (refusing to overwrite)");
  }
  auto f = std::make_unique<OutputFile>();
  f->dest_ = dest;
  // Preferred: an unnamed O_TMPFILE in the destination directory, linked in
  // at Commit(). Even a kill -9 mid-build then leaves nothing behind.
  const size_t slash = dest.find_last_of('/');
  const std::string dir = slash == std::string::npos ? "." : dest.substr(0, slash + 1);
  f->fd_ = open(dir.c_str(), O_TMPFILE | O_RDWR | O_CLOEXEC, mode);
  if (f->fd_ >= 0) {
    f->dir_ = dir;
    return f;
  }
  if (errno == ENOENT || errno == ENOTDIR || errno == EACCES) {
    return Status::FromErrno(errno, dest + ": cannot create output in " + dir);
  }
  // Fallback for file systems without O_TMPFILE: a named temporary.
  f->tmp_ = dest + ".tmp-XXXXXX";
  f->fd_ = mkstemp(f->tmp_.data());
  if (f->fd_ < 0) {
    int e = errno;
    f->tmp_.clear();
    return Status::FromErrno(e, dest + ": cannot create temporary file");
  }
  fchmod(f->fd_, static_cast<mode_t>(mode));
  return f;
}

Status OutputFile::PWrite(const void* buf, size_t len, uint64_t offset) {
  auto p = static_cast<const uint8_t*>(buf);
  while (len > 0) {
    ssize_t n = pwrite(fd_, p, len, static_cast<off_t>(offset));
    if (n < 0) {
      if (errno == EINTR) continue;
      return Status::FromErrno(errno, dest_ + ": write at offset " + std::to_string(offset));
    }
    p += n;
    len -= static_cast<size_t>(n);
    offset += static_cast<uint64_t>(n);
  }
  if (offset > size_) size_ = offset;
  return Status::Ok();
}

Status OutputFile::Append(const void* buf, size_t len) { return PWrite(buf, len, size_); }

Status OutputFile::Commit() {
  if (fsync(fd_) != 0) return Status::FromErrno(errno, dest_ + ": fsync");
  if (tmp_.empty()) {
    // Link the O_TMPFILE in; linkat never replaces an existing file.
    const std::string self = "/proc/self/fd/" + std::to_string(fd_);
    if (linkat(AT_FDCWD, self.c_str(), AT_FDCWD, dest_.c_str(), AT_SYMLINK_FOLLOW) != 0) {
      return Status::FromErrno(errno, dest_ + ": cannot link into place");
    }
  } else if (renameat2(AT_FDCWD, tmp_.c_str(), AT_FDCWD, dest_.c_str(), RENAME_NOREPLACE) != 0) {
    return Status::FromErrno(errno, dest_ + ": cannot rename into place");
  }
  committed_ = true;
  const size_t slash = dest_.find_last_of('/');
  const std::string dir = slash == std::string::npos ? "." : dest_.substr(0, slash + 1);
  int dfd = open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    fsync(dfd);
    close(dfd);
  }
  return Status::Ok();
}

Status PReadFull(int fd, void* buf, size_t len, uint64_t offset, const std::string& what) {
  auto p = static_cast<uint8_t*>(buf);
  while (len > 0) {
    ssize_t n = pread(fd, p, len, static_cast<off_t>(offset));
    if (n < 0) {
      if (errno == EINTR) continue;
      return Status::FromErrno(errno, what + ": read at offset " + std::to_string(offset));
    }
    if (n == 0) {
      return Status::Corruption(what + ": unexpected end of file at offset " +
                                std::to_string(offset));
    }
    p += n;
    len -= static_cast<size_t>(n);
    offset += static_cast<uint64_t>(n);
  }
  return Status::Ok();
}

}  // namespace cryptex
