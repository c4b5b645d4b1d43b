// Publishing a feed directory (publish.h).
#include "publish.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <memory>
#include <span>
#include <utility>

#include "durable.h"
#include "format.h"
#include "image.h"
#include "manifest.h"
#include "parse_size.h"
#include "superblock.h"

namespace cryptex::feed {
namespace {

constexpr std::string_view kPatchSuffix = ".cxpatch";
constexpr std::string_view kBaseSuffix = ".cryptex";

bool EndsWith(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

// What the index records of one image file.
struct ImageFacts {
  uint32_t kind = 0;
  Manifest manifest;
  Digest root{};
};

// Closes a descriptor on scope exit.
struct Fd {
  int fd = -1;
  ~Fd() {
    if (fd >= 0) close(fd);
  }
};

Status PReadAll(int fd, void* buf, size_t len, uint64_t off, const std::string& what) {
  auto* p = static_cast<uint8_t*>(buf);
  while (len > 0) {
    ssize_t n = pread(fd, p, len, static_cast<off_t>(off));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Status::FromErrno(errno, what + ": read at offset " + std::to_string(off));
    if (n == 0) return Status::Corruption(what + ": truncated at offset " + std::to_string(off));
    p += n;
    off += static_cast<uint64_t>(n);
    len -= static_cast<size_t>(n);
  }
  return Status::Ok();
}

// The superblock and manifest of `path` WITHOUT a signature or tree check
// (publish without --trust): decoded with the image library's own decoders
// and limits, from the bytes where Image::Open reads them.
Result<ImageFacts> ReadFactsUnverified(const std::string& path) {
  Fd f{open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK)};
  if (f.fd < 0) return Status::FromErrno(errno, path);
  struct stat st;
  if (fstat(f.fd, &st) != 0) return Status::FromErrno(errno, path);
  if (!S_ISREG(st.st_mode)) return Status::InvalidArgument(path + ": not a regular file");
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  if (size < format::kMinImageSize) {
    return Status::Corruption(path + ": not a cryptex image (" + std::to_string(size) +
                              " bytes is too small; truncated?)");
  }
  std::vector<uint8_t> last(format::kBlockSize);
  CX_RETURN_IF_ERROR(PReadAll(f.fd, last.data(), last.size(), size - last.size(), path));
  CX_ASSIGN_OR_RETURN(SuperblockInfo sb, DecodeSuperblock(last, size, path));
  const RegionInfo& mr = sb.regions[format::kRegionManifest];
  if (mr.length > format::kMaxManifestBytes || mr.offset > size || mr.length > size - mr.offset) {
    return Status::Corruption(path + ": manifest region out of bounds");
  }
  std::vector<uint8_t> mbytes(mr.length);
  CX_RETURN_IF_ERROR(PReadAll(f.fd, mbytes.data(), mbytes.size(), mr.offset, path));
  ImageFacts facts;
  facts.kind = sb.kind;
  facts.root = sb.root_hash;
  CX_ASSIGN_OR_RETURN(facts.manifest, Manifest::Decode(mbytes, path + ": manifest at offset " +
                                                                   std::to_string(mr.offset)));
  return facts;
}

Result<ImageFacts> ReadFacts(const std::string& path, const TrustStore* trust) {
  if (trust == nullptr) return ReadFactsUnverified(path);
  ImageOptions opts;
  opts.trust = trust;
  opts.frame_cache_bytes = 1 << 20;
  opts.block_cache_bytes = 1 << 20;
  CX_ASSIGN_OR_RETURN(std::unique_ptr<Image> img, Image::Open(path, opts));
  return ImageFacts{img->superblock().kind, img->manifest(), img->superblock().root_hash};
}

// Every *.cxpatch and *.cryptex file under `dir` (relative paths, sorted),
// skipping names that start with '.'. A symlink or a name a feed cannot
// serve (CheckFeedPath) is refused naming it.
Status Scan(const std::string& dir, const std::string& rel, int depth,
            std::vector<std::string>* out) {
  if (depth > 32) return Status::BadSource(dir + "/" + rel + ": directories nested too deeply");
  const std::string here = rel.empty() ? dir : dir + "/" + rel;
  std::unique_ptr<DIR, int (*)(DIR*)> d(opendir(here.c_str()), closedir);
  if (!d) return Status::FromErrno(errno, here);
  std::vector<std::string> names;
  errno = 0;
  while (dirent* e = readdir(d.get())) names.emplace_back(e->d_name);
  if (errno != 0) return Status::FromErrno(errno, here + ": readdir");
  std::sort(names.begin(), names.end());
  for (const std::string& name : names) {
    if (name.empty() || name[0] == '.') continue;  // ".", "..", hidden files, temp files
    const std::string child = rel.empty() ? name : rel + "/" + name;
    const std::string full = dir + "/" + child;
    struct stat st;
    if (lstat(full.c_str(), &st) != 0) return Status::FromErrno(errno, full);
    const bool wanted = EndsWith(name, kPatchSuffix) || EndsWith(name, kBaseSuffix);
    if (S_ISDIR(st.st_mode)) {
      CX_RETURN_IF_ERROR(Scan(dir, child, depth + 1, out));
      continue;
    }
    if (!wanted) continue;
    if (!S_ISREG(st.st_mode)) {
      return Status::InvalidArgument(full +
                                     ": not a regular file (a feed serves files as they "
                                     "are; copy it in instead of linking it)");
    }
    if (!IsFeedPath(child)) {
      return Status::InvalidArgument(full + ": the name \"" + child +
                                     "\" cannot be served by a feed (only [A-Za-z0-9._-] in "
                                     "each component)");
    }
    out->push_back(child);
  }
  return Status::Ok();
}

// kIOError unless the file `full` is still the one `before` describes (the
// same inode, size and times, `size` bytes hashed): its manifest and its
// hash must come from the same bytes.
Status CheckUnchanged(const std::string& full, const struct stat& before, uint64_t size) {
  struct stat after;
  if (lstat(full.c_str(), &after) != 0) return Status::FromErrno(errno, full);
  const bool same = before.st_ino == after.st_ino && before.st_dev == after.st_dev &&
                    before.st_size == after.st_size &&
                    before.st_mtim.tv_sec == after.st_mtim.tv_sec &&
                    before.st_mtim.tv_nsec == after.st_mtim.tv_nsec &&
                    before.st_ctim.tv_sec == after.st_ctim.tv_sec &&
                    before.st_ctim.tv_nsec == after.st_ctim.tv_nsec &&
                    static_cast<uint64_t>(after.st_size) == size;
  if (!same) return Status::IOError(full + ": changed while it was being published; publish again");
  return Status::Ok();
}

// Adds the file `rel` (already opened as `facts`) to `index`; refuses a
// second entry for one (line, id) naming both files.
Status AddEntry(const std::string& full, const std::string& rel, const ImageFacts& facts,
                const store::FileDigest& digest, Index* index) {
  const Manifest& m = facts.manifest;
  if (EndsWith(rel, kPatchSuffix)) {
    if (facts.kind != format::kKindPatch || m.patch_id.empty() || !m.base_root_digest) {
      return Status::InvalidArgument(full + ": is not a patch image (named .cxpatch)");
    }
    if (const FeedPatch* other = index->FindPatch(m.name, m.patch_id)) {
      return Status::InvalidArgument(full + ": patch " + m.patch_id + " of line " + m.name +
                                     " is already in the feed as " + other->file);
    }
    FeedPatch p;
    p.id = m.patch_id;
    p.line = m.name;
    p.version = m.version;
    p.file = rel;
    p.length = digest.size;
    p.sha256 = digest.sha256;
    p.root = facts.root;
    p.base_root = *m.base_root_digest;
    p.requires_patches = m.requires_patches;
    p.release_counter = m.release_counter;
    p.severity = m.severity;
    p.cves = m.cves;
    p.activation = m.activation;
    p.released_at = static_cast<int64_t>(std::min<uint64_t>(m.released_at, INT64_MAX));
    index->patches.push_back(std::move(p));
    return Status::Ok();
  }
  if (facts.kind != format::kKindBase) {
    return Status::InvalidArgument(full + ": is not a base image (named .cryptex)");
  }
  FeedBase b;
  b.line = m.name;
  b.version = m.version;
  b.file = rel;
  b.length = digest.size;
  b.sha256 = digest.sha256;
  b.root = facts.root;
  b.release_counter = m.release_counter;
  index->bases.push_back(std::move(b));
  return Status::Ok();
}

// kInvalidArgument naming `full` unless the entry `one` (an index holding
// just the entry of that file) is one a device can decode: the manifest's
// text must be valid UTF-8 and free of control characters, within limits.
Status CheckEntry(const Index& one, const std::string& full) {
  std::string payload;
  try {
    payload = EncodePayload(one);
  } catch (const std::exception&) {
    return Status::InvalidArgument(full +
                                   ": its manifest holds text that is not UTF-8, which a "
                                   "feed index cannot carry");
  }
  auto back = DecodePayload(payload, full);
  if (!back.ok()) {
    return Status::InvalidArgument(back.status().message() +
                                   " (from its manifest; a feed index cannot carry it)");
  }
  return Status::Ok();
}

// The previous index of the feed, if there is one. A present but unreadable
// one is an error unless the caller forces the version.
Result<std::optional<Index>> PreviousIndex(const std::string& path, bool forced) {
  auto bytes = ReadIndexFile(path);
  if (!bytes.ok() && bytes.status().code() == Code::kNotFound) return std::optional<Index>();
  Result<Index> prev = bytes.ok() ? ReadIndexUnverified(*bytes, path) : bytes.status();
  if (prev.ok()) return std::optional<Index>(std::move(prev).value());
  if (forced) return std::optional<Index>();
  return Status(prev.status().code(),
                prev.status().message() +
                    " (the previous index must be read for its version and revocations; "
                    "give --force-version N to publish anyway, which drops its revocations)");
}

}  // namespace

Result<int64_t> ParseExpiry(std::string_view text, const std::string& what) {
  const std::optional<uint64_t> ms = ParseDurationMs(text);
  if (!ms || *ms % 1000 != 0 || *ms < 1000 ||
      *ms > static_cast<uint64_t>(kMaxExpirySeconds) * 1000) {
    std::string m = "'";  // appends: GCC 12 -O3 warns (-Wrestrict) on "'" + std::string
    m += text;
    m += "' is not a duration for " + what + " (e.g. 3600s, 30m, 12h, 7d, 2w; from 1s to 366d)";
    return Status::InvalidArgument(m);
  }
  return static_cast<int64_t>(*ms / 1000);
}

Result<std::string> ReadIndexFile(const std::string& path) {
  Fd f{open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK)};
  if (f.fd < 0) {
    if (errno == ENOENT) return Status::NotFound(path + ": no such file");
    return Status::FromErrno(errno, path);
  }
  struct stat st;
  if (fstat(f.fd, &st) != 0) return Status::FromErrno(errno, path);
  if (S_ISDIR(st.st_mode)) return Status::IsDirectory(path + ": is a directory");
  if (!S_ISREG(st.st_mode)) return Status::InvalidArgument(path + ": not a regular file");
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  if (size > kMaxIndexBytes) {
    return Status::Corruption(path + ": " + std::to_string(size) +
                              " bytes, more than the limit of " + std::to_string(kMaxIndexBytes));
  }
  std::string bytes(size, '\0');
  CX_RETURN_IF_ERROR(PReadAll(f.fd, bytes.data(), bytes.size(), 0, path));
  return bytes;
}

