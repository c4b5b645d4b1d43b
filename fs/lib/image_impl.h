// Internals of Image shared by image.cc and image_verify.cc. Not a public
// header: nothing outside the image library includes it.
#pragma once

#include <sys/stat.h>
#include <unistd.h>
#include <zstd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstring>
#include <iterator>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <type_traits>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "image.h"
#include "lru_cache.h"
#include "output_file.h"
#include "records.h"
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

// Reader limits on what one inode may carry in xattrs, so that a hostile
// (but signed) image cannot make ListXattrs allocate without bound: the
// names list is what listxattr(2) can return at most (XATTR_LIST_MAX), and
// the values of one inode are capped in total.
inline constexpr uint64_t kMaxXattrListBytes = format::kMaxXattrListBytes;
inline constexpr uint64_t kMaxXattrValueBytes = format::kMaxXattrValuesBytes;

// The EntryType a directory entry must carry for an inode.
inline uint8_t EntryTypeFor(const InodeInfo& in) { return format::EntryTypeFor(in.mode, in.flags); }

// What the reader has learnt about directories, for the reference rules of
// docs/FORMAT.md section 9 that it can check lazily:
//  * for each directory inode, the one directory that lists it, and whether
//    its entry list passed Image::Impl::CheckDir. The root has a parent no
//    directory can be (kRootParent), so no entry may list it. A directory
//    reachable from two places (a cycle or a hard-linked directory) fails its
//    second Claim;
//  * for each directory checked, its entry range [first, first + count) of
//    the dirent table. Ranges of different directories never overlap, so no
//    two directories can share (or partly share) entries, and all the
//    directories served hold at most as many entries as the table.
// Memory grows with the directories checked, never with sizes the image
// claims. Thread safe (sharded mutexes for claims, one for ranges).
class DirClaims final {
 public:
  static constexpr uint32_t kRootParent = 0xFFFFFFFFu;
  DirClaims() { shard(1).parent[1] = kRootParent; }
  DirClaims(const DirClaims&) = delete;
  DirClaims& operator=(const DirClaims&) = delete;

  // 0 if no directory has claimed `dir` yet.
  uint32_t ParentOf(uint64_t dir) {
    Shard& s = shard(dir);
    std::lock_guard<std::mutex> lock(s.mu);
    auto it = s.parent.find(dir);
    return it == s.parent.end() ? 0 : it->second;
  }
  // Records that `parent` lists `dir`; false if another directory does.
  bool Claim(uint64_t dir, uint32_t parent) {
    Shard& s = shard(dir);
    std::lock_guard<std::mutex> lock(s.mu);
    auto [it, inserted] = s.parent.emplace(dir, parent);
    return inserted || it->second == parent;
  }
  bool Checked(uint64_t dir) {
    Shard& s = shard(dir);
    std::lock_guard<std::mutex> lock(s.mu);
    return s.checked.count(dir) != 0;
  }
  void SetChecked(uint64_t dir) {
    Shard& s = shard(dir);
    std::lock_guard<std::mutex> lock(s.mu);
    s.checked.insert(dir);
  }

  // Records that directory `dir` owns entries [first, first + count).
  // Returns 0 on success (also when `dir` already owns exactly this range:
  // idempotent), else the inode of a directory whose range overlaps it.
  // An empty range owns nothing and always succeeds.
  // REQUIRES: first + count does not overflow (the range lies in the table).
  uint64_t ClaimRange(uint64_t dir, uint64_t first, uint64_t count) {
    if (count == 0) return 0;
    const uint64_t end = first + count;
    std::lock_guard<std::mutex> lock(ranges_mu_);
    auto next = ranges_.upper_bound(first);  // first range starting after `first`
    if (next != ranges_.begin()) {
      const auto prev = std::prev(next);  // starts at or before `first`
      if (prev->first == first && prev->second.end == end && prev->second.dir == dir) return 0;
      if (prev->second.end > first) return prev->second.dir;
    }
    if (next != ranges_.end() && next->first < end) return next->second.dir;
    ranges_.emplace_hint(next, first, Owned{end, dir});
    return 0;
  }
  // The lowest entry index below `total` that no claimed range holds;
  // `total` if the claimed ranges cover [0, total).
  uint64_t FirstUnclaimedEntry(uint64_t total) {
    std::lock_guard<std::mutex> lock(ranges_mu_);
    uint64_t at = 0;
    for (const auto& [first, owned] : ranges_) {
      if (first > at) break;
      at = owned.end;
    }
    return std::min(at, total);
  }

