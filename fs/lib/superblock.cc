#include "superblock.h"

#include <cstring>

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

Result<SuperblockInfo> DecodeSuperblock(std::span<const uint8_t> block, uint64_t file_size,
                                        const std::string& what) {
  const uint64_t sb_off = file_size >= kBlockSize ? file_size - kBlockSize : 0;
  auto bad = [&](const std::string& m) {
    return Status::Corruption(what + ": superblock at offset " + std::to_string(sb_off) + ": " + m);
  };
  if (file_size < 3 * kBlockSize || file_size % kBlockSize != 0) {
    return Status::Corruption(what + ": not a cryptex image (size " + std::to_string(file_size) +
                              " is not a multiple of 4096 of at least 12288; truncated?)");
  }
  if (block.size() != kBlockSize) return bad("short read");
  DiskSuperblock d;
  std::memcpy(&d, block.data(), sizeof d);
  if (std::memcmp(d.magic, kSuperMagic, 8) != 0) {
    return Status::Corruption(what + ": not a cryptex image (no superblock magic at offset " +
                              std::to_string(sb_off) + "; truncated or not an image)");
  }
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
  // At least the header block and one block of metadata.
  if (s.data_blocks < 2 || s.data_blocks > (file_size / kBlockSize)) return bad("data_blocks");
  if (s.hash_offset != s.data_blocks * kBlockSize) return bad("hash_offset != data_blocks*4096");
  TreeGeometry g = TreeGeometry::For(s.data_blocks);
  if (s.hash_blocks != g.total_hash_blocks || s.tree_levels != g.levels.size()) {
    return bad("tree geometry disagrees with data size (" + std::to_string(s.hash_blocks) +
               " hash blocks in " + std::to_string(s.tree_levels) + " levels recorded, " +
               std::to_string(g.total_hash_blocks) + " in " + std::to_string(g.levels.size()) +
               " expected for " + std::to_string(s.data_blocks) + " data blocks)");
  }
  if (s.hash_offset + s.hash_blocks * kBlockSize + kBlockSize != file_size) {
    return bad("regions do not add up to the file size");
  }
  if (d.salt_size.get() != kSaltSize) return bad("salt size");
  std::memcpy(s.salt.data(), d.salt, 32);
  std::memcpy(s.root_hash.data(), d.root_hash, 32);
  for (uint32_t r = 0; r < kRegionCount; ++r) {
    s.regions[r].offset = d.regions[r].offset.get();
    s.regions[r].length = d.regions[r].length.get();
    const auto& reg = s.regions[r];
    if (reg.offset < kBlockSize || reg.offset > s.hash_offset ||
        reg.length > s.hash_offset - reg.offset) {
      return bad(std::string("region ") + RegionName(r) + " [" + std::to_string(reg.offset) +
                 ", +" + std::to_string(reg.length) + ") lies outside the verified area");
    }
  }
  // Regions never share bytes: a byte is an inode or a dirent, not both.
  for (uint32_t a = 0; a < kRegionCount; ++a) {
    for (uint32_t b = a + 1; b < kRegionCount; ++b) {
      const auto &ra = s.regions[a], &rb = s.regions[b];
      if (ra.length == 0 || rb.length == 0) continue;
      if (ra.offset < rb.offset + rb.length && rb.offset < ra.offset + ra.length) {
        return bad(std::string("regions ") + RegionName(a) + " and " + RegionName(b) + " overlap");
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
  // Every byte of the last block is either signed or must be zero, so the
  // image has exactly one valid encoding (no room to smuggle bytes).
  auto all_zero = [](const uint8_t* p, size_t n) {
    for (size_t i = 0; i < n; ++i)
      if (p[i] != 0) return false;
    return true;
  };
  if (!all_zero(d.reserved, sizeof d.reserved)) return bad("reserved bytes are not zero");

  DiskSignature sig;
  std::memcpy(&sig, block.data() + kSignatureOffsetInBlock, sizeof sig);
  if (!all_zero(sig.reserved, sizeof sig.reserved)) {
    return bad("reserved bytes of the signature block are not zero");
  }
  constexpr size_t kSigEnd = kSignatureOffsetInBlock + sizeof(DiskSignature);
  if (!all_zero(block.data() + kSigEnd, kBlockSize - kSigEnd)) {
    return bad("bytes after the signature block are not zero");
  }
  std::memcpy(s.key_id.data(), sig.key_id, 32);
  std::memcpy(s.sig.data(), sig.sig, 64);
  return s;
}

Status VerifySuperblockSignature(std::span<const uint8_t> block, const TrustStore& trust,
                                 const std::string& what) {
  if (block.size() != kBlockSize) return Status::Corruption(what + ": short superblock");
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
  std::array<uint8_t, sizeof(DiskSuperblock)> out;
  std::memcpy(out.data(), &d, sizeof d);
  return out;
}

}  // namespace cryptex
