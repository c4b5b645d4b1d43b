#include "durable.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <utility>
#include <vector>

namespace cryptex::store {
namespace {

std::atomic<uint64_t> g_points{0};

void WriteCount() {
  const char* file = std::getenv("CRYPTEX_TEST_CRASH_COUNT");
  if (file == nullptr || *file == '\0') return;
  if (FILE* f = std::fopen(file, "w")) {
    std::fprintf(f, "%llu\n", static_cast<unsigned long long>(g_points.load()));
    std::fclose(f);
  }
}

uint64_t CrashAt() {
  static const uint64_t at = [] {
    const char* v = std::getenv("CRYPTEX_TEST_CRASH_AT");
    if (std::getenv("CRYPTEX_TEST_CRASH_COUNT") != nullptr) std::atexit(WriteCount);
    return v == nullptr ? 0 : std::strtoull(v, nullptr, 10);
  }();
  return at;
}

std::string DirOf(const std::string& path) {
  const size_t slash = path.find_last_of('/');
  return slash == std::string::npos ? "." : (slash == 0 ? "/" : path.substr(0, slash));
}

Status WriteAll(int fd, std::span<const uint8_t> bytes, const std::string& what) {
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      return Status::FromErrno(errno, what + ": write");
    }
    done += static_cast<size_t>(n);
  }
  return Status::Ok();
}

// Closes a descriptor on scope exit.
struct Fd {
  int fd = -1;
  ~Fd() {
    if (fd >= 0) close(fd);
  }
};

}  // namespace

void CrashPoint(const char* what) {
  const uint64_t at = CrashAt();
  const uint64_t n = ++g_points;
  if (at != 0 && n == at) {
    std::fprintf(stderr, "cryptex: test crash at point %llu (%s)\n",
                 static_cast<unsigned long long>(n), what);
    raise(SIGKILL);
  }
}

Status SyncDir(const std::string& dir) {
  Fd d{open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC)};
  if (d.fd < 0) return Status::FromErrno(errno, dir + ": open directory");
  if (fsync(d.fd) != 0) return Status::FromErrno(errno, dir + ": fsync");
  return Status::Ok();
}

Status EnsureDir(const std::string& dir) {
  if (mkdir(dir.c_str(), 0755) == 0) {
    CrashPoint("mkdir");
    return SyncDir(DirOf(dir));
  }
  if (errno != EEXIST) return Status::FromErrno(errno, dir + ": mkdir");
  struct stat st;
  if (stat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    return Status::NotDirectory(dir + ": is not a directory");
  }
  return Status::Ok();
}

Status ReplaceFile(const std::string& path, std::span<const uint8_t> bytes, int mode) {
  const std::string tmp = path + ".tmp";
  {
    Fd f{open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, mode)};
    if (f.fd < 0) return Status::FromErrno(errno, tmp + ": create");
    CX_RETURN_IF_ERROR(WriteAll(f.fd, bytes, tmp));
    CrashPoint("write temp");
    if (fsync(f.fd) != 0) return Status::FromErrno(errno, tmp + ": fsync");
    CrashPoint("fsync temp");
  }
  if (rename(tmp.c_str(), path.c_str()) != 0) {
    return Status::FromErrno(errno, tmp + ": rename to " + path);
  }
  CrashPoint("rename");
  CX_RETURN_IF_ERROR(SyncDir(DirOf(path)));
  CrashPoint("fsync dir");
  return Status::Ok();
}

Status AppendDurable(const std::string& path, std::span<const uint8_t> bytes) {
  Fd f{open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOFOLLOW, 0644)};
  if (f.fd < 0) return Status::FromErrno(errno, path + ": open for append");
  CX_RETURN_IF_ERROR(WriteAll(f.fd, bytes, path));
  CrashPoint("append");
  if (fsync(f.fd) != 0) return Status::FromErrno(errno, path + ": fsync");
  CrashPoint("fsync append");
  return Status::Ok();
}