 private:
  struct Shard {
    std::mutex mu;
    std::unordered_map<uint64_t, uint32_t> parent;  // GUARDED_BY(mu)
    std::unordered_set<uint64_t> checked;           // GUARDED_BY(mu)
  };
  struct Owned {
    uint64_t end;  // one past the range's last entry
    uint64_t dir;  // the directory inode that lists it
  };
  Shard& shard(uint64_t dir) { return shards_[(dir * 0x9E3779B97F4A7C15ull >> 40) % kShards]; }
  static constexpr size_t kShards = 16;
  Shard shards_[kShards];
  std::mutex ranges_mu_;
  std::map<uint64_t, Owned> ranges_;  // first entry -> range; disjoint. GUARDED_BY(ranges_mu_)
};

// Allocator whose value-initialisation is default-initialisation, so that
// resizing a byte vector does not zero memory about to be overwritten.
template <typename T>
struct DefaultInitAllocator : std::allocator<T> {
  template <typename U>
  struct rebind {
    using other = DefaultInitAllocator<U>;
  };
  DefaultInitAllocator() = default;
  template <typename U>
  DefaultInitAllocator(const DefaultInitAllocator<U>&) noexcept {}  // NOLINT
  template <typename U>
  void construct(U* p) noexcept(std::is_nothrow_default_constructible_v<U>) {
    ::new (static_cast<void*>(p)) U;
  }
  template <typename U, typename... Args>
  void construct(U* p, Args&&... args) {
    ::new (static_cast<void*>(p)) U(std::forward<Args>(args)...);
  }
};

}  // namespace image_internal

// Decompressed bytes of one frame (not zero-filled before decompression).
using FrameBytes = std::vector<uint8_t, image_internal::DefaultInitAllocator<uint8_t>>;

struct Image::Impl {
  std::string path;
  int fd = -1;
  SuperblockInfo sb;
  Manifest manifest;
  mutable ImageStats stats;
  std::unique_ptr<VerifiedBlocks> blocks;
  mutable std::unique_ptr<LruCache<std::vector<uint8_t>>> meta_cache;  // data block -> bytes
  mutable std::unique_ptr<LruCache<FrameBytes>> frame_cache;           // frame -> raw bytes
  // A frame being decoded by one thread, that others wait for (GetFrame).
  struct FrameDecode {
    std::mutex mu;
    std::condition_variable cv;
    bool done = false;  // GUARDED_BY(mu)
    Status status;      // GUARDED_BY(mu)
    std::shared_ptr<const FrameBytes> bytes;
  };
  mutable std::mutex decoding_mu;
  mutable std::unordered_map<uint32_t, std::shared_ptr<FrameDecode>>
      decoding;  // GUARDED_BY(decoding_mu)
  uint64_t inode_count = 0, dirent_count = 0, extent_count = 0, xattr_count = 0, frame_count = 0;
  // What CheckDir learnt about directories. Memory grows with the
  // directories actually checked, never with the size the image claims.
  mutable image_internal::DirClaims dirs;

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

  // Compact layout: the packed metadata, verified and decompressed once at
  // open (at most kMaxPackedMetaBytes); the table regions index into it.
  std::vector<uint8_t> packed_meta;

