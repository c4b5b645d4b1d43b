// A file written under a temporary name next to its destination and renamed
// into place by Commit() without ever replacing an existing file. If Commit()
// is not reached the temporary is removed: no partial output is left behind.
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
  std::string tmp_;
  uint64_t size_ = 0;
  bool committed_ = false;
};

// Full pread; kIOError naming `what` on failure or short read.
Status PReadFull(int fd, void* buf, size_t len, uint64_t offset, const std::string& what);

}  // namespace cryptex
