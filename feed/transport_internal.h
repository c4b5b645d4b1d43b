// Pieces the two transports share (transport_local.cc, transport_https.cc):
// the bounds FetchSmall and FetchFile enforce and their messages, so both
// refuse the same things with the same words.
#pragma once

#include <cstdint>
#include <string>

#include "status.h"

namespace cryptex::feed::internal {

// A file descriptor closed by the destructor.
class Fd final {
 public:
  Fd() = default;
  explicit Fd(int fd) : fd_(fd) {}
  Fd(Fd&& o) noexcept : fd_(o.release()) {}
  Fd& operator=(Fd&& o) noexcept;
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd();
  int get() const { return fd_; }
  int release();

 private:
  int fd_ = -1;
};

// kCorruption "URL: more than N bytes" (FetchSmall's bound).
Status TooLarge(const std::string& url, uint64_t max_bytes);

// The file FetchFile downloads into, never followed if a symbolic link.
// What it holds is the prefix already fetched; a file longer than `length`
// cannot be a prefix and is emptied. A missing file is created (0600) by
// the first byte written, so a failed request leaves nothing behind.
class PartialFile final {
 public:
  static Result<PartialFile> Open(const std::string& path, uint64_t length, const std::string& url);

  uint64_t size() const { return size_; }
  uint64_t length() const { return length_; }
  bool complete() const { return size_ == length_; }

  // Appends `n` bytes. If they would take the file past `length`, writes
  // only what fits and returns kCorruption "URL: more than the signed N
  // bytes": the caller stops reading.
  Status Append(const char* data, size_t n);
  // fsync (creating the file if complete() and missing: length 0);
  // kIOError naming the file.
  Status Sync();
  // kIOError "URL: truncated at N of M bytes[: cause]" (size() of length()).
  Status Truncated(const std::string& cause) const;

 private:
  Status Create();

  Fd fd_;  // -1 until the file exists
  std::string path_, url_;
  uint64_t size_ = 0, length_ = 0;
};

}  // namespace cryptex::feed::internal