Status TruncateDurable(const std::string& path, uint64_t size) {
  Fd f{open(path.c_str(), O_WRONLY | O_CLOEXEC | O_NOFOLLOW)};
  if (f.fd < 0) return Status::FromErrno(errno, path + ": open");
  if (ftruncate(f.fd, static_cast<off_t>(size)) != 0) {
    return Status::FromErrno(errno, path + ": truncate");
  }
  CrashPoint("truncate");
  if (fsync(f.fd) != 0) return Status::FromErrno(errno, path + ": fsync");
  CrashPoint("fsync truncate");
  return Status::Ok();
}

Result<std::string> ReadWholeFile(const std::string& path) {
  Fd f{open(path.c_str(), O_RDONLY | O_CLOEXEC)};
  if (f.fd < 0) {
    if (errno == ENOENT) return Status::NotFound(path + ": no such file");
    return Status::FromErrno(errno, path + ": open");
  }
  std::string out;
  char buf[65536];
  for (;;) {
    const ssize_t n = read(f.fd, buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      return Status::FromErrno(errno, path + ": read");
    }
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  return out;
}

Result<FileDigest> DigestOfFd(int fd, const std::string& what) {
  Sha256 h;
  FileDigest out;
  std::vector<uint8_t> buf(1 << 18);
  for (;;) {
    const ssize_t n = pread(fd, buf.data(), buf.size(), static_cast<off_t>(out.size));
    if (n < 0) {
      if (errno == EINTR) continue;
      return Status::FromErrno(errno, what + ": read");
    }
    if (n == 0) break;
    h.Update(buf.data(), static_cast<size_t>(n));
    out.size += static_cast<uint64_t>(n);
  }
  out.sha256 = h.Final();
  return out;
}

Result<FileDigest> DigestOfFile(const std::string& path) {
  Fd f{open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW)};
  if (f.fd < 0) {
    if (errno == ENOENT) return Status::NotFound(path + ": no such file");
    return Status::FromErrno(errno, path + ": open");
  }
  return DigestOfFd(f.fd, path);
}

Status CopyInto(const std::string& src, int fd, const std::string& dest_what, uint64_t* size) {
  Fd in{open(src.c_str(), O_RDONLY | O_CLOEXEC)};
  if (in.fd < 0) return Status::FromErrno(errno, src + ": open");
  struct stat st;
  if (fstat(in.fd, &st) != 0) return Status::FromErrno(errno, src + ": stat");
  if (!S_ISREG(st.st_mode)) return Status::InvalidArgument(src + ": is not a regular file");
  uint64_t done = 0;
  for (;;) {
    ssize_t n = copy_file_range(in.fd, nullptr, fd, nullptr, 1 << 30, 0);
    if (n < 0 && (errno == EXDEV || errno == EINVAL || errno == ENOSYS || errno == EOPNOTSUPP)) {
      char buf[1 << 16];
      n = read(in.fd, buf, sizeof buf);
      if (n > 0) {
        CX_RETURN_IF_ERROR(
            WriteAll(fd, std::span(reinterpret_cast<const uint8_t*>(buf), size_t(n)), dest_what));
      }
    }
    if (n < 0) {
      if (errno == EINTR) continue;
      return Status::FromErrno(errno, src + ": copy to " + dest_what);
    }
    if (n == 0) break;
    done += static_cast<uint64_t>(n);
  }
  *size = done;
  return Status::Ok();
}

std::vector<std::string> ListDir(const std::string& dir) {
  std::vector<std::string> out;
  DIR* d = opendir(dir.c_str());
  if (d == nullptr) return out;
  while (dirent* e = readdir(d)) {
    const std::string n = e->d_name;
    if (n != "." && n != "..") out.push_back(n);
  }
  closedir(d);
  std::sort(out.begin(), out.end());
  return out;
}

Result<FileLock> FileLock::Take(const std::string& path) {
  const int fd = open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) return Status::FromErrno(errno, path + ": open");
  while (flock(fd, LOCK_EX) != 0) {
    if (errno != EINTR) {
      const int e = errno;
      close(fd);
      return Status::FromErrno(e, path + ": flock");
    }
  }
  return FileLock(fd);
}

FileLock::FileLock(FileLock&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}

FileLock::~FileLock() {
  if (fd_ >= 0) close(fd_);  // releases the flock
}

}  // namespace cryptex::store