// Web servers validate a static file by its mtime in whole seconds and its
// size (nginx's ETag, Last-Modified): an index published in the same second
// as the one before, with the same size, would look unchanged and devices
// polling with validators would get 304 for it. So each index's mtime is at
// least one second past the previous one's.
Status NewerSecond(const std::string& path, time_t previous_sec) {
  struct stat st;
  if (stat(path.c_str(), &st) != 0) return Status::FromErrno(errno, path);
  if (st.st_mtim.tv_sec > previous_sec) return Status::Ok();
  const struct timespec times[2] = {{previous_sec + 1, 0}, {previous_sec + 1, 0}};
  if (utimensat(AT_FDCWD, path.c_str(), times, 0) != 0) return Status::FromErrno(errno, path);
  return Status::Ok();
}

Result<PublishResult> Publish(const PublishOptions& opts) {
  if (opts.keys.empty()) return Status::InvalidArgument("no index key given (--key)");
  struct stat st;
  if (stat(opts.dir.c_str(), &st) != 0) return Status::FromErrno(errno, opts.dir);
  if (!S_ISDIR(st.st_mode)) return Status::NotDirectory(opts.dir + ": not a directory");

  PublishResult out;
  out.path = opts.dir + "/" + kIndexFile;
  CX_ASSIGN_OR_RETURN(std::optional<Index> prev,
                      PreviousIndex(out.path, opts.force_version.has_value()));
  Index& index = out.index;
  if (prev) {
    out.previous_version = prev->version;
    index.revoked = prev->revoked;
  }
  if (opts.force_version) {
    if (prev && *opts.force_version <= prev->version) {
      return Status::InvalidArgument("--force-version " + std::to_string(*opts.force_version) +
                                     " is not above the version of " + out.path + " (" +
                                     std::to_string(prev->version) +
                                     "): devices would refuse it as a rollback");
    }
    index.version = *opts.force_version;
  } else {
    index.version = prev ? prev->version + 1 : 1;
  }
  if (index.version == 0) return Status::InvalidArgument(out.path + ": version 0 is not valid");
  if (opts.revoke) {
    for (const Revocation& r : index.revoked) {
      if (r.line == opts.revoke->line && r.id == opts.revoke->id) {
        return Status::Exists(out.path + ": " + r.id + " is already revoked" +
                              (r.line.empty() ? "" : " on line " + r.line) + " (\"" + r.reason +
                              "\")");
      }
    }
    index.revoked.push_back(*opts.revoke);
  }
  index.published = opts.now;
  index.expires = opts.now + opts.expires_in;
  index.keys = opts.announce;

  std::vector<std::string> files;
  CX_RETURN_IF_ERROR(Scan(opts.dir, "", 0, &files));
  for (const std::string& rel : files) {
    const std::string full = opts.dir + "/" + rel;
    struct stat before;
    if (lstat(full.c_str(), &before) != 0) return Status::FromErrno(errno, full);
    CX_ASSIGN_OR_RETURN(ImageFacts facts, ReadFacts(full, opts.image_trust));
    if (opts.after_read) opts.after_read(full);
    CX_ASSIGN_OR_RETURN(store::FileDigest digest, store::DigestOfFile(full));
    CX_RETURN_IF_ERROR(CheckUnchanged(full, before, digest.size));
    CX_RETURN_IF_ERROR(AddEntry(full, rel, facts, digest, &index));
    Index one;
    one.version = 1;
    if (EndsWith(rel, kPatchSuffix)) {
      one.patches.push_back(index.patches.back());
    } else {
      one.bases.push_back(index.bases.back());
    }
    CX_RETURN_IF_ERROR(CheckEntry(one, full));
  }
  // What a device will check: the index must decode as written.
  const std::string payload = EncodePayload(index);
  CX_RETURN_IF_ERROR(DecodePayload(payload, out.path + " (new)").status());
  CX_ASSIGN_OR_RETURN(std::string file, SignIndex(index, opts.keys));
  struct stat old_st;
  const bool had_index = stat(out.path.c_str(), &old_st) == 0;
  CX_RETURN_IF_ERROR(store::ReplaceFile(
      out.path, std::span(reinterpret_cast<const uint8_t*>(file.data()), file.size()), 0644));
  if (had_index) CX_RETURN_IF_ERROR(NewerSecond(out.path, old_st.st_mtim.tv_sec));
  return out;
}

}  // namespace cryptex::feed
