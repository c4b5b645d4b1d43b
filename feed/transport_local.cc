// The local transport: a feed directory on this machine (a path or a
// file:/// URL), e.g. removable media or a directory synced by other means.
// No component under the directory is followed if it is a symbolic link: a
// feed is plain files, and a link could point anywhere on the device.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <functional>
#include <mutex>

#include "transport.h"
#include "transport_internal.h"

namespace cryptex::feed {
namespace {

using internal::Fd;

// Chunk size for reads of feed files.
constexpr size_t kReadChunk = size_t{1} << 16;

// The validator of a local file: equal tokens mean "not modified".
std::string LocalToken(const struct stat& st) {
  return "\"local-" + std::to_string(st.st_ino) + "-" + std::to_string(st.st_size) + "-" +
         std::to_string(st.st_mtim.tv_sec) + "." + std::to_string(st.st_mtim.tv_nsec) + "\"";
}

class LocalTransport final : public Transport {
 public:
  LocalTransport(std::string dir, Fd dirfd, std::function<void(uint64_t, uint64_t)> progress)
      : dir_(std::move(dir)), dirfd_(std::move(dirfd)), progress_(std::move(progress)) {}

  const std::string& base() const override { return dir_; }

  Result<SmallFetch> FetchSmall(const std::string& rel, const Validators& cond,
                                uint64_t max_bytes) override;
  Status FetchFile(const std::string& rel, const std::string& partial, uint64_t length) override;

  TransportStats stats() const override {
    std::lock_guard<std::mutex> lock(mu_);
    return stats_;
  }

 private:
  std::string UrlOf(const std::string& rel) const {
    return dir_ == "/" ? dir_ + rel : dir_ + "/" + rel;
  }
  // Opens `rel` for reading, refusing a symbolic link at any component and
  // anything but a regular file at the end; fills `st`.
  Result<Fd> OpenFeedFile(const std::string& rel, struct stat* st);
  void Count(uint64_t bytes, bool not_modified);

