// Internals of Image shared by image.cc and image_verify.cc. Not a public
// header: nothing outside the image library includes it.
#pragma once

#include <sys/stat.h>
#include <unistd.h>
#include <zstd.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "image.h"
#include "lru_cache.h"
#include "output_file.h"
#include "verified_blocks.h"

namespace cryptex {

using namespace format;

namespace image_internal {

struct DCtxDeleter {
  void operator()(ZSTD_DCtx* d) const { ZSTD_freeDCtx(d); }
};

inline bool ValidName(std::string_view n) {
  if (n.empty() || n.size() > kMaxNameLen || n == "." || n == "..") return false;
  return n.find('/') == std::string_view::npos && n.find('\0') == std::string_view::npos;
}

}  // namespace image_internal

struct Image::Impl {
  std::string path;
  int fd = -1;
  SuperblockInfo sb;
  Manifest manifest;
  mutable ImageStats stats;
  std::unique_ptr<VerifiedBlocks> blocks;
  mutable std::unique_ptr<LruCache<std::vector<uint8_t>>> meta_cache;   // data block -> bytes
  mutable std::unique_ptr<LruCache<std::vector<uint8_t>>> frame_cache;  // frame -> raw bytes
  uint64_t inode_count = 0, dirent_count = 0, extent_count = 0, xattr_count = 0,
           frame_count = 0;

  ~Impl() {
    if (fd >= 0) close(fd);
  }

  // Verified bytes [offset, offset + len) of the data area.
  Status ReadMeta(uint64_t offset, size_t len, void* out) const {
    auto* dst = static_cast<uint8_t*>(out);
    while (len > 0) {
      const uint64_t b = offset / kBlockSize;
      const size_t in = offset % kBlockSize;
      const size_t n = std::min<size_t>(len, kBlockSize - in);
      auto blk = meta_cache->Get(b);
      if (!blk) {
        auto fresh = std::make_shared<std::vector<uint8_t>>(kBlockSize);
        CX_RETURN_IF_ERROR(blocks->Read(b, 1, fresh->data()));
        meta_cache->Put(b, fresh, kBlockSize + 64);
        blk = std::move(fresh);
      }
      std::memcpy(dst, blk->data() + in, n);
      dst += n;
      offset += n;
      len -= n;
    }
    return Status::Ok();
  }

  template <typename T>
  Status ReadRecord(Region r, uint64_t index, T* out) const {
    const auto& reg = sb.regions[r];
    if (index >= reg.length / sizeof(T)) {
      return Status::Corruption(path + ": " + RegionName(r) + " index " + std::to_string(index) +
                                " out of range");
    }
    return ReadMeta(reg.offset + index * sizeof(T), sizeof(T), out);
  }

  Status ReadString(uint64_t off, uint64_t len, std::string* out) const {
    const auto& reg = sb.regions[kRegionStrings];
    if (off > reg.length || len > reg.length - off) {
      return Status::Corruption(path + ": string at " + std::to_string(off) + "+" +
                                std::to_string(len) + " outside the strings region");
    }
    out->resize(len);
    return ReadMeta(reg.offset + off, len, out->data());
  }

  Result<InodeInfo> GetInode(uint64_t ino) const {
    if (ino < 1 || ino > inode_count) {
      return Status::NotFound(path + ": no inode " + std::to_string(ino));
    }
    DiskInode d;
    CX_RETURN_IF_ERROR(ReadRecord(kRegionInodes, ino - 1, &d));
    InodeInfo i;
    i.ino = ino;
    i.mode = d.mode.get();
    i.uid = d.uid.get();
    i.gid = d.gid.get();
    i.nlink = d.nlink.get();
    i.size = d.size.get();
    i.mtime_sec = static_cast<int64_t>(d.mtime_sec.get());
    i.mtime_nsec = d.mtime_nsec.get();
    i.flags = d.flags.get();
    i.rdev = d.rdev.get();
    i.payload = d.payload.get();
    i.payload_count = d.payload_count.get();
    i.xattr_count = d.xattr_count.get();
    i.xattr_index = d.xattr_index.get();
    std::memcpy(i.digest.data(), d.digest, 32);
    auto bad = [&](const std::string& m) {
      return Status::Corruption(path + ": inode " + std::to_string(ino) + ": " + m);
    };
    if (i.mtime_nsec >= 1000000000u) return bad("nanoseconds out of range");
    if (i.flags & ~kInodeFlagsKnown) return bad("unknown flags");
    if (i.xattr_index > xattr_count || i.xattr_count > xattr_count - i.xattr_index) {
      return bad("xattr range out of bounds");
    }
    switch (i.mode & S_IFMT) {
      case S_IFDIR:
        if (i.payload > dirent_count || i.payload_count > dirent_count - i.payload ||
            i.size != i.payload_count) {
          return bad("directory entry range out of bounds");
        }
        break;
      case S_IFREG: {
        const uint64_t want = (i.size + sb.chunk_size() - 1) >> sb.chunk_log2;
        if (want != i.payload_count || i.payload > extent_count ||
            i.payload_count > extent_count - i.payload) {
          return bad("extent range does not match the file size");
        }
        break;
      }
      case S_IFLNK:
        if (i.size == 0 || i.size > kMaxSymlinkLen) return bad("symlink length out of range");
        break;
      case S_IFCHR: case S_IFBLK: case S_IFIFO: case S_IFSOCK:
        break;
      default:
        return bad("unknown file type");
    }
    if (ino == 1 && !S_ISDIR(i.mode)) return bad("root is not a directory");
    return i;
  }

