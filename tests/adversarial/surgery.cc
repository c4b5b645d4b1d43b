#include "surgery.h"

#include <fcntl.h>
#include <unistd.h>

#include <cstring>

#include "merkle.h"

namespace cryptex::surgery {

using namespace format;

Result<TestKey> MakeTestKey(const std::string& dir) {
  CX_ASSIGN_OR_RETURN(PrivateKey key, PrivateKey::Generate());
  CX_RETURN_IF_ERROR(key.SavePair(dir + "/test.key"));
  return TestKey{std::move(key), dir};
}

Result<Bytes> ReadAll(const std::string& path) {
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return Status::FromErrno(errno, path);
  Bytes out;
  uint8_t buf[65536];
  for (;;) {
    const ssize_t n = read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const int err = errno;
      close(fd);
      return Status::FromErrno(err, path);
    }
    if (n == 0) break;
    out.insert(out.end(), buf, buf + n);
  }
  close(fd);
  return out;
}

Status WriteAll(const std::string& path, std::span<const uint8_t> bytes) {
  const int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return Status::FromErrno(errno, path);
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const int err = errno;
      close(fd);
      return Status::FromErrno(err, path);
    }
    done += static_cast<size_t>(n);
  }
  if (close(fd) != 0) return Status::FromErrno(errno, path);
  return Status::Ok();
}

SuperblockBytes SuperblockOf(std::span<const uint8_t> image) {
  SuperblockBytes sb{};
  if (image.size() >= kBlockSize)
    std::memcpy(sb.data(), image.data() + image.size() - kBlockSize, sb.size());
  return sb;
}

Result<SuperblockInfo> Peek(std::span<const uint8_t> image) {
  if (image.size() < kBlockSize) return Status::Corruption("image shorter than one block");
  return DecodeSuperblock(image.subspan(image.size() - kBlockSize), image.size(), "image");
}

Status SignLastBlock(Bytes* image, const PrivateKey& key) {
  if (image->size() < kBlockSize) return Status::InvalidArgument("image shorter than one block");
  uint8_t* last = image->data() + image->size() - kBlockSize;
  size_t trailer = kBlockSize;
  // A compact image's trailer is its last 640 bytes (TrailerOf's rule).
  uint8_t* compact = image->data() + image->size() - kTrailerSize;
  if (std::memcmp(last, kSuperMagic, 8) != 0 && std::memcmp(compact, kSuperMagic, 8) == 0) {
    last = compact;
    trailer = kTrailerSize;
  }
  CX_ASSIGN_OR_RETURN(Ed25519Sig sig,
                      key.Sign(std::span<const uint8_t>(last, sizeof(DiskSuperblock))));
  DiskSignature ds;
  std::memset(&ds, 0, sizeof ds);
  std::memcpy(ds.magic, kSigMagic, 8);
  ds.algorithm.set(kSigEd25519);
  ds.sig_size.set(64);
  const KeyId id = key.id();
  std::memcpy(ds.key_id, id.data(), 32);
  std::memcpy(ds.sig, sig.data(), 64);
  std::memset(last + sizeof(DiskSuperblock), 0, trailer - sizeof(DiskSuperblock));
  std::memcpy(last + kSignatureOffsetInBlock, &ds, sizeof ds);
  return Status::Ok();
}

Result<Bytes> SealRaw(Bytes data, const SuperblockBytes& sb_bytes, const PrivateKey& key) {
  data.resize(std::max<size_t>((data.size() + kBlockSize - 1) / kBlockSize, 2) * kBlockSize, 0);
  DiskSuperblock d;
  std::memcpy(&d, sb_bytes.data(), sizeof d);
  const uint64_t data_blocks = data.size() / kBlockSize;
  std::vector<uint8_t> hash_area;
  Digest root;
  CX_RETURN_IF_ERROR(BuildMerkleTree(
      data_blocks, std::span<const uint8_t>(d.salt, kSaltSize),
      [&data](uint64_t i, uint8_t* buf) {
        std::memcpy(buf, data.data() + i * kBlockSize, kBlockSize);
        return Status::Ok();
      },
      1, &hash_area, &root));
  const TreeGeometry g = TreeGeometry::For(data_blocks);
  d.data_blocks.set(data_blocks);
  d.hash_offset.set(data.size());
  d.hash_blocks.set(g.total_hash_blocks);
  d.tree_levels.set(static_cast<uint32_t>(g.levels.size()));
  d.image_size.set(data.size() + hash_area.size() + kBlockSize);
  std::memcpy(d.root_hash, root.data(), 32);
  Bytes out = std::move(data);
  out.insert(out.end(), hash_area.begin(), hash_area.end());
  out.resize(out.size() + kBlockSize, 0);
  std::memcpy(out.data() + out.size() - kBlockSize, &d, sizeof d);
  CX_RETURN_IF_ERROR(SignLastBlock(&out, key));
  return out;
}

uint64_t Tables::AddString(std::string_view s) {
  const uint64_t off = strings.size();
  strings.insert(strings.end(), s.begin(), s.end());
  return off;
}

