// A file written unnamed (O_TMPFILE, or a temporary name where the file
// system lacks it) in its destination's directory and linked into place by
// Commit() without ever replacing an existing file. If Commit() is not
// reached nothing is left behind.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "status.h"

namespace cryptex {

class OutputFile final {
 public:
  OutputFile() = default;
  ~OutputFile();
  OutputFile(const OutputFile&) = delete;
  OutputFile& operator=(const OutputFile&) = delete;

  // Fails with kExists if `dest` exists.
  static Result<std::unique_ptr<OutputFile>> Create(const std::string& dest, int mode = 0644);

  int fd() const { return fd_; }
  const std::string& dest() const { return dest_; }
  // Writes all of buf at offset (pwrite loop).
  Status PWrite(const void* buf, size_t len, uint64_t offset);
  Status Append(const void* buf, size_t len);
  uint64_t size() const { return size_; }
  // fsync, rename to dest (RENAME_NOREPLACE), fsync the directory.
  Status Commit();

 private:
  int fd_ = -1;
  std::string dest_;
  std::string tmp_;  // named temporary (fallback); empty when using O_TMPFILE
  std::string dir_;
  uint64_t size_ = 0;
  bool committed_ = false;
};

// Full pread; kIOError naming `what` on failure or short read.
Status PReadFull(int fd, void* buf, size_t len, uint64_t offset, const std::string& what);

}  // namespace cryptex