  Status UnpackMeta() {
    const uint64_t off = sb.packed_meta_offset, stored = sb.packed_meta_stored;
    auto bad = [&](const std::string& m) {
      return Status::Corruption(path + ": packed metadata at offset " + std::to_string(off) + ": " +
                                m);
    };
    std::vector<uint8_t> z(stored);
    CX_RETURN_IF_ERROR(ReadMeta(off, stored, z.data()));
    if (stored == sb.packed_meta_raw) {
      packed_meta = std::move(z);
      FromColumns();
      return Status::Ok();
    }
    const unsigned long long claimed = ZSTD_getFrameContentSize(z.data(), z.size());
    if (claimed != sb.packed_meta_raw) {
      return bad("not one zstd frame of " + std::to_string(sb.packed_meta_raw) + " bytes");
    }
    packed_meta.resize(sb.packed_meta_raw);
    const size_t got = ZSTD_decompress(packed_meta.data(), packed_meta.size(), z.data(), z.size());
    if (ZSTD_isError(got) || got != packed_meta.size()) {
      return bad(ZSTD_isError(got) ? std::string("zstd: ") + ZSTD_getErrorName(got)
                                   : "decompressed to " + std::to_string(got) + " bytes, not " +
                                         std::to_string(packed_meta.size()));
    }
    FromColumns();
    return Status::Ok();
  }

  // Tables stored by columns (kIncompatColumns) back to rows, in place.
  void FromColumns() {
    if (!sb.columns()) return;
    for (uint32_t r = 0; r < kRegionCount; ++r) {
      const size_t record = records::RecordSize(static_cast<Region>(r));
      if (record == 0) continue;
      // Inside packed_meta and whole records: DecodeSuperblock checked both.
      const auto& reg = sb.regions[r];
      records::FromColumns(std::span<uint8_t>(packed_meta.data() + reg.offset, reg.length), record);
    }
  }

  // Verified bytes [at, at + len) of region r (bounds checked by the caller).
  Status ReadRegion(Region r, uint64_t at, size_t len, void* out) const {
    const auto& reg = sb.regions[r];
    if (sb.packed(r)) {
      std::memcpy(out, packed_meta.data() + reg.offset + at, len);
      return Status::Ok();
    }
    return ReadMeta(reg.offset + at, len, out);
  }

  template <typename T>
  Status ReadRecord(Region r, uint64_t index, T* out) const {
    const auto& reg = sb.regions[r];
    if (index >= reg.length / sizeof(T)) {
      return Status::Corruption(path + ": " + RegionName(r) + " index " + std::to_string(index) +
                                " out of range");
    }
    return ReadRegion(r, index * sizeof(T), sizeof(T), out);
  }

  Status ReadString(uint64_t off, uint64_t len, std::string* out) const {
    const auto& reg = sb.regions[kRegionStrings];
    if (off > reg.length || len > reg.length - off) {
      return Status::Corruption(path + ": string at " + std::to_string(off) + "+" +
                                std::to_string(len) + " outside the strings region");
    }
    out->resize(len);
    return ReadRegion(kRegionStrings, off, len, out->data());
  }