std::string Tables::Name(const DiskDirent& d) const {
  const uint64_t off = d.name_offset.get(), len = d.name_len.get();
  if (off > strings.size() || len > strings.size() - off) return "<out of range>";
  return std::string(reinterpret_cast<const char*>(strings.data() + off), len);
}

std::optional<uint32_t> Tables::FindInode(std::string_view path) const {
  uint32_t ino = 1;
  size_t pos = 0;
  while (pos < path.size()) {
    size_t slash = path.find('/', pos);
    if (slash == std::string_view::npos) slash = path.size();
    const std::string_view comp = path.substr(pos, slash - pos);
    pos = slash + 1;
    if (ino < 1 || ino > inodes.size()) return std::nullopt;
    const DiskInode& dir = inodes[ino - 1];
    const uint64_t first = dir.payload.get(), count = dir.payload_count.get();
    bool found = false;
    for (uint64_t k = first; k < first + count && k < dirents.size(); ++k) {
      if (Name(dirents[k]) == comp) {
        ino = dirents[k].inode.get();
        found = true;
        break;
      }
    }
    if (!found) return std::nullopt;
  }
  return ino;
}

std::optional<size_t> Tables::FindDirent(std::string_view path) const {
  const size_t slash = path.rfind('/');
  const std::string_view parent = slash == std::string_view::npos ? "" : path.substr(0, slash);
  const std::string_view name = slash == std::string_view::npos ? path : path.substr(slash + 1);
  auto dir = FindInode(parent);
  if (!dir || *dir > inodes.size()) return std::nullopt;
  const DiskInode& d = inodes[*dir - 1];
  const uint64_t first = d.payload.get(), count = d.payload_count.get();
  for (uint64_t k = first; k < first + count && k < dirents.size(); ++k) {
    if (Name(dirents[k]) == name) return static_cast<size_t>(k);
  }
  return std::nullopt;
}

namespace {

template <typename T>
std::vector<T> Records(std::span<const uint8_t> image, const RegionInfo& r) {
  std::vector<T> out(r.length / sizeof(T));
  if (!out.empty()) std::memcpy(out.data(), image.data() + r.offset, out.size() * sizeof(T));
  return out;
}

template <typename T>
void AppendRegion(Bytes* data, RegionInfo* r, const std::vector<T>& recs) {
  const uint64_t off = (data->size() + 127) & ~uint64_t{127};
  data->resize(off, 0);
  const auto* p = reinterpret_cast<const uint8_t*>(recs.data());
  data->insert(data->end(), p, p + recs.size() * sizeof(T));
  *r = {off, recs.size() * sizeof(T)};
}

}  // namespace

Result<Tables> ReadTables(std::span<const uint8_t> image) {
  CX_ASSIGN_OR_RETURN(SuperblockInfo sb, Peek(image));
  Tables t;
  const auto* R = sb.regions;
  t.manifest = Records<uint8_t>(image, R[kRegionManifest]);
  t.inodes = Records<DiskInode>(image, R[kRegionInodes]);
  t.dirents = Records<DiskDirent>(image, R[kRegionDirents]);
  t.extents = Records<DiskExtent>(image, R[kRegionExtents]);
  t.xattrs = Records<DiskXattr>(image, R[kRegionXattrs]);
  t.strings = Records<uint8_t>(image, R[kRegionStrings]);
  t.frames = Records<DiskFrame>(image, R[kRegionFrames]);
  return t;
}

Result<Bytes> Rebuild(std::span<const uint8_t> image, const Tables& t, const PrivateKey& key,
                      const std::function<void(SuperblockInfo*)>& edit) {
  CX_ASSIGN_OR_RETURN(SuperblockInfo sb, Peek(image));
  auto* R = sb.regions;
  // Keep the header and the data region; every metadata region is re-laid.
  const uint64_t keep =
      std::max<uint64_t>(R[kRegionData].offset + R[kRegionData].length, kBlockSize);
  Bytes data(image.begin(), image.begin() + static_cast<ptrdiff_t>(keep));
  AppendRegion(&data, &R[kRegionFrames], t.frames);
  AppendRegion(&data, &R[kRegionInodes], t.inodes);
  AppendRegion(&data, &R[kRegionDirents], t.dirents);
  AppendRegion(&data, &R[kRegionExtents], t.extents);
  AppendRegion(&data, &R[kRegionXattrs], t.xattrs);
  AppendRegion(&data, &R[kRegionStrings], t.strings);
  AppendRegion(&data, &R[kRegionManifest], t.manifest);
  if (edit) edit(&sb);
  return SealRaw(std::move(data), EncodeSuperblock(sb), key);
}

Result<Bytes> ResignSuperblock(std::span<const uint8_t> image, const PrivateKey& key,
                               const std::function<void(SuperblockInfo*)>& edit) {
  CX_ASSIGN_OR_RETURN(SuperblockInfo sb, Peek(image));
  edit(&sb);
  Bytes out(image.begin(), image.end());
  const auto enc = EncodeSuperblock(sb);
  std::memcpy(out.data() + out.size() - kBlockSize, enc.data(), enc.size());
  CX_RETURN_IF_ERROR(SignLastBlock(&out, key));
  return out;
}

}  // namespace cryptex::surgery
