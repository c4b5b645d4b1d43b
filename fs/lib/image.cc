#include "image.h"

#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zstd.h>

#include <algorithm>
#include <cstring>

#include "image_impl.h"

namespace cryptex {

using namespace format;

bool InodeInfo::is_dir() const { return S_ISDIR(mode); }
bool InodeInfo::is_reg() const { return S_ISREG(mode); }
bool InodeInfo::is_symlink() const { return S_ISLNK(mode); }
uint64_t InodeInfo::stored_bytes() const {
  if (flags & format::kInodeDelta) return stored_size;
  if (flags & format::kInodeLowerContent) return 0;
  return size;
}
uint64_t InodeInfo::blocks512() const { return size / 512 + (size % 512 != 0); }

Image::Image(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Image::~Image() = default;

Result<std::unique_ptr<Image>> Image::Open(const std::string& path, const ImageOptions& opts) {
  if (opts.trust == nullptr) return Status::InvalidArgument("no trust store given");
  auto impl = std::make_unique<Impl>();
  impl->path = path;
  // O_NONBLOCK: opening a FIFO must not wait for a writer (it is refused
  // below); reads of regular files and block devices ignore the flag.
  impl->fd = open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
  if (impl->fd < 0) return Status::FromErrno(errno, path);
  struct stat st;
  if (fstat(impl->fd, &st) != 0) return Status::FromErrno(errno, path);
  uint64_t size = static_cast<uint64_t>(st.st_size);
  if (S_ISBLK(st.st_mode) && ioctl(impl->fd, BLKGETSIZE64, &size) != 0) {
    return Status::FromErrno(errno, path + ": size of block device");
  }
  if (!S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode)) {
    return Status::InvalidArgument(path + ": not a regular file or block device");
  }
  if (size < kMinImageSize) {
    return Status::Corruption(path + ": not a cryptex image (" + std::to_string(size) +
                              " bytes is too small; truncated?)");
  }
  std::vector<uint8_t> last(kBlockSize);
  CX_RETURN_IF_ERROR(PReadFull(impl->fd, last.data(), kBlockSize, size - kBlockSize, path));
  // Cheap structural check first so that "not an image" is reported as such,
  // then the signature, and only then is the superblock trusted.
  if (TrailerOf(last).empty()) {
    return Status::Corruption(path + ": not a cryptex image (no superblock at offset " +
                              std::to_string(size - kBlockSize) + " or " +
                              std::to_string(size - kTrailerSize) + "; truncated or not an image)");
  }
  CX_RETURN_IF_ERROR(VerifySuperblockSignature(last, *opts.trust, path));
  CX_ASSIGN_OR_RETURN(impl->sb, DecodeSuperblock(last, size, path));
  Impl& m = *impl;
  m.inode_count = m.sb.regions[kRegionInodes].length / sizeof(DiskInode);
  m.dirent_count = m.sb.regions[kRegionDirents].length / sizeof(DiskDirent);
  m.extent_count = m.sb.regions[kRegionExtents].length / sizeof(DiskExtent);
  m.xattr_count = m.sb.regions[kRegionXattrs].length / sizeof(DiskXattr);
  m.frame_count = m.sb.regions[kRegionFrames].length / sizeof(DiskFrame);
  if (m.inode_count >= 0xFFFFFFFFull) return Status::Corruption(path + ": too many inodes");
  m.blocks = std::make_unique<VerifiedBlocks>(m.fd, path, m.sb, opts.block_cache_bytes / 2,
                                              &m.stats.verify_failures, &m.stats.blocks_verified);
  m.meta_cache = std::make_unique<LruCache<std::vector<uint8_t>>>(
      std::max<size_t>(opts.block_cache_bytes / 2, 64 * kBlockSize));
  // Honour small caches (down to 64 KiB): the cache keeps at least one value
  // per shard anyway, so frame reads always make progress.
  m.frame_cache =
      std::make_unique<LruCache<FrameBytes>>(std::max<size_t>(opts.frame_cache_bytes, 64u << 10));
  CX_RETURN_IF_ERROR(m.blocks->CheckRoot());
  if (m.sb.compact()) CX_RETURN_IF_ERROR(m.UnpackMeta());
  const auto& mr = m.sb.regions[kRegionManifest];
  if (mr.length > kMaxManifestBytes) {
    return Status::Corruption(path + ": manifest larger than " + std::to_string(kMaxManifestBytes) +
                              " bytes");
  }
  std::vector<uint8_t> mbytes(mr.length);
  CX_RETURN_IF_ERROR(m.ReadMeta(mr.offset, mr.length, mbytes.data()));
  CX_ASSIGN_OR_RETURN(m.manifest, Manifest::Decode(mbytes, path + ": manifest at offset " +
                                                               std::to_string(mr.offset)));
  CX_ASSIGN_OR_RETURN(InodeInfo root, m.GetInode(1));
  (void)root;
  return std::unique_ptr<Image>(new Image(std::move(impl)));
}

const std::string& Image::path() const { return impl_->path; }
const SuperblockInfo& Image::superblock() const { return impl_->sb; }
const Manifest& Image::manifest() const { return impl_->manifest; }
const KeyId& Image::signer() const { return impl_->sb.key_id; }
uint64_t Image::inode_count() const { return impl_->inode_count; }
ImageStats& Image::stats() const { return impl_->stats; }

Result<InodeInfo> Image::GetInode(uint64_t ino) const { return impl_->GetInode(ino); }

Result<DirEntry> Image::Lookup(uint64_t dir, std::string_view name) const {
  CX_ASSIGN_OR_RETURN(InodeInfo d, impl_->GetInode(dir));
  if (!d.is_dir()) {
    return Status::NotDirectory(impl_->path + ": inode " + std::to_string(dir) +
                                " is not a directory");
  }
  CX_RETURN_IF_ERROR(impl_->CheckDir(d));
  uint64_t lo = 0, hi = d.payload_count;
  while (lo < hi) {
    const uint64_t mid = lo + (hi - lo) / 2;
    CX_ASSIGN_OR_RETURN(DirEntry e, impl_->ReadDirent(d.payload + mid));
    const int c = std::string_view(e.name).compare(name);
    if (c == 0) {
      CX_RETURN_IF_ERROR(impl_->CheckEntryType(e));
      return e;
    }
    if (c < 0) {
      lo = mid + 1;
    } else {
      hi = mid;
    }
  }
  return Status::NotFound(std::string(name));
}

Status Image::ReadDir(uint64_t dir, uint64_t start,
                      const std::function<bool(const DirEntry&, uint64_t)>& fn) const {
  CX_ASSIGN_OR_RETURN(InodeInfo d, impl_->GetInode(dir));
  if (!d.is_dir()) {
    return Status::NotDirectory(impl_->path + ": inode " + std::to_string(dir) +
                                " is not a directory");
  }
  CX_RETURN_IF_ERROR(impl_->CheckDir(d));
  for (uint64_t i = start; i < d.payload_count; ++i) {
    CX_ASSIGN_OR_RETURN(DirEntry e, impl_->ReadDirent(d.payload + i));
    CX_RETURN_IF_ERROR(impl_->CheckEntryType(e));
    if (!fn(e, i)) break;
  }
  return Status::Ok();
}

Result<size_t> Image::Read(uint64_t ino, uint64_t offset, std::span<uint8_t> buf) const {
  CX_ASSIGN_OR_RETURN(InodeInfo in, impl_->GetInode(ino));
  if (in.is_sourced()) {
    return Status::Unsupported(impl_->path + ": inode " + std::to_string(ino) +
                               ": content comes from the lower state (read it on its base)");
  }
  return impl_->Read(in, offset, buf);
}

Result<size_t> Image::ReadStored(uint64_t ino, uint64_t offset, std::span<uint8_t> buf) const {
  CX_ASSIGN_OR_RETURN(InodeInfo in, impl_->GetInode(ino));
  return impl_->Read(in, offset, buf);
}

Result<std::string> Image::SourcePath(uint64_t ino) const {
  CX_ASSIGN_OR_RETURN(InodeInfo in, impl_->GetInode(ino));
  if (!in.is_sourced()) {
    return Status::InvalidArgument(impl_->path + ": inode " + std::to_string(ino) +
                                   " has no lower source");
  }
  std::string p;
  CX_RETURN_IF_ERROR(impl_->ReadString(in.source_offset, in.source_len, &p));
  if (p.empty() || p.front() == '/' || p.back() == '/' || p.find('\0') != std::string::npos ||
      p.find("//") != std::string::npos) {
    return Status::Corruption(impl_->path + ": inode " + std::to_string(ino) +
                              ": malformed lower file path");
  }
  return p;
}

Result<uint64_t> Image::SingleFrameOf(uint64_t ino) const {
  CX_ASSIGN_OR_RETURN(InodeInfo in, impl_->GetInode(ino));
  if (!in.is_reg() || in.is_sourced() || in.size == 0 || in.size > impl_->sb.chunk_size() ||
      in.payload_count != 1)
    return kNoFrame;
  format::DiskExtent disk;
  CX_RETURN_IF_ERROR(impl_->ReadRecord(format::kRegionExtents, in.payload, &disk));
  const records::Extent e = records::DecodeExtent(disk);
  return e.frame == format::kHoleFrame ? kNoFrame : uint64_t{e.frame};
}

Result<std::string> Image::ReadLink(uint64_t ino) const {
  CX_ASSIGN_OR_RETURN(InodeInfo in, impl_->GetInode(ino));
  if (!in.is_symlink()) {
    return Status::InvalidArgument(impl_->path + ": inode " + std::to_string(ino) +
                                   " is not a symlink");
  }
  std::string target;
  CX_RETURN_IF_ERROR(impl_->ReadString(in.payload, in.size, &target));
  if (target.find('\0') != std::string::npos) {
    return Status::Corruption(impl_->path + ": inode " + std::to_string(ino) +
                              ": NUL in symlink target");
  }
  return target;
}

Result<std::vector<Xattr>> Image::ListXattrs(uint64_t ino) const {
  CX_ASSIGN_OR_RETURN(InodeInfo in, impl_->GetInode(ino));
  CX_ASSIGN_OR_RETURN(auto names, impl_->ReadXattrNames(in));
  std::vector<Xattr> out;
  out.reserve(names.size());
  for (auto& n : names) {
    Xattr xa;
    xa.name = std::move(n.name);
    CX_RETURN_IF_ERROR(impl_->ReadString(n.value_offset, n.value_len, &xa.value));
    out.push_back(std::move(xa));
  }
  return out;
}

Result<std::string> Image::GetXattr(uint64_t ino, std::string_view name) const {
  CX_ASSIGN_OR_RETURN(InodeInfo in, impl_->GetInode(ino));
  CX_ASSIGN_OR_RETURN(auto names, impl_->ReadXattrNames(in));
  for (const auto& n : names) {
    if (n.name != name) continue;
    std::string value;
    CX_RETURN_IF_ERROR(impl_->ReadString(n.value_offset, n.value_len, &value));
    return value;
  }
  return Status::NotFound(std::string(name));
}

Result<uint64_t> WalkPath(
    std::string_view path, uint64_t root,
    const std::function<Result<DirEntry>(uint64_t, std::string_view)>& lookup) {
  uint64_t node = root;
  size_t pos = 0;
  while (pos < path.size()) {
    size_t slash = path.find('/', pos);
    if (slash == std::string_view::npos) slash = path.size();
    const std::string_view comp = path.substr(pos, slash - pos);
    pos = slash + 1;
    if (comp.empty() || comp == ".") continue;
    auto e = lookup(node, comp);
    if (!e.ok() && e.status().code() != Code::kNotFound) return e.status();
    if (!e.ok() || e->type == kTypeWhiteout) {
      return Status::NotFound(std::string(path) + ": no such file in the image");
    }
    node = e->ino;
  }
  return node;
}

Result<InodeInfo> Image::Resolve(std::string_view path) const {
  CX_ASSIGN_OR_RETURN(uint64_t ino, WalkPath(path, 1, [this](uint64_t dir, std::string_view n) {
                        return Lookup(dir, n);
                      }));
  return impl_->GetInode(ino);
}

}  // namespace cryptex
