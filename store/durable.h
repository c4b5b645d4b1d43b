// Durable file operations of the device store (docs/STORE.md, "Crash
// safety"), each followed by a crash point.
//
// Crash points: every step that changes what is on disk (a write, an fsync,
// a rename, a link, a truncate) calls CrashPoint() after it. With the
// environment variable CRYPTEX_TEST_CRASH_AT=N (tests only) the process
// kills itself with SIGKILL at the Nth point, as `kill -9` would; with
// CRYPTEX_TEST_CRASH_COUNT=FILE it writes the number of points it passed to
// FILE at exit, so a test can enumerate them all.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "sha256.h"
#include "status.h"

namespace cryptex::store {

// One crash point (see above). `what` names it in the count file.
void CrashPoint(const char* what);

// Replaces `path` with `bytes` atomically and durably: writes `path`.tmp,
// fsyncs it, renames it over `path`, fsyncs the directory. A reader sees the
// old or the new file, never a mix; after a crash at any step the file is
// the old or the new one (a stale `path`.tmp may remain; the next write
// replaces it).
Status ReplaceFile(const std::string& path, std::span<const uint8_t> bytes, int mode = 0644);

// Appends `bytes` to `path` (created if missing) and fsyncs it.
Status AppendDurable(const std::string& path, std::span<const uint8_t> bytes);

// Truncates `path` to `size` and fsyncs it.
Status TruncateDurable(const std::string& path, uint64_t size);

// fsync of directory `dir`.
Status SyncDir(const std::string& dir);

// mkdir `dir` (mode 0755) if missing, then fsyncs its parent.
Status EnsureDir(const std::string& dir);

// The whole of `path`; kNotFound if missing.
Result<std::string> ReadWholeFile(const std::string& path);

// SHA-256 of the whole of open file `fd` (read from offset 0 with pread) and
// its size in bytes; errors name `what`.
struct FileDigest {
  Digest sha256{};
  uint64_t size = 0;
};
Result<FileDigest> DigestOfFd(int fd, const std::string& what);
// The same for the file at `path` (opened O_NOFOLLOW); kNotFound if missing.
Result<FileDigest> DigestOfFile(const std::string& path);

// Copies the regular file `src` into `fd` (from offset 0), with
// copy_file_range where the kernel can (no bytes through user space).
Status CopyInto(const std::string& src, int fd, const std::string& dest_what, uint64_t* size);

// Names in `dir` ("." and ".." excluded), sorted; empty if it does not exist
// or cannot be read.
std::vector<std::string> ListDir(const std::string& dir);

// An exclusive flock(2) on the file `path` (created with mode 0600 if
// missing; a symlink is refused), waited for (EINTR retried) and held until
// the FileLock is destroyed. The file's contents are not touched. Errors
// name `path` and the call that failed.
class FileLock {
 public:
  static Result<FileLock> Take(const std::string& path);
  FileLock(FileLock&& o) noexcept;
  FileLock& operator=(FileLock&&) = delete;
  ~FileLock();

 private:
  explicit FileLock(int fd) : fd_(fd) {}
  int fd_ = -1;
};

}  // namespace cryptex::store