  const std::string dir_;
  const Fd dirfd_;
  const std::function<void(uint64_t, uint64_t)> progress_;
  mutable std::mutex mu_;
  TransportStats stats_;  // GUARDED_BY(mu_)
};

// The error of openat(at, comp, O_NOFOLLOW...) failing with `err`: a
// symbolic link gives ELOOP, or ENOTDIR when a directory was asked for.
Status OpenError(int err, int at, const std::string& comp, const std::string& url) {
  struct stat st;
  if ((err == ELOOP || err == ENOTDIR) &&
      ::fstatat(at, comp.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISLNK(st.st_mode)) {
    return Status::Permission(url + ": " + comp + " is a symbolic link (a feed is plain files)");
  }
  if (err == ENOENT) return Status::NotFound(url + ": no such file");
  return Status::FromErrno(err, url);
}

Result<Fd> LocalTransport::OpenFeedFile(const std::string& rel, struct stat* st) {
  CX_RETURN_IF_ERROR(CheckFeedPath(rel));
  const std::string url = UrlOf(rel);
  Fd cur;
  int at = dirfd_.get();
  size_t start = 0;
  for (;;) {
    size_t slash = rel.find('/', start);
    bool last = slash == std::string::npos;
    std::string comp = rel.substr(start, last ? std::string::npos : slash - start);
    int flags = O_RDONLY | O_CLOEXEC | O_NOFOLLOW | (last ? O_NONBLOCK : O_DIRECTORY);
    Fd next(::openat(at, comp.c_str(), flags));
    if (next.get() < 0) return OpenError(errno, at, comp, url);
    cur = std::move(next);
    at = cur.get();
    if (last) break;
    start = slash + 1;
  }
  if (::fstat(cur.get(), st) != 0) return Status::FromErrno(errno, url);
  if (!S_ISREG(st->st_mode)) return Status::IOError(url + ": not a regular file");
  // O_NONBLOCK only kept a FIFO from blocking the open; regular files ignore it.
  return cur;
}

void LocalTransport::Count(uint64_t bytes, bool not_modified) {
  std::lock_guard<std::mutex> lock(mu_);
  ++stats_.requests;
  stats_.body_bytes += bytes;
  if (not_modified) ++stats_.not_modified;
}

Result<SmallFetch> LocalTransport::FetchSmall(const std::string& rel, const Validators& cond,
                                              uint64_t max_bytes) {
  struct stat st;
  CX_ASSIGN_OR_RETURN(Fd fd, OpenFeedFile(rel, &st));
  const std::string url = UrlOf(rel);
  SmallFetch out;
  out.validators.etag = LocalToken(st);
  if (!cond.etag.empty() && cond.etag == out.validators.etag) {
    Count(0, true);
    out.not_modified = true;
    return out;
  }
  if (static_cast<uint64_t>(st.st_size) > max_bytes) {
    Count(0, false);
    return internal::TooLarge(url, max_bytes);
  }
  // Read at most max_bytes + 1: a file that grew since the fstat is caught.
  std::string body;
  for (;;) {
    size_t want = static_cast<size_t>(std::min<uint64_t>(kReadChunk, max_bytes + 1 - body.size()));
    size_t old = body.size();
    body.resize(old + want);
    ssize_t r = ::read(fd.get(), body.data() + old, want);
    if (r < 0 && errno == EINTR) {
      body.resize(old);
      continue;
    }
    if (r < 0) {
      int err = errno;
      Count(old, false);
      return Status::FromErrno(err, "reading " + url);
    }
    body.resize(old + static_cast<size_t>(r));
    if (r == 0 || body.size() > max_bytes) break;
  }
  Count(body.size(), false);
  if (body.size() > max_bytes) return internal::TooLarge(url, max_bytes);
  struct stat after;
  if (::fstat(fd.get(), &after) != 0) return Status::FromErrno(errno, url);
  if (LocalToken(after) != out.validators.etag || body.size() != static_cast<size_t>(st.st_size)) {
    return Status::IOError(url + ": changed while reading");
  }
  out.body = std::move(body);
  return out;
}

Status LocalTransport::FetchFile(const std::string& rel, const std::string& partial,
                                 uint64_t length) {
  const std::string url = UrlOf(rel);
  struct stat st;
  CX_ASSIGN_OR_RETURN(Fd fd, OpenFeedFile(rel, &st));
  CX_ASSIGN_OR_RETURN(internal::PartialFile out, internal::PartialFile::Open(partial, length, url));
  uint64_t received = 0;
  Status result;
  if (static_cast<uint64_t>(st.st_size) > length) {
    // Refused unread, as the https transport refuses a longer Content-Length.
    result =
        Status::Corruption(url + ": more than the signed " + std::to_string(length) + " bytes");
  } else {
    std::string buf(kReadChunk, '\0');
    // Read up to one byte past `length`: the file may grow while we read.
    while (result.ok()) {
      uint64_t offset = out.size();
      size_t want = static_cast<size_t>(std::min<uint64_t>(kReadChunk, length + 1 - offset));
      ssize_t r = ::pread(fd.get(), buf.data(), want, static_cast<off_t>(offset));
      if (r < 0 && errno == EINTR) continue;
      if (r < 0) {
        result = Status::FromErrno(errno, "reading " + url);
        break;
      }
      if (r == 0) break;
      received += static_cast<uint64_t>(r);
      result = out.Append(buf.data(), static_cast<size_t>(r));
      if (progress_) progress_(out.size(), length);
    }
  }
  Count(received, false);
  Status synced = out.Sync();
  if (!result.ok()) return result;
  if (!synced.ok()) return synced;
  if (!out.complete()) return out.Truncated("");
  return Status::Ok();
}

}  // namespace

Result<std::unique_ptr<Transport>> OpenLocalTransport(const std::string& dir,
                                                      const TransportOptions& options) {
  Fd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (fd.get() < 0) return Status::FromErrno(errno, "feed directory " + dir);
  std::string base = dir;
  while (base.size() > 1 && base.back() == '/') base.pop_back();
  auto t = std::make_unique<LocalTransport>(base, std::move(fd), options.progress);
  return std::unique_ptr<Transport>(std::move(t));
}

}  // namespace cryptex::feed
