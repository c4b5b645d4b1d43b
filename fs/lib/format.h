// Every on-disk structure of the cryptex image format, version 1.
//
// The prose specification is docs/FORMAT.md; keep the two in step. All
// multi-byte integers are little-endian and are held in Le16/Le32/Le64, byte
// arrays with get()/set(), so structs have alignment 1, no padding, and never
// depend on host byte order. Image bytes are never cast to these structs:
// readers memcpy verified bytes into a struct and then validate every field
// (Impl::ReadRecord in image_impl.h; the superblock in superblock.cc).
#pragma once

#include <sys/stat.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>

namespace cryptex::format {

template <typename T>
struct LeInt {
  static_assert(std::is_unsigned_v<T>);
  uint8_t b[sizeof(T)];
  T get() const {
    T v = 0;
    for (size_t i = 0; i < sizeof(T); ++i) v |= static_cast<T>(b[i]) << (8 * i);
    return v;
  }
  void set(T v) {
    for (size_t i = 0; i < sizeof(T); ++i) b[i] = static_cast<uint8_t>(v >> (8 * i));
  }
};
using Le16 = LeInt<uint16_t>;
using Le32 = LeInt<uint32_t>;
using Le64 = LeInt<uint64_t>;
static_assert(sizeof(Le64) == 8 && alignof(Le64) == 1);

inline uint32_t LoadLE32(const uint8_t* p) {
  Le32 v;
  std::memcpy(&v, p, 4);
  return v.get();
}
inline uint64_t LoadLE64(const uint8_t* p) {
  Le64 v;
  std::memcpy(&v, p, 8);
  return v.get();
}

// ---- constants -------------------------------------------------------------

inline constexpr uint32_t kFormatVersion = 1;
inline constexpr uint32_t kBlockSizeLog2 = 12;
inline constexpr uint32_t kBlockSize = 1u << kBlockSizeLog2;  // data and hash blocks
inline constexpr uint32_t kHashSize = 32;                     // SHA-256
inline constexpr uint32_t kSaltSize = 32;
inline constexpr uint32_t kMinChunkLog2 = 12;      // 4 KiB
inline constexpr uint32_t kMaxChunkLog2 = 20;      // 1 MiB
inline constexpr uint32_t kDefaultChunkLog2 = 17;  // 128 KiB
inline constexpr uint32_t kMaxNameLen = 255;
inline constexpr uint32_t kMaxSymlinkLen = 4095;
inline constexpr uint32_t kMaxXattrNameLen = 255;
inline constexpr uint32_t kMaxXattrValueLen = 65536;
// Per inode: sum of (name length + 1) -- the kernel's XATTR_LIST_MAX -- and
// sum of value lengths. Readers refuse more; builders never write more.
inline constexpr uint64_t kMaxXattrListBytes = 65536;
inline constexpr uint64_t kMaxXattrValuesBytes = 8u << 20;
// Deepest directory nesting (the root is depth 0). The builder refuses deeper
// source trees, and every reader and walker (verify, extract, the mount)
// refuses or fails cleanly on deeper images. One number for all of them.
inline constexpr uint32_t kMaxDirDepth = 4096;
// Manifest region (docs/FORMAT.md section 3): readers refuse a larger region,
// more records, or a string record longer than kMaxManifestStringLen bytes;
// the builder refuses to write any of them (Manifest::Validate).
inline constexpr uint64_t kMaxManifestBytes = 1u << 20;
inline constexpr uint32_t kMaxManifestRecords = 4096;
inline constexpr uint32_t kMaxManifestStringLen = 4096;

// Image kinds.
inline constexpr uint32_t kKindBase = 1;
inline constexpr uint32_t kKindPatch = 2;

// Hash / signature algorithms.
inline constexpr uint32_t kHashSha256 = 1;
inline constexpr uint32_t kSigEd25519 = 1;

// Incompatible features: a reader must refuse an image that sets a bit it does
// not know. Compatible features may be ignored.
inline constexpr uint64_t kIncompatZstd = 1ull << 0;       // frames may be zstd
inline constexpr uint64_t kIncompatWhiteouts = 1ull << 1;  // whiteout entries/opaque dirs
// Patch images: regular files whose content comes from the lower state
// (kInodeLowerContent, kInodeDelta). Such an image is only readable on top of
// the lower state it binds to (docs/FORMAT.md section 12).
inline constexpr uint64_t kIncompatLowerContent = 1ull << 2;
// Compact layout (docs/FORMAT.md section 13), what mkpatch writes: a 64-byte
// header instead of a header block, the inode, dirent, extent, xattr, string
// and frame tables packed into one zstd frame (the packed metadata, located
// by DiskSuperblock::packed_meta_*; those regions' offsets are offsets into
// its decompressed bytes), and the superblock and signature as the last 640
// bytes of the file instead of a whole block.
inline constexpr uint64_t kIncompatCompact = 1ull << 3;
// Compact layout only: in the packed metadata, each table of fixed-size
// records (inodes, dirents, extents, xattrs, frames) is stored by columns:
// byte j of record i at j * count + i (docs/FORMAT.md section 13). Equal
// fields of neighbouring records then lie side by side, which zstd packs
// better and faster.
inline constexpr uint64_t kIncompatColumns = 1ull << 4;
inline constexpr uint64_t kIncompatKnown = kIncompatZstd | kIncompatWhiteouts |
                                           kIncompatLowerContent | kIncompatCompact |
                                           kIncompatColumns;
inline constexpr uint64_t kCompatDedup = 1ull << 0;  // informational
inline constexpr uint64_t kCompatKnown = kCompatDedup;

// ---- header block (offset 0, 4096 bytes, covered by the Merkle tree) --------

inline constexpr uint8_t kHeaderMagic[8] = {'C', 'R', 'Y', 'P', 'T', 'E', 'X', 0};

// Identifies the file (for file(1) and humans); everything that matters is in
// the superblock at the end. The rest of block 0 is zero.
struct DiskHeader {
  uint8_t magic[8];     // kHeaderMagic
  Le32 format_version;  // kFormatVersion
  Le32 reserved0;
  uint8_t reserved[48];  // zero
};
static_assert(sizeof(DiskHeader) == 64);

// ---- superblock (last 4096 bytes of the file) -------------------------------

// Region indices into DiskSuperblock::regions.
enum Region : uint32_t {
  kRegionManifest = 0,  // TLV manifest
  kRegionInodes,        // DiskInode[]
  kRegionDirents,       // DiskDirent[], each directory's entries contiguous, sorted
  kRegionExtents,       // DiskExtent[], each file's extents contiguous
  kRegionXattrs,        // DiskXattr[], each inode's xattrs contiguous, sorted by name
  kRegionStrings,       // names, symlink targets, xattr names and values
  kRegionFrames,        // DiskFrame[]
  kRegionData,          // compressed frames
  kRegionCount,
};
const char* RegionName(uint32_t r);

struct DiskRegion {
  Le64 offset;  // absolute file offset; region lies inside [0, hash_offset)
  Le64 length;  // bytes
};
static_assert(sizeof(DiskRegion) == 16);

inline constexpr uint8_t kSuperMagic[8] = {'C', 'X', 'S', 'U', 'P', 'E', 'R', '1'};

// The signed part of the superblock. Its 512 bytes are the exact message of
// the signature that follows it.
struct DiskSuperblock {
  uint8_t magic[8];                  // kSuperMagic
  Le32 format_version;               // kFormatVersion
  Le32 superblock_size;              // sizeof(DiskSuperblock) == 512
  Le64 compat_features;              // kCompat*
  Le64 incompat_features;            // kIncompat*; unknown bits => refuse
  Le32 kind;                         // kKindBase | kKindPatch
  Le32 block_size_log2;              // 12
  Le32 chunk_size_log2;              // file chunking granularity, [12, 20]
  Le32 hash_algorithm;               // kHashSha256
  Le64 image_size;                   // whole file, bytes (== hash_offset + hash_size + 4096)
  Le64 data_blocks;                  // blocks covered by the tree: [0, data_blocks * 4096)
  Le64 hash_offset;                  // == data_blocks * 4096; dm-verity hash area, top level first
  Le64 hash_blocks;                  // hash area length in blocks
  Le32 salt_size;                    // kSaltSize
  Le32 tree_levels;                  // number of levels in the hash area
  uint8_t salt[32];                  // dm-verity salt (prepended to every hashed block)
  uint8_t root_hash[32];             // SHA-256(salt || top hash block)
  DiskRegion regions[kRegionCount];  // 8 * 16 = 128 bytes
  Le64 root_inode;                   // inode number of "/" (== 1)
  Le64 created_at;                   // seconds since the epoch (build --epoch)
  // Compact layout only (kIncompatCompact), else zero: where the packed
  // metadata lies in the verified area, its stored bytes (a zstd frame, or
  // the bytes as is when stored == raw) and its decompressed size.
  Le64 packed_meta_offset;
  Le64 packed_meta_stored;
  Le64 packed_meta_raw;
  uint8_t reserved[192];  // zero
};
static_assert(sizeof(DiskSuperblock) == 512);

inline constexpr uint8_t kSigMagic[8] = {'C', 'X', 'S', 'I', 'G', 'N', '0', '1'};

// Follows the superblock inside the last block (at offset 512 of it).
struct DiskSignature {
  uint8_t magic[8];    // kSigMagic
  Le32 algorithm;      // kSigEd25519
  Le32 sig_size;       // 64
  uint8_t key_id[32];  // SHA-256 of the raw 32-byte Ed25519 public key
  uint8_t sig[64];     // Ed25519 over the 512 superblock bytes
  uint8_t reserved[16];
};
static_assert(sizeof(DiskSignature) == 128);
inline constexpr uint32_t kSignatureOffsetInBlock = 512;
// The superblock and the signature block: the first 640 bytes of the last
// block (classic layout), or the last 640 bytes of the file (compact layout).
inline constexpr uint32_t kTrailerSize = kSignatureOffsetInBlock + sizeof(DiskSignature);
static_assert(kTrailerSize == 640);
// Compact layout: the header is DiskHeader alone; the verified area holds at
// least one block; the packed metadata decompresses to at most this much.
inline constexpr uint64_t kMaxPackedMetaBytes = 64ull << 20;
// The smallest file of either layout (compact: one data block, which is its
// own tree's root, and the trailer); readers refuse smaller files unread.
inline constexpr uint64_t kMinImageSize = kBlockSize + kTrailerSize;

// ---- manifest region --------------------------------------------------------

inline constexpr uint8_t kManifestMagic[8] = {'C', 'X', 'M', 'A', 'N', 'I', 'F', '1'};

struct DiskManifestHeader {
  uint8_t magic[8];   // kManifestMagic
  Le32 record_count;  // number of DiskTlv records that follow
  Le32 reserved;
};
static_assert(sizeof(DiskManifestHeader) == 16);

// A record: header then `length` value bytes, then zero padding to 8 bytes.
struct DiskTlv {
  Le16 tag;     // kTag*
  Le16 flags;   // kTlvCritical: a reader that does not know the tag must refuse
  Le32 length;  // value bytes
};
static_assert(sizeof(DiskTlv) == 8);
inline constexpr uint16_t kTlvCritical = 1;

enum ManifestTag : uint16_t {
  kTagName = 1,             // UTF-8 string
  kTagVersion = 2,          // string
  kTagReleaseCounter = 3,   // Le64
  kTagCreatedAt = 4,        // Le64 seconds since the epoch
  kTagDescription = 5,      // string
  kTagPatchId = 16,         // string (patch images)
  kTagBaseRootDigest = 17,  // 32 bytes: root hash of the base this patch applies to
  kTagRequires = 18,        // string, repeatable: patch ids that must be active below
  kTagSeverity = 19,        // string: low|medium|high|critical
  kTagCve = 20,             // string, repeatable
  kTagReleasedAt = 21,      // Le64 seconds since the epoch
  kTagActivation = 22,      // string: relaunch|reboot
};

// ---- metadata records ---------------------------------------------------------

// Inode flags.
inline constexpr uint32_t kInodeWhiteout = 1u << 0;  // patch: path deleted
inline constexpr uint32_t kInodeOpaque = 1u << 1;    // patch: dir replaces lower dir
// Patch, regular files only, at most one of the two (kIncompatLowerContent):
//  * kInodeLowerContent: the content is the lower state's regular file at
//    path `source` (byte for byte; its digest equals this inode's). No
//    extents.
//  * kInodeDelta: the extents hold a delta (docs/FORMAT.md section 11) of
//    `stored_size` bytes; decoded against the lower file at path `source` it
//    gives the content, whose fs-verity digest is this inode's `digest`.
inline constexpr uint32_t kInodeLowerContent = 1u << 2;
inline constexpr uint32_t kInodeDelta = 1u << 3;
inline constexpr uint32_t kInodeFlagsKnown =
    kInodeWhiteout | kInodeOpaque | kInodeLowerContent | kInodeDelta;
// Longest lower-file path (bytes, '/'-separated, relative to the root) a
// sourced inode may name.
inline constexpr uint32_t kMaxSourcePathLen = 65536;

// Inode number n (n >= 1) is record n-1 of the inode region.
struct DiskInode {
  Le32 mode;  // st_mode: type and permission bits (incl. setuid/setgid/sticky)
  Le32 uid;
  Le32 gid;
  Le32 nlink;          // directories: 2 + subdirectories; others: hard-link count
  Le64 size;           // regular: bytes; symlink: target length; dir: entry count
  Le64 mtime_sec;      // two's complement signed
  Le32 mtime_nsec;     // < 1e9
  Le32 flags;          // kInode*
  Le64 rdev;           // character/block devices
  Le64 payload;        // dir: first dirent index; regular: first extent index;
                       // symlink: strings-region offset of the target
  Le32 payload_count;  // dir: dirent count; regular: extent count; symlink: 0
  Le32 xattr_count;
  Le64 xattr_index;    // first DiskXattr index
  uint8_t digest[32];  // regular: fs-verity (SHA-256, 4 KiB blocks) file digest
  // kInodeLowerContent / kInodeDelta only, else zero:
  Le64 source_offset;  // strings-region offset of the lower file's path
  Le32 source_len;     // its length, 1..kMaxSourcePathLen
  Le32 reserved;       // zero
  Le64 stored_size;    // kInodeDelta: delta bytes held by the extents
};
static_assert(sizeof(DiskInode) == 128);

// Entry types (like DT_* but our own numbering).
enum EntryType : uint8_t {
  kTypeRegular = 1,
  kTypeDirectory = 2,
  kTypeSymlink = 3,
  kTypeCharDev = 4,
  kTypeBlockDev = 5,
  kTypeFifo = 6,
  kTypeSocket = 7,
  kTypeWhiteout = 8,
};

// The entry type a directory entry must carry for an inode of this st_mode
// and these inode flags; 0 for a mode no entry type describes.
inline uint8_t EntryTypeFor(uint32_t mode, uint32_t inode_flags) {
  if (inode_flags & kInodeWhiteout) return kTypeWhiteout;
  switch (mode & S_IFMT) {
    case S_IFREG:
      return kTypeRegular;
    case S_IFDIR:
      return kTypeDirectory;
    case S_IFLNK:
      return kTypeSymlink;
    case S_IFCHR:
      return kTypeCharDev;
    case S_IFBLK:
      return kTypeBlockDev;
    case S_IFIFO:
      return kTypeFifo;
    case S_IFSOCK:
      return kTypeSocket;
  }
  return 0;
}

struct DiskDirent {
  Le64 name_offset;  // strings-region offset
  Le32 inode;        // inode number (>= 1)
  Le16 name_len;     // 1..255; no '/' or NUL; not "." or ".."
  uint8_t type;      // EntryType, equals the inode's type
  uint8_t reserved;
};
static_assert(sizeof(DiskDirent) == 16);

// File bytes [i * chunk, min((i+1) * chunk, size)) come from `frame`,
// starting at `offset` in its decompressed bytes.
inline constexpr uint32_t kHoleFrame = 0xFFFFFFFFu;  // all zeros, no data
struct DiskExtent {
  Le32 frame;   // frame index or kHoleFrame
  Le32 offset;  // byte offset inside the decompressed frame
};
static_assert(sizeof(DiskExtent) == 8);

// A frame is one independently decodable unit in the data region. If
// stored_size == raw_size the bytes are stored as is, otherwise they are one
// zstd frame that decompresses to exactly raw_size bytes.
struct DiskFrame {
  Le64 offset;       // absolute file offset, inside the data region
  Le32 stored_size;  // bytes in the data region
  Le32 raw_size;     // decompressed bytes, <= chunk size
};
static_assert(sizeof(DiskFrame) == 16);

struct DiskXattr {
  Le64 name_offset;   // strings-region offset; full name, e.g. "user.foo"
  Le64 value_offset;  // strings-region offset
  Le32 name_len;
  Le32 value_len;
};
static_assert(sizeof(DiskXattr) == 24);

}  // namespace cryptex::format
