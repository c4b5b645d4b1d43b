#include "superblock.h"

#include <algorithm>
#include <cstring>
#include <vector>

namespace cryptex {

using namespace format;

const char* format::RegionName(uint32_t r) {
  switch (r) {
    case kRegionManifest:
      return "manifest";
    case kRegionInodes:
      return "inodes";
    case kRegionDirents:
      return "dirents";
    case kRegionExtents:
      return "extents";
    case kRegionXattrs:
      return "xattrs";
    case kRegionStrings:
      return "strings";
    case kRegionFrames:
      return "frames";
    case kRegionData:
      return "data";
  }
  return "?";
}

const char* SuperblockInfo::kind_name() const {
  return kind == kKindBase ? "base" : kind == kKindPatch ? "patch" : "unknown";
}

std::string ShellQuote(std::string_view arg) {
  std::string q = "'";
  for (char c : arg) {
    if (c == '\'') {
      q += "'\\''";
    } else {
      q += c;
    }
  }
  return q + "'";
}

std::string SuperblockInfo::VeritysetupCommand(const std::string& image_path,
                                               std::string (*quote)(std::string_view)) const {
  const std::string q = quote ? quote(image_path) : ShellQuote(image_path);
  return "veritysetup verify --no-superblock --format=1 --hash=sha256 --data-block-size=4096 "
         "--hash-block-size=4096 --data-blocks=" +
         std::to_string(data_blocks) + " --hash-offset=" + std::to_string(hash_offset) +
         " --salt=" + HexEncode(salt) + " " + q + " " + q + " " + HexEncode(root_hash);
}

static std::string Hex64(uint64_t v) {
  char buf[32];
  snprintf(buf, sizeof buf, "0x%llx", static_cast<unsigned long long>(v));
  return buf;
}

std::span<const uint8_t> TrailerOf(std::span<const uint8_t> tail) {
  if (tail.size() == kBlockSize && std::memcmp(tail.data(), kSuperMagic, 8) == 0) {
    return tail.first(kTrailerSize);
  }
  if (tail.size() >= kTrailerSize &&
      std::memcmp(tail.data() + tail.size() - kTrailerSize, kSuperMagic, 8) == 0) {
    return tail.last(kTrailerSize);
  }
  return {};
}

Result<SuperblockInfo> DecodeSuperblock(std::span<const uint8_t> tail, uint64_t file_size,
                                        const std::string& what) {
  const std::span<const uint8_t> trailer = TrailerOf(tail);
  const bool classic = !trailer.empty() && trailer.data() == tail.data();
  const uint64_t sb_off =
      file_size - std::min<uint64_t>(file_size, classic ? kBlockSize : kTrailerSize);
  auto bad = [&](const std::string& m) {
    return Status::Corruption(what + ": superblock at offset " + std::to_string(sb_off) + ": " + m);
  };
  if (file_size < kMinImageSize) {
    return Status::Corruption(what + ": not a cryptex image (size " + std::to_string(file_size) +
                              " is less than " + std::to_string(kMinImageSize) + "; truncated?)");
  }
  if (tail.size() != std::min<uint64_t>(file_size, kBlockSize)) return bad("short read");
  if (trailer.empty()) {
    return Status::Corruption(what + ": not a cryptex image (no superblock magic at offset " +
                              std::to_string(file_size - kBlockSize) + " or " +
                              std::to_string(file_size - kTrailerSize) +
                              "; truncated or not an image)");
  }
  DiskSuperblock d;
  std::memcpy(&d, trailer.data(), sizeof d);
  SuperblockInfo s;
  s.format_version = d.format_version.get();
  if (s.format_version != kFormatVersion) {
    return Status::Unsupported(what + ": format version " + std::to_string(s.format_version) +
                               " (this build reads version " + std::to_string(kFormatVersion) +
                               ")");
  }
  if (d.superblock_size.get() != sizeof(DiskSuperblock)) return bad("bad superblock_size");
  s.compat = d.compat_features.get();
  s.incompat = d.incompat_features.get();
  if (uint64_t unknown = s.incompat & ~kIncompatKnown) {
    return Status::Unsupported(what + ": unknown incompatible feature bits " + Hex64(unknown) +
                               " (image needs a newer cryptex)");
  }
  // The layout the superblock claims must be the one it was found in.
  if (classic == s.compact()) {
    return bad(classic ? "compact layout flagged, but the superblock starts the last block"
                       : "classic layout, but the superblock is not at the start of the last "
                         "block");
  }
  if (classic && (s.incompat & kIncompatColumns)) {
    return bad("tables by columns flagged in a classic-layout image");
  }
  if (classic && file_size % kBlockSize != 0) {
    return bad("file size " + std::to_string(file_size) + " is not a multiple of 4096");
  }
  s.kind = d.kind.get();
  if (s.kind != kKindBase && s.kind != kKindPatch) {
    return bad("unknown kind " + std::to_string(s.kind));
  }
  if (d.block_size_log2.get() != kBlockSizeLog2) return bad("block size must be 4096");
  s.chunk_log2 = d.chunk_size_log2.get();
  if (s.chunk_log2 < kMinChunkLog2 || s.chunk_log2 > kMaxChunkLog2) {
    return bad("chunk size 2^" + std::to_string(s.chunk_log2) + " out of range");
  }
  if (d.hash_algorithm.get() != kHashSha256) return Status::Unsupported(what + ": hash algorithm");
  s.image_size = d.image_size.get();
  if (s.image_size != file_size) {
    return Status::Corruption(what + ": file is " + std::to_string(file_size) +
                              " bytes but the superblock records " + std::to_string(s.image_size) +
                              " (truncated or appended to)");
  }
  s.data_blocks = d.data_blocks.get();
  s.hash_offset = d.hash_offset.get();
  s.hash_blocks = d.hash_blocks.get();
  s.tree_levels = d.tree_levels.get();
  // Classic: at least the header block and one block of metadata.
  if (s.data_blocks < (classic ? 2u : 1u) || s.data_blocks > (file_size / kBlockSize)) {
    return bad("data_blocks");
  }
  if (s.hash_offset != s.data_blocks * kBlockSize) return bad("hash_offset != data_blocks*4096");
  TreeGeometry g = TreeGeometry::For(s.data_blocks);
  if (s.hash_blocks != g.total_hash_blocks || s.tree_levels != g.levels.size()) {
    return bad("tree geometry disagrees with data size (" + std::to_string(s.hash_blocks) +
               " hash blocks in " + std::to_string(s.tree_levels) + " levels recorded, " +
               std::to_string(g.total_hash_blocks) + " in " + std::to_string(g.levels.size()) +
               " expected for " + std::to_string(s.data_blocks) + " data blocks)");
  }
  if (s.hash_blocks > (file_size - s.hash_offset) / kBlockSize ||
      s.hash_offset + s.hash_blocks * kBlockSize + (classic ? kBlockSize : kTrailerSize) !=
          file_size) {
    return bad("regions do not add up to the file size");
  }
  if (d.salt_size.get() != kSaltSize) return bad("salt size");
  std::memcpy(s.salt.data(), d.salt, 32);
  std::memcpy(s.root_hash.data(), d.root_hash, 32);
  s.packed_meta_offset = d.packed_meta_offset.get();
  s.packed_meta_stored = d.packed_meta_stored.get();
  s.packed_meta_raw = d.packed_meta_raw.get();
  // Where regions may lie: after the header, inside the verified area; a
  // compact image's table regions inside the packed metadata instead.
  const uint64_t first = classic ? kBlockSize : sizeof(DiskHeader);
  if (classic) {
    if (s.packed_meta_offset != 0 || s.packed_meta_stored != 0 || s.packed_meta_raw != 0) {
      return bad("packed metadata fields set in a classic-layout image");
    }
  } else {
    const uint64_t o = s.packed_meta_offset, n = s.packed_meta_stored;
    if (o < first || o > s.hash_offset || n > s.hash_offset - o || n == 0) {
      return bad("packed metadata [" + std::to_string(o) + ", +" + std::to_string(n) +
                 ") lies outside the verified area");
    }
    if (s.packed_meta_raw > kMaxPackedMetaBytes || n > s.packed_meta_raw) {
      return bad("packed metadata of " + std::to_string(s.packed_meta_raw) + " bytes (stored in " +
                 std::to_string(n) + "; at most " + std::to_string(kMaxPackedMetaBytes) +
                 ", and never stored in more)");
    }
  }
  for (uint32_t r = 0; r < kRegionCount; ++r) {
    s.regions[r].offset = d.regions[r].offset.get();
    s.regions[r].length = d.regions[r].length.get();
    const auto& reg = s.regions[r];
    const uint64_t lo = s.packed(r) ? 0 : first;
    const uint64_t hi = s.packed(r) ? s.packed_meta_raw : s.hash_offset;
    if (reg.offset < lo || reg.offset > hi || reg.length > hi - reg.offset) {
      return bad(std::string("region ") + RegionName(r) + " [" + std::to_string(reg.offset) +
                 ", +" + std::to_string(reg.length) + ") lies outside the " +
                 (s.packed(r) ? "packed metadata" : "verified area"));
    }
  }
  // Regions never share bytes: a byte is an inode or a dirent, not both.
  // The packed metadata is one more range of the file's bytes.
  struct Range {
    const char* name;
    RegionInfo at;
    bool packed;
  };
  std::vector<Range> ranges;
  for (uint32_t r = 0; r < kRegionCount; ++r) {
    ranges.push_back({RegionName(r), s.regions[r], s.packed(r)});
  }
  if (!classic) {
    ranges.push_back({"packed metadata", {s.packed_meta_offset, s.packed_meta_stored}, false});
  }
  for (size_t a = 0; a < ranges.size(); ++a) {
    for (size_t b = a + 1; b < ranges.size(); ++b) {
      const RegionInfo &ra = ranges[a].at, &rb = ranges[b].at;
      if (ranges[a].packed != ranges[b].packed || ra.length == 0 || rb.length == 0) continue;
      if (ra.offset < rb.offset + rb.length && rb.offset < ra.offset + ra.length) {
        return bad(std::string("regions ") + ranges[a].name + " and " + ranges[b].name +
                   " overlap");
      }
    }
  }
  auto rec = [&](uint32_t r, size_t size) { return s.regions[r].length % size == 0; };
  if (!rec(kRegionInodes, sizeof(DiskInode)) || !rec(kRegionDirents, sizeof(DiskDirent)) ||
      !rec(kRegionExtents, sizeof(DiskExtent)) || !rec(kRegionXattrs, sizeof(DiskXattr)) ||
      !rec(kRegionFrames, sizeof(DiskFrame))) {
    return bad("a table region is not a whole number of records");
  }
  if (s.regions[kRegionInodes].length == 0) return bad("no inodes");
  if (d.root_inode.get() != 1) return bad("root inode must be 1");
  s.created_at = d.created_at.get();
  // Every byte of the trailer (and of the rest of a classic image's last
  // block) is either signed or must be zero, so the image has exactly one
  // valid encoding (no room to smuggle bytes).
  auto all_zero = [](const uint8_t* p, size_t n) {
    for (size_t i = 0; i < n; ++i)
      if (p[i] != 0) return false;
    return true;
  };
  if (!all_zero(d.reserved, sizeof d.reserved)) return bad("reserved bytes are not zero");

  DiskSignature sig;
  std::memcpy(&sig, trailer.data() + kSignatureOffsetInBlock, sizeof sig);
  if (!all_zero(sig.reserved, sizeof sig.reserved)) {
    return bad("reserved bytes of the signature block are not zero");
  }
  if (classic && !all_zero(tail.data() + kTrailerSize, kBlockSize - kTrailerSize)) {
    return bad("bytes after the signature block are not zero");
  }
  std::memcpy(s.key_id.data(), sig.key_id, 32);
  std::memcpy(s.sig.data(), sig.sig, 64);
  return s;
}

Status VerifySuperblockSignature(std::span<const uint8_t> tail, const TrustStore& trust,
                                 const std::string& what) {
  std::span<const uint8_t> block = TrailerOf(tail);
  // No superblock magic in either place: check the classic place (the
  // signature covers whatever is there; DecodeSuperblock refuses it).
  if (block.empty() && tail.size() >= kTrailerSize) block = tail.first(kTrailerSize);
  if (block.empty()) return Status::Corruption(what + ": short superblock");
  DiskSignature sig;
  std::memcpy(&sig, block.data() + kSignatureOffsetInBlock, sizeof sig);
  if (std::memcmp(sig.magic, kSigMagic, 8) != 0) {
    return Status::Signature(what + ": image is not signed (no signature block)");
  }
  if (sig.algorithm.get() != kSigEd25519 || sig.sig_size.get() != 64) {
    return Status::Unsupported(what + ": unsupported signature algorithm " +
                               std::to_string(sig.algorithm.get()));
  }
  KeyId id;
  std::memcpy(id.data(), sig.key_id, 32);
  const PublicKey* key = trust.Find(id);
  if (key == nullptr) {
    return Status::Signature(what + ": signed by unknown key " + HexEncode(id).substr(0, 16) +
                             "... (not in " + trust.Describe() + ")");
  }
  if (!key->Verify(block.subspan(0, sizeof(DiskSuperblock)), std::span<const uint8_t>(sig.sig))) {
    return Status::Signature(what + ": bad signature over the superblock (key " +
                             HexEncode(id).substr(0, 16) + "..., " + key->origin() +
                             "): image tampered with");
  }
  return Status::Ok();
}

std::array<uint8_t, sizeof(DiskSuperblock)> EncodeSuperblock(const SuperblockInfo& s) {
  DiskSuperblock d;
  std::memset(&d, 0, sizeof d);
  std::memcpy(d.magic, kSuperMagic, 8);
  d.format_version.set(kFormatVersion);
  d.superblock_size.set(sizeof(DiskSuperblock));
  d.compat_features.set(s.compat);
  d.incompat_features.set(s.incompat);
  d.kind.set(s.kind);
  d.block_size_log2.set(kBlockSizeLog2);
  d.chunk_size_log2.set(s.chunk_log2);
  d.hash_algorithm.set(kHashSha256);
  d.image_size.set(s.image_size);
  d.data_blocks.set(s.data_blocks);
  d.hash_offset.set(s.hash_offset);
  d.hash_blocks.set(s.hash_blocks);
  d.salt_size.set(kSaltSize);
  d.tree_levels.set(s.tree_levels);
  std::memcpy(d.salt, s.salt.data(), 32);
  std::memcpy(d.root_hash, s.root_hash.data(), 32);
  for (uint32_t r = 0; r < kRegionCount; ++r) {
    d.regions[r].offset.set(s.regions[r].offset);
    d.regions[r].length.set(s.regions[r].length);
  }
  d.root_inode.set(1);
  d.created_at.set(s.created_at);
  d.packed_meta_offset.set(s.packed_meta_offset);
  d.packed_meta_stored.set(s.packed_meta_stored);
  d.packed_meta_raw.set(s.packed_meta_raw);
  std::array<uint8_t, sizeof(DiskSuperblock)> out;
  std::memcpy(out.data(), &d, sizeof d);
  return out;
}

}  // namespace cryptex