  Result<DirEntry> ReadDirent(uint64_t index) const {
    DiskDirent d;
    CX_RETURN_IF_ERROR(ReadRecord(kRegionDirents, index, &d));
    DirEntry e;
    e.ino = d.inode.get();
    e.type = d.type;
    const uint16_t len = d.name_len.get();
    CX_RETURN_IF_ERROR(ReadString(d.name_offset.get(), len, &e.name));
    if (!image_internal::ValidName(e.name)) {
      return Status::Corruption(path + ": directory entry " + std::to_string(index) +
                                " has an invalid name");
    }
    if (e.ino < 1 || e.ino > inode_count || e.type < kTypeRegular || e.type > kTypeWhiteout) {
      return Status::Corruption(path + ": directory entry " + std::to_string(index) + " (" +
                                e.name + ") is malformed");
    }
    return e;
  }

  // Decompressed bytes of frame `index`, verified on the way in.
  Result<std::shared_ptr<const std::vector<uint8_t>>> GetFrame(uint32_t index) const {
    if (auto hit = frame_cache->Get(index)) {
      stats.frame_cache_hits.fetch_add(1, std::memory_order_relaxed);
      return hit;
    }
    stats.frame_cache_misses.fetch_add(1, std::memory_order_relaxed);
    DiskFrame f;
    CX_RETURN_IF_ERROR(ReadRecord(kRegionFrames, index, &f));
    const uint64_t off = f.offset.get();
    const uint32_t stored = f.stored_size.get(), raw = f.raw_size.get();
    const auto& data = sb.regions[kRegionData];
    if (raw == 0 || raw > sb.chunk_size() || stored == 0 || stored > raw ||
        off < data.offset || off > data.offset + data.length ||
        stored > data.offset + data.length - off) {
      return Status::Corruption(path + ": frame " + std::to_string(index) +
                                " descriptor is out of bounds");
    }
    // Read and verify every block the frame overlaps.
    const uint64_t first = off / kBlockSize;
    const uint64_t last = (off + stored - 1) / kBlockSize;
    thread_local std::vector<uint8_t> buf;
    buf.resize((last - first + 1) * kBlockSize);
    CX_RETURN_IF_ERROR(blocks->Read(first, last - first + 1, buf.data()));
    const uint8_t* src = buf.data() + (off - first * kBlockSize);
    auto out = std::make_shared<std::vector<uint8_t>>(raw);
    if (stored == raw) {
      std::memcpy(out->data(), src, raw);
    } else {
      thread_local std::unique_ptr<ZSTD_DCtx, image_internal::DCtxDeleter> dctx(ZSTD_createDCtx());
      size_t n = ZSTD_decompressDCtx(dctx.get(), out->data(), raw, src, stored);
      if (ZSTD_isError(n) || n != raw) {
        stats.decompress_failures.fetch_add(1, std::memory_order_relaxed);
        return Status::Corruption(path + ": frame " + std::to_string(index) + " at offset " +
                                  std::to_string(off) + " does not decompress to " +
                                  std::to_string(raw) + " bytes" +
                                  (ZSTD_isError(n) ? std::string(": ") + ZSTD_getErrorName(n)
                                                   : std::string()));
      }
    }
    frame_cache->Put(index, out, raw + 64);
    return std::shared_ptr<const std::vector<uint8_t>>(std::move(out));
  }

  Result<size_t> Read(const InodeInfo& in, uint64_t offset, std::span<uint8_t> buf) const {
    if (!in.is_reg()) return Status::IsDirectory(path + ": inode " + std::to_string(in.ino) +
                                                 " is not a regular file");
    if (offset >= in.size) return size_t{0};
    size_t want = static_cast<size_t>(std::min<uint64_t>(buf.size(), in.size - offset));
    size_t done = 0;
    const uint64_t chunk = sb.chunk_size();
    while (done < want) {
      const uint64_t pos = offset + done;
      const uint64_t ci = pos >> sb.chunk_log2;
      const uint64_t in_chunk = pos - ci * chunk;
      const uint64_t chunk_len = std::min<uint64_t>(chunk, in.size - ci * chunk);
      const size_t n = static_cast<size_t>(std::min<uint64_t>(want - done, chunk_len - in_chunk));
      DiskExtent e;
      CX_RETURN_IF_ERROR(ReadRecord(kRegionExtents, in.payload + ci, &e));
      if (e.frame.get() == kHoleFrame) {
        std::memset(buf.data() + done, 0, n);
      } else {
        CX_ASSIGN_OR_RETURN(auto frame, GetFrame(e.frame.get()));
        const uint64_t fo = e.offset.get();
        if (fo > frame->size() || chunk_len > frame->size() - fo) {
          return Status::Corruption(path + ": inode " + std::to_string(in.ino) + " extent " +
                                    std::to_string(ci) + " overruns frame " +
                                    std::to_string(e.frame.get()));
        }
        std::memcpy(buf.data() + done, frame->data() + fo + in_chunk, n);
      }
      done += n;
    }
    return done;
  }
};

}  // namespace cryptex
