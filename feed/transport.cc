// CheckFeedPath, OpenTransport (which transport a URL names) and the pieces
// both transports share (transport_internal.h).
#include "transport.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <string_view>

#include "transport_internal.h"

namespace cryptex::feed {
namespace {

bool IsPathChar(char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' ||
         c == '_' || c == '-';
}

bool StartsWith(std::string_view s, std::string_view prefix) {
  return s.substr(0, prefix.size()) == prefix;
}

}  // namespace

Status CheckFeedPath(const std::string& rel) {
  auto bad = [&rel](const char* why) {
    return Status::InvalidArgument("feed path \"" + rel + "\": " + why);
  };
  if (rel.empty()) return bad("empty");
  size_t start = 0;
  while (start <= rel.size()) {
    size_t end = rel.find('/', start);
    if (end == std::string::npos) end = rel.size();
    std::string_view comp(rel.data() + start, end - start);
    if (comp.empty()) return bad("an empty component (a leading, trailing or doubled '/')");
    if (comp == "." || comp == "..") return bad("a \".\" or \"..\" component");
    for (char c : comp) {
      if (!IsPathChar(c)) return bad("a character other than [A-Za-z0-9._-] in a component");
    }
    start = end + 1;
  }
  return Status::Ok();
}

Result<std::unique_ptr<Transport>> OpenTransport(const std::string& url,
                                                 const TransportOptions& options) {
  if (StartsWith(url, "https://")) return OpenHttpsTransport(url, options);
  if (StartsWith(url, "file://")) {
    std::string path = url.substr(7);
    if (!StartsWith(path, "/")) {
      return Status::InvalidArgument("feed URL \"" + url +
                                     "\": a file URL must be file:///ABSOLUTE/PATH");
    }
    return OpenLocalTransport(path, options);
  }
  if (url.find("://") != std::string::npos) {
    return Status::InvalidArgument("feed URL \"" + url +
                                   "\": only https://, file:/// and directory paths are supported");
  }
  if (url.empty()) return Status::InvalidArgument("feed URL is empty");
  return OpenLocalTransport(url, options);
}

namespace internal {

Fd& Fd::operator=(Fd&& o) noexcept {
  if (this != &o) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = o.release();
  }
  return *this;
}

Fd::~Fd() {
  if (fd_ >= 0) ::close(fd_);
}

int Fd::release() {
  int fd = fd_;
  fd_ = -1;
  return fd;
}

Status TooLarge(const std::string& url, uint64_t max_bytes) {
  return Status::Corruption(url + ": more than " + std::to_string(max_bytes) + " bytes");
}

Result<PartialFile> PartialFile::Open(const std::string& path, uint64_t length,
                                      const std::string& url) {
  PartialFile f;
  f.path_ = path;
  f.url_ = url;
  f.length_ = length;
  f.fd_ = Fd(::open(path.c_str(), O_RDWR | O_CLOEXEC | O_NOFOLLOW));
  if (f.fd_.get() < 0) {
    if (errno == ENOENT) return f;  // created by the first Append
    return Status::FromErrno(errno, "opening partial download " + path);
  }
  struct stat st;
  if (::fstat(f.fd_.get(), &st) != 0) return Status::FromErrno(errno, "stat " + path);
  if (!S_ISREG(st.st_mode))
    return Status::IOError(path + ": partial download is not a regular file");
  f.size_ = static_cast<uint64_t>(st.st_size);
  if (f.size_ > length) {  // not a prefix of the signed file: start again
    if (::ftruncate(f.fd_.get(), 0) != 0) return Status::FromErrno(errno, "truncating " + path);
    f.size_ = 0;
  }
  return f;
}

Status PartialFile::Create() {
  if (fd_.get() >= 0) return Status::Ok();
  fd_ = Fd(::open(path_.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600));
  if (fd_.get() < 0) return Status::FromErrno(errno, "creating partial download " + path_);
  return Status::Ok();
}

Status PartialFile::Append(const char* data, size_t n) {
  bool over = n > length_ - size_;
  size_t take = over ? static_cast<size_t>(length_ - size_) : n;
  if (take > 0) CX_RETURN_IF_ERROR(Create());
  while (take > 0) {
    ssize_t w = ::pwrite(fd_.get(), data, take, static_cast<off_t>(size_));
    if (w < 0 && errno == EINTR) continue;
    if (w < 0) return Status::FromErrno(errno, "writing partial download " + path_);
    data += w;
    take -= static_cast<size_t>(w);
    size_ += static_cast<uint64_t>(w);
  }
  if (over) {
    return Status::Corruption(url_ + ": more than the signed " + std::to_string(length_) +
                              " bytes");
  }
  return Status::Ok();
}

Status PartialFile::Sync() {
  if (fd_.get() < 0 && complete()) CX_RETURN_IF_ERROR(Create());  // an empty file, whole
  if (fd_.get() < 0) return Status::Ok();
  if (::fsync(fd_.get()) != 0) return Status::FromErrno(errno, "fsync " + path_);
  return Status::Ok();
}

Status PartialFile::Truncated(const std::string& cause) const {
  std::string m = url_ + ": truncated at " + std::to_string(size_) + " of " +
                  std::to_string(length_) + " bytes";
  if (!cause.empty()) m += ": " + cause;
  return Status::IOError(m);
}

}  // namespace internal
}  // namespace cryptex::feed