  Result<InodeInfo> GetInode(uint64_t ino) const {
    if (ino < 1 || ino > inode_count) {
      return Status::NotFound(path + ": no inode " + std::to_string(ino));
    }
    DiskInode d;
    CX_RETURN_IF_ERROR(ReadRecord(kRegionInodes, ino - 1, &d));
    CX_ASSIGN_OR_RETURN(InodeInfo i, records::DecodeInode(d, ino, path));
    auto bad = [&](const std::string& m) {
      return Status::Corruption(path + ": inode " + std::to_string(ino) + ": " + m);
    };
    if ((i.flags & (kInodeWhiteout | kInodeOpaque)) && !(sb.incompat & kIncompatWhiteouts)) {
      return bad("whiteout/opaque flag in an image without the whiteouts feature");
    }
    if (i.is_sourced()) {
      if (!(sb.incompat & kIncompatLowerContent) || sb.kind != kKindPatch || !S_ISREG(i.mode) ||
          ((i.flags & kInodeLowerContent) && (i.flags & kInodeDelta))) {
        return bad("lower-content/delta flags on an inode or image that cannot carry them");
      }
      const auto& strings = sb.regions[kRegionStrings];
      if (i.source_len == 0 || i.source_len > kMaxSourcePathLen ||
          i.source_offset > strings.length || i.source_len > strings.length - i.source_offset) {
        return bad("lower file path out of bounds");
      }
      if ((i.flags & kInodeLowerContent) && i.stored_size != 0) {
        return bad("lower-content inode with stored bytes");
      }
    }
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
        // Written so that a size near 2^64 cannot wrap to a small count.
        const uint64_t stored = i.stored_bytes();
        const uint64_t want = stored == 0 ? 0 : ((stored - 1) >> sb.chunk_log2) + 1;
        if (want != i.payload_count || i.payload > extent_count ||
            i.payload_count > extent_count - i.payload) {
          return bad("extent range does not match the file size");
        }
        break;
      }
      case S_IFLNK:
        if (i.size == 0 || i.size > kMaxSymlinkLen) return bad("symlink length out of range");
        break;
      case S_IFCHR:
      case S_IFBLK:
      case S_IFIFO:
      case S_IFSOCK:
        break;
      default:
        return bad("unknown file type");
    }
    if (ino == 1 && !S_ISDIR(i.mode)) return bad("root is not a directory");
    return i;
  }

  Result<DirEntry> ReadDirent(uint64_t index) const {
    DiskDirent disk;
    CX_RETURN_IF_ERROR(ReadRecord(kRegionDirents, index, &disk));
    const records::Dirent d = records::DecodeDirent(disk);
    DirEntry e;
    e.ino = d.ino;
    e.type = d.type;
    const uint16_t len = d.name_len;
    if (len == 0 || len > kMaxNameLen) {
      return Status::Corruption(path + ": directory entry " + std::to_string(index) +
                                " has an invalid name (length " + std::to_string(len) + ")");
    }
    CX_RETURN_IF_ERROR(ReadString(d.name_offset, len, &e.name));
    if (!image_internal::ValidName(e.name)) {
      return Status::Corruption(path + ": directory entry " + std::to_string(index) +
                                " has an invalid name");
    }
    if (e.type == kTypeWhiteout && !(sb.incompat & kIncompatWhiteouts)) {
      return Status::Corruption(path + ": directory entry " + std::to_string(index) + " (" +
                                e.name +
                                ") is a whiteout in an image without the whiteouts feature");
    }
    if (e.ino < 1 || e.ino > inode_count || e.type < kTypeRegular || e.type > kTypeWhiteout) {
      return Status::Corruption(path + ": directory entry " + std::to_string(index) + " (" +
                                e.name + ") is malformed");
    }
    return e;
  }

  // Checks directory `dir`'s entry list once per image lifetime: its entry
  // range shares no entry with any other directory checked so far (see
  // DirClaims::ClaimRange), names valid and strictly increasing (sorted, no
  // duplicates), inode numbers and types in range, each subdirectory listed
  // by exactly one directory (see DirClaims), and the directory's link count
  // is 2 + its subdirectories. Lookup and ReadDir call it first, so no caller
  // ever sees a duplicate name, a cycle, a directory reachable twice or one
  // entry served in two directories; they check each entry they serve
  // against its inode (CheckEntryType), so a mistyped entry cannot smuggle a
  // directory past the claims.
  // Cost: one pass over the entries and their names (not their inodes, so a
  // corrupt inode block fails only the entries whose inodes it holds), the
  // first time. Since ranges are disjoint, the directories a reader accepts
  // hold together at most the entries the table stores. A directory not yet
  // reached through its parent is first reached from the root
  // (ReachFromRoot), so the claims always form a tree rooted at "/".
  Status CheckDir(const InodeInfo& dir) const {
    if (dirs.Checked(dir.ino)) return Status::Ok();
    if (dir.ino != 1 && dirs.ParentOf(dir.ino) == 0) {
      CX_RETURN_IF_ERROR(ReachFromRoot(dir.ino));
    }
    return CheckEntries(dir, nullptr);
  }

  // "[first, first + count) at offset N": entries of the dirent table.
  // Appends to a string rather than starting with `"[" + std::to_string()`:
  // GCC 12 at -O3 reports a false -Wrestrict there (GCC bug 105329).
  std::string DirentSpan(uint64_t first, uint64_t count) const {
    std::string span = "[";
    span += std::to_string(first) + ", " + std::to_string(first + count) + ") at " +
            MetaOffset(kRegionDirents, first * sizeof(DiskDirent));
    return span;
  }

  // Where byte `at` of table region r lies, for messages: a file offset, or
  // (compact layout) an offset into the packed metadata.
  std::string MetaOffset(Region r, uint64_t at) const {
    return (sb.packed(r) ? "packed metadata offset " : "offset ") +
           std::to_string(sb.regions[r].offset + at);
  }

  // One pass of CheckDir over `dir`'s entries; appends subdirectories to
  // *subdirs when given. Idempotent.
  Status CheckEntries(const InodeInfo& dir, std::vector<uint64_t>* subdirs) const {
    const std::string where = path + ": directory inode " + std::to_string(dir.ino);
    auto bad = [&](uint64_t k, const std::string& name, const std::string& m) {
      return Status::Corruption(where + ", entry " + std::to_string(k) + " (\"" + name +
                                "\"): " + m);
    };
    if (const uint64_t other = dirs.ClaimRange(dir.ino, dir.payload, dir.payload_count)) {
      return Status::Corruption(where + ": entries " + DirentSpan(dir.payload, dir.payload_count) +
                                " overlap the entries of directory inode " + std::to_string(other));
    }
    const uint32_t me = static_cast<uint32_t>(dir.ino);
    std::unordered_set<uint32_t> mine;  // subdirectories claimed in this pass
    std::string prev;
    for (uint64_t k = 0; k < dir.payload_count; ++k) {
      CX_ASSIGN_OR_RETURN(DirEntry e, ReadDirent(dir.payload + k));
      if (k > 0 && !(prev < e.name)) return bad(k, e.name, "entries not sorted or duplicated");
      if (e.type == kTypeDirectory) {
        const auto c = static_cast<uint32_t>(e.ino);
        if (!dirs.Claim(c, me) || !mine.insert(c).second) {
          return bad(k, e.name,
                     "directory inode " + std::to_string(c) +
                         " is reachable from two places (cycle or hard-linked directory)");
        }
        if (subdirs != nullptr) subdirs->push_back(c);
      }
      prev = std::move(e.name);
    }
    if (dir.nlink != 2 + uint64_t{mine.size()}) {
      return Status::Corruption(where + ": link count " + std::to_string(dir.nlink) +
                                ", expected " + std::to_string(2 + uint64_t{mine.size()}) +
                                " (2 + its " + std::to_string(mine.size()) + " subdirectories)");
    }
    dirs.SetChecked(dir.ino);
    return Status::Ok();
  }

  // An entry about to be served must carry its inode's type: a directory
  // inode is only ever reached through a directory entry (hence a claim).
  // A non-directory it names has a link count of at least 1 (this entry).
  Status CheckEntryType(const DirEntry& e) const {
    CX_ASSIGN_OR_RETURN(InodeInfo child, GetInode(e.ino));
    if (e.type != image_internal::EntryTypeFor(child)) {
      return Status::Corruption(path + ": directory entry \"" + e.name +
                                "\": entry type disagrees with inode " + std::to_string(e.ino));
    }
    if (!child.is_dir() && child.nlink == 0) {
      return Status::Corruption(path + ": directory entry \"" + e.name + "\" names inode " +
                                std::to_string(e.ino) + ", whose link count is 0");
    }
    return Status::Ok();
  }

  // Checks directories breadth first from the root until `target` has been
  // claimed by its parent. kCorruption if it is not reachable at all.
  Status ReachFromRoot(uint64_t target) const {
    std::vector<uint64_t> queue{1};
    for (size_t i = 0; i < queue.size(); ++i) {
      CX_ASSIGN_OR_RETURN(InodeInfo d, GetInode(queue[i]));
      if (!d.is_dir()) continue;  // a mistyped entry; refused when served
      CX_RETURN_IF_ERROR(CheckEntries(d, &queue));
      if (dirs.ParentOf(target) != 0) return Status::Ok();
    }
    return Status::Corruption(path + ": directory inode " + std::to_string(target) +
                              " is not reachable from the root");
  }

  // Image::VerifyAll's last step (image_verify.cc): given, per inode number,
  // how many entries of the walk from the root name it and the first such
  // entry, checks the counting rules of FORMAT.md section 9.
  Status CheckReferences(const std::vector<uint32_t>& names,
                         const std::vector<uint64_t>& first_entry) const;

  // The xattr records of inode `in` with their names, checked: lengths in
  // range, names NUL-free, sorted and unique, totals within the reader limits.
  struct XattrName {
    std::string name;
    uint64_t value_offset;
    uint32_t value_len;
  };
  Result<std::vector<XattrName>> ReadXattrNames(const InodeInfo& in) const {
    auto bad = [&](const std::string& msg) {
      return Status::Corruption(path + ": inode " + std::to_string(in.ino) + ": " + msg);
    };
    std::vector<XattrName> out;
    uint64_t list_bytes = 0, value_bytes = 0;
    for (uint64_t k = 0; k < in.xattr_count; ++k) {
      DiskXattr disk;
      CX_RETURN_IF_ERROR(ReadRecord(kRegionXattrs, in.xattr_index + k, &disk));
      const records::XattrRef x = records::DecodeXattr(disk);
      const uint32_t nl = x.name_len, vl = x.value_len;
      if (nl == 0 || nl > kMaxXattrNameLen || vl > kMaxXattrValueLen) {
        return bad("xattr lengths out of range");
      }
      list_bytes += nl + 1;
      value_bytes += vl;
      if (list_bytes > image_internal::kMaxXattrListBytes ||
          value_bytes > image_internal::kMaxXattrValueBytes) {
        return bad("xattrs exceed the reader limits (" +
                   std::to_string(image_internal::kMaxXattrListBytes) + " bytes of names, " +
                   std::to_string(image_internal::kMaxXattrValueBytes) + " bytes of values)");
      }
      XattrName xn{std::string(), x.value_offset, vl};
      CX_RETURN_IF_ERROR(ReadString(x.name_offset, nl, &xn.name));
      if (xn.name.find('\0') != std::string::npos) return bad("NUL in xattr name");
      if (!out.empty() && !(out.back().name < xn.name)) {
        return bad("xattrs not sorted by name or duplicated (" + xn.name + ")");
      }
      out.push_back(std::move(xn));
    }
    return out;
  }

  // Decompressed bytes of frame `index`, verified on the way in. A frame
  // that another thread is decoding is waited for, not decoded again: the
  // pieces of one large read decode in parallel, and a patched file's
  // adjacent pieces read their lower bytes from the same frames.
  Result<std::shared_ptr<const FrameBytes>> GetFrame(uint32_t index) const {
    if (auto hit = frame_cache->Get(index)) {
      stats.frame_cache_hits.fetch_add(1, std::memory_order_relaxed);
      return hit;
    }
    std::shared_ptr<FrameDecode> job;
    bool mine = false;
    {
      std::lock_guard<std::mutex> lock(decoding_mu);
      // Decoded since the lookup above: the decoder caches a frame before it
      // leaves `decoding`.
      if (auto hit = frame_cache->Get(index)) {
        stats.frame_cache_hits.fetch_add(1, std::memory_order_relaxed);
        return hit;
      }
      auto [it, fresh] = decoding.try_emplace(index);
      if (fresh) {
        it->second = std::make_shared<FrameDecode>();
        mine = true;
      }
      job = it->second;
    }
    if (!mine) {
      std::unique_lock<std::mutex> lock(job->mu);
      job->cv.wait(lock, [&] { return job->done; });
      if (!job->status.ok()) return job->status;
      stats.frame_cache_hits.fetch_add(1, std::memory_order_relaxed);
      return job->bytes;
    }
    stats.frame_cache_misses.fetch_add(1, std::memory_order_relaxed);
    std::shared_ptr<FrameBytes> out;
    Status st = DecodeFrame(index, [&](uint32_t raw) {
      out = std::make_shared<FrameBytes>(raw);
      return out->data();
    });
    if (st.ok()) frame_cache->Put(index, out, out->size() + 64);
    {
      std::lock_guard<std::mutex> lock(decoding_mu);
      decoding.erase(index);
    }
    {
      std::lock_guard<std::mutex> lock(job->mu);
      job->done = true;
      job->status = st;
      if (st.ok()) job->bytes = out;
    }
    job->cv.notify_all();
    if (!st.ok()) return st;
    return std::shared_ptr<const FrameBytes>(std::move(out));
  }

  // raw_size of frame `index`, 0 if its descriptor cannot be read (the decode
  // then reports why).
  uint64_t FrameRawSize(uint32_t index) const {
    DiskFrame f;
    return ReadRecord(kRegionFrames, index, &f).ok() ? records::DecodeFrame(f).raw_size : 0;
  }

  // Checks frame `index`'s descriptor, reads and verifies the blocks it
  // covers, and decodes it into dst(raw_size), which must return room for
  // raw_size bytes. The bytes written are the frame's, or the call fails.
  template <typename Dst>
  Status DecodeFrame(uint32_t index, Dst&& dst) const {
    DiskFrame disk;
    CX_RETURN_IF_ERROR(ReadRecord(kRegionFrames, index, &disk));
    const records::Frame f = records::DecodeFrame(disk);
    const uint64_t off = f.offset;
    const uint32_t stored = f.stored_size, raw = f.raw_size;
    const auto& data = sb.regions[kRegionData];
    if (raw == 0 || raw > sb.chunk_size() || stored == 0 || stored > raw || off < data.offset ||
        off > data.offset + data.length || stored > data.offset + data.length - off) {
      return Status::Corruption(path + ": frame " + std::to_string(index) +
                                " descriptor is out of bounds (offset " + std::to_string(off) +
                                ", stored " + std::to_string(stored) + ", raw " +
                                std::to_string(raw) + ")");
    }
    if (stored != raw && !(sb.incompat & kIncompatZstd)) {
      return Status::Corruption(path + ": frame " + std::to_string(index) +
                                " is compressed but the image lacks the zstd feature");
    }
    // Frames are laid out in index order without overlap: a frame's bytes
    // belong to it alone (no aliasing of one stored range as many frames).
    if (index > 0) {
      DiskFrame prev_disk;
      CX_RETURN_IF_ERROR(ReadRecord(kRegionFrames, index - 1, &prev_disk));
      const records::Frame prev = records::DecodeFrame(prev_disk);
      const uint64_t prev_off = prev.offset;
      if (prev_off > off || prev.stored_size > off - prev_off) {
        return Status::Corruption(path + ": frame " + std::to_string(index) + " at offset " +
                                  std::to_string(off) + " overlaps frame " +
                                  std::to_string(index - 1) + " or is out of order");
      }
    }
    // Read and verify every block the frame overlaps.
    const uint64_t first = off / kBlockSize;
    const uint64_t last = (off + stored - 1) / kBlockSize;
    thread_local std::vector<uint8_t> buf;
    buf.resize((last - first + 1) * kBlockSize);
    CX_RETURN_IF_ERROR(blocks->Read(first, last - first + 1, buf.data()));
    const uint8_t* src = buf.data() + (off - first * kBlockSize);
    uint8_t* const out = dst(raw);
    if (stored == raw) {
      std::memcpy(out, src, raw);
    } else {
      thread_local std::unique_ptr<ZSTD_DCtx, image_internal::DCtxDeleter> dctx(ZSTD_createDCtx());
      size_t n = ZSTD_decompressDCtx(dctx.get(), out, raw, src, stored);
      if (ZSTD_isError(n) || n != raw) {
        stats.decompress_failures.fetch_add(1, std::memory_order_relaxed);
        return Status::Corruption(
            path + ": frame " + std::to_string(index) + " at offset " + std::to_string(off) +
            " does not decompress to " + std::to_string(raw) + " bytes" +
            (ZSTD_isError(n) ? std::string(": ") + ZSTD_getErrorName(n) : std::string()));
      }
    }
    return Status::Ok();
  }

  // Reads the bytes the image stores for `in` (InodeInfo::stored_bytes()):
  // a plain file's content, or a delta inode's delta.
  Result<size_t> Read(const InodeInfo& in, uint64_t offset, std::span<uint8_t> buf) const {
    if (!in.is_reg())
      return Status::IsDirectory(path + ": inode " + std::to_string(in.ino) +
                                 " is not a regular file");
    const uint64_t size = in.stored_bytes();
    if (offset >= size) return size_t{0};
    size_t want = static_cast<size_t>(std::min<uint64_t>(buf.size(), size - offset));
    size_t done = 0;
    const uint64_t chunk = sb.chunk_size();
    while (done < want) {
      const uint64_t pos = offset + done;
      const uint64_t ci = pos >> sb.chunk_log2;
      const uint64_t in_chunk = pos - ci * chunk;
      const uint64_t chunk_len = std::min<uint64_t>(chunk, size - ci * chunk);
      const size_t n = static_cast<size_t>(std::min<uint64_t>(want - done, chunk_len - in_chunk));
      if (ci >= in.payload_count) {
        return Status::Corruption(path + ": inode " + std::to_string(in.ino) + ": chunk " +
                                  std::to_string(ci) + " has no extent");
      }
      DiskExtent disk;
      CX_RETURN_IF_ERROR(ReadRecord(kRegionExtents, in.payload + ci, &disk));
      const records::Extent e = records::DecodeExtent(disk);
      if (e.frame == kHoleFrame) {
        std::memset(buf.data() + done, 0, n);
      } else if (in_chunk == 0 && n == chunk_len && e.offset == 0 &&
                 !frame_cache->Contains(e.frame) && FrameRawSize(e.frame) == chunk_len) {
        // The whole chunk is wanted and its frame holds exactly that chunk
        // (every chunk of a large file): decode straight into the caller's
        // buffer, skipping the frame cache and a copy; the caller keeps what
        // it reads (cryptexfs: the kernel page cache).
        CX_RETURN_IF_ERROR(DecodeFrame(e.frame, [&](uint32_t) { return buf.data() + done; }));
      } else {
        CX_ASSIGN_OR_RETURN(auto frame, GetFrame(e.frame));
        const uint64_t fo = e.offset;
        if (fo > frame->size() || chunk_len > frame->size() - fo) {
          return Status::Corruption(path + ": inode " + std::to_string(in.ino) + " extent " +
                                    std::to_string(ci) + " overruns frame " +
                                    std::to_string(e.frame));
        }
        std::memcpy(buf.data() + done, frame->data() + fo + in_chunk, n);
      }
      done += n;
    }
    return done;
  }
};

}  // namespace cryptex
