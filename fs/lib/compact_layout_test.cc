// The compact layout (docs/FORMAT.md section 13): what mkpatch writes. It
// must serve exactly what the classic layout serves, stay checkable by
// veritysetup, leave no byte unprotected, and refuse hostile framing (even
// when re-signed) with a message naming what is wrong.
#include <gtest/gtest.h>
#include <unistd.h>
#include <zstd.h>

#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "builder.h"
#include "image.h"
#include "keys.h"
#include "merkle.h"
#include "records.h"
#include "superblock.h"
#include "test_util.h"

namespace cryptex {
namespace {

using format::kBlockSize;
using format::kTrailerSize;
using Bytes = std::vector<uint8_t>;

Bytes Load(const std::string& path) {
  const std::string s = test::ReadFile(path);
  return Bytes(s.begin(), s.end());
}

void Store(const std::string& path, const Bytes& b) {
  test::WriteFile(path, std::string_view(reinterpret_cast<const char*>(b.data()), b.size()));
}

SuperblockInfo Peek(const Bytes& image) {
  const size_t tail = std::min<size_t>(image.size(), kBlockSize);
  auto sb = DecodeSuperblock(std::span(image).last(tail), image.size(), "peek");
  EXPECT_TRUE(sb.ok()) << sb.status().ToString();
  return sb.ok() ? *sb : SuperblockInfo{};
}

// Re-seals `data_area` (the verified area, a whole number of blocks) with
// superblock `sb`: the dm-verity tree is recomputed over it with sb's salt,
// sb's geometry fields set to match, the superblock signed with `key`. The
// trailer is the file's last 640 bytes, or (`classic_trailer`) the start of
// a last block of zeros. Every other field of sb is written as given, so
// tests can sign what the builder never writes.
Bytes Reseal(Bytes data_area, SuperblockInfo sb, const PrivateKey& key,
             bool classic_trailer = false) {
  EXPECT_EQ(data_area.size() % kBlockSize, 0u);
  sb.data_blocks = data_area.size() / kBlockSize;
  sb.hash_offset = data_area.size();
  std::vector<uint8_t> hash;
  const Status st = BuildMerkleTree(
      sb.data_blocks, sb.salt,
      [&](uint64_t i, uint8_t* buf) {
        std::memcpy(buf, data_area.data() + i * kBlockSize, kBlockSize);
        return Status::Ok();
      },
      1, &hash, &sb.root_hash);
  EXPECT_TRUE(st.ok()) << st.ToString();
  const TreeGeometry g = TreeGeometry::For(sb.data_blocks);
  sb.hash_blocks = g.total_hash_blocks;
  sb.tree_levels = static_cast<uint32_t>(g.levels.size());
  const size_t trailer = classic_trailer ? kBlockSize : kTrailerSize;
  sb.image_size = data_area.size() + hash.size() + trailer;
  Bytes out = std::move(data_area);
  out.insert(out.end(), hash.begin(), hash.end());
  Bytes block(trailer, 0);
  const auto sbytes = EncodeSuperblock(sb);
  std::memcpy(block.data(), sbytes.data(), sbytes.size());
  auto sig = key.Sign(sbytes);
  EXPECT_TRUE(sig.ok());
  format::DiskSignature ds;
  std::memset(&ds, 0, sizeof ds);
  std::memcpy(ds.magic, format::kSigMagic, 8);
  ds.algorithm.set(format::kSigEd25519);
  ds.sig_size.set(64);
  const KeyId id = key.id();
  std::memcpy(ds.key_id, id.data(), 32);
  if (sig.ok()) std::memcpy(ds.sig, sig->data(), 64);
  std::memcpy(block.data() + format::kSignatureOffsetInBlock, &ds, sizeof ds);
  out.insert(out.end(), block.begin(), block.end());
  return out;
}

// The packed metadata of a compact image as stored, and what it would be
// stored in by rows and by columns (zstd level 15, as the builder does),
// recomputed here from the tables the image holds.
struct PackedSizes {
  uint64_t stored = 0, rows = 0, columns = 0;
};
PackedSizes Repack(const Bytes& image) {
  const SuperblockInfo sb = Peek(image);
  PackedSizes out;
  out.stored = sb.packed_meta_stored;
  Bytes tables(sb.packed_meta_raw);
  const uint8_t* at = image.data() + sb.packed_meta_offset;
  if (sb.packed_meta_stored == sb.packed_meta_raw) {
    std::memcpy(tables.data(), at, tables.size());
  } else {
    EXPECT_EQ(ZSTD_decompress(tables.data(), tables.size(), at, sb.packed_meta_stored),
              tables.size());
  }
  auto each_table = [&](void (*f)(std::span<uint8_t>, size_t)) {
    for (uint32_t r = 0; r < format::kRegionCount; ++r) {
      const size_t record = records::RecordSize(static_cast<format::Region>(r));
      if (record != 0) f({tables.data() + sb.regions[r].offset, sb.regions[r].length}, record);
    }
  };
  if (sb.columns()) each_table(records::FromColumns);
  auto packed = [](const Bytes& b) -> uint64_t {
    Bytes z(ZSTD_compressBound(b.size()));
    const size_t n = ZSTD_compress(z.data(), z.size(), b.data(), b.size(), 15);
    EXPECT_FALSE(ZSTD_isError(n));
    return std::min<uint64_t>(n, b.size());
  };
  out.rows = packed(tables);
  each_table(records::ToColumns);
  out.columns = packed(tables);
  return out;
}

class CompactLayoutTest : public ::testing::Test {
 protected:
  // A small tree: a few files (one of several chunks at 4 KiB chunks), a
  // symlink, a hard link, an xattr.
  void SetUp() override {
    src_ = work_.Join("src");
    ASSERT_EQ(mkdir(src_.c_str(), 0755), 0);
    ASSERT_EQ(mkdir((src_ + "/dir").c_str(), 0750), 0);
    test::WriteFile(src_ + "/a.txt", "alpha\n");
    test::WriteFile(src_ + "/dir/b.bin", test::RandomBytes(3 * 4096 + 100, 7));
    test::WriteFile(src_ + "/dir/c.txt", std::string(5000, 'c'));
    ASSERT_EQ(link((src_ + "/a.txt").c_str(), (src_ + "/dir/a-link").c_str()), 0);
    ASSERT_EQ(symlink("dir/b.bin", (src_ + "/ln").c_str()), 0);
  }

  // Seals src_ into `name` (compact or classic); sets trust_ and key_.
  std::string Seal(const std::string& name, bool compact) {
    const std::string out = work_.Join(name);
    auto trust = test::SealForTest(src_, out, 12, "test", compact);
    EXPECT_TRUE(trust.ok()) << trust.status().ToString();
    if (!trust.ok()) return out;
    trust_ = std::move(*trust);
    auto key = PrivateKey::LoadPem(out + ".key");
    EXPECT_TRUE(key.ok());
    if (key.ok()) key_ = std::make_unique<PrivateKey>(std::move(*key));
    return out;
  }

  // Open + VerifyAll of `bytes` written to a scratch file: ok, or the error.
  Status OpenAndVerify(const Bytes& bytes) {
    const std::string path = work_.Join("probe.cryptex");
    Store(path, bytes);
    ImageOptions io;
    io.trust = trust_.get();
    auto img = Image::Open(path, io);
    if (!img.ok()) return img.status();
    return (*img)->VerifyAll();
  }

  test::TempDir work_;
  std::string src_;
  std::unique_ptr<TrustStore> trust_;
  std::unique_ptr<PrivateKey> key_;
};

// Both layouts of one tree extract to the source tree (every attribute and
// byte, by the CLI), and the compact one is laid out as FORMAT.md says: a
// 64-byte header, the trailer as the last 640 bytes, the packed metadata
// inside the verified area, smaller than the classic image.
TEST_F(CompactLayoutTest, ServesWhatTheClassicLayoutServes) {
  const std::string classic = Seal("classic.cryptex", false);
  const std::string compact = Seal("compact.cryptex", true);
  const SuperblockInfo c = test::ImageSuperblock(compact);
  const SuperblockInfo k = test::ImageSuperblock(classic);
  EXPECT_TRUE(c.compact());
  EXPECT_FALSE(k.compact());
  EXPECT_EQ(c.regions[format::kRegionData].offset, sizeof(format::DiskHeader));
  EXPECT_EQ(k.regions[format::kRegionData].offset, kBlockSize);
  EXPECT_EQ(c.image_size, c.hash_offset + c.hash_blocks * kBlockSize + kTrailerSize);
  EXPECT_EQ(c.superblock_offset(), c.image_size - kTrailerSize);
  EXPECT_GE(c.packed_meta_offset, sizeof(format::DiskHeader));
  EXPECT_LE(c.packed_meta_offset + c.packed_meta_stored, c.hash_offset);
  EXPECT_LT(c.packed_meta_stored, c.packed_meta_raw) << "the tables did not compress";
  // At least the trailer's block padding is saved (the header's too, unless
  // both verified areas round up to the same number of blocks).
  EXPECT_LE(c.image_size + kBlockSize - kTrailerSize, k.image_size);
  std::printf("classic %llu bytes, compact %llu bytes (tables %llu packed into %llu)\n",
              static_cast<unsigned long long>(k.image_size),
              static_cast<unsigned long long>(c.image_size),
              static_cast<unsigned long long>(c.packed_meta_raw),
              static_cast<unsigned long long>(c.packed_meta_stored));
  for (const std::string& img : {classic, compact}) {
    SCOPED_TRACE(img);
    const std::string out = img + ".out";
    const std::string pub = test::ShellQuote(img + ".key.pub");
    const test::CommandResult v =
        test::RunCryptex("verify --pubkey " + pub + " " + test::ShellQuote(img));
    EXPECT_EQ(v.exit_code, 0) << v.out << v.err;
    const test::CommandResult x = test::RunCryptex(
        "extract --pubkey " + pub + " " + test::ShellQuote(img) + " " + test::ShellQuote(out));
    ASSERT_EQ(x.exit_code, 0) << x.out << x.err;
    EXPECT_EQ(test::CompareTrees(src_, out), std::vector<std::string>{});
  }
}

// The tables are stored by columns, or by rows when they are at most 16 KiB
// and rows pack smaller: a few entries by rows, hundreds of alike files by
// columns (which FORMAT.md section 13 measures on libc6). Either way the
// image serves the tree.
TEST_F(CompactLayoutTest, TablesAreStoredTheSmallerWay) {
  for (int files : {0, 400}) {
    SCOPED_TRACE(std::to_string(files) + " more files");
    for (int i = 0; i < files; ++i) {
      const std::string d = src_ + "/many" + std::to_string(i % 8);
      mkdir(d.c_str(), 0755);
      test::WriteFile(
          d + "/module-" + std::to_string(i) + ".so",
          test::RandomBytes(100 + static_cast<size_t>(i) * 7, static_cast<uint64_t>(i)));
    }
    const std::string img = Seal("tables" + std::to_string(files) + ".cryptex", true);
    const Bytes bytes = Load(img);
    const SuperblockInfo sb = Peek(bytes);
    const PackedSizes p = Repack(bytes);
    std::printf("%d more files: tables %llu bytes, by rows %llu, by columns %llu: stored by %s\n",
                files, static_cast<unsigned long long>(sb.packed_meta_raw),
                static_cast<unsigned long long>(p.rows), static_cast<unsigned long long>(p.columns),
                sb.columns() ? "columns" : "rows");
    if (sb.packed_meta_raw <= 16u << 10) {  // both ways tried
      EXPECT_EQ(p.stored, std::min(p.rows, p.columns));
      EXPECT_EQ(sb.columns(), p.columns <= p.rows);
    } else {  // larger tables: by columns
      EXPECT_TRUE(sb.columns());
      EXPECT_EQ(p.stored, p.columns);
      EXPECT_LT(p.columns, p.rows);
    }
    EXPECT_EQ(sb.columns(), files > 0) << "the cases no longer cover both layouts";
    const std::string out = img + ".out";
    const test::CommandResult x =
        test::RunCryptex("extract --pubkey " + test::ShellQuote(img + ".key.pub") + " " +
                         test::ShellQuote(img) + " " + test::ShellQuote(out));
    ASSERT_EQ(x.exit_code, 0) << x.out << x.err;
    EXPECT_EQ(test::CompareTrees(src_, out), std::vector<std::string>{});
  }
}

// veritysetup (an oracle nobody here wrote) checks a compact image's tree
// with the command inspect prints, and refuses it after one flipped byte.
TEST_F(CompactLayoutTest, VeritysetupChecksTheTree) {
  if (test::RunCommand("command -v veritysetup >/dev/null").exit_code != 0) {
    if (getenv("CI") != nullptr) FAIL() << "veritysetup is missing (CI installs cryptsetup-bin)";
    GTEST_SKIP() << "veritysetup not installed";
  }
  const std::string compact = Seal("compact.cryptex", true);
  const SuperblockInfo sb = test::ImageSuperblock(compact);
  EXPECT_EQ(test::RunCommand(sb.VeritysetupCommand(compact) + " >/dev/null 2>&1").exit_code, 0);
  test::FlipByte(compact, sb.packed_meta_offset + 1);
  EXPECT_NE(test::RunCommand(sb.VeritysetupCommand(compact) + " >/dev/null 2>&1").exit_code, 0);
}

// No byte of a compact image is unprotected: flipping any one of them (the
// header, data, packed metadata, manifest, padding, tree, superblock,
// signature) makes Open or the full verify fail.
TEST_F(CompactLayoutTest, EveryFlippedByteIsRefused) {
  const Bytes good = Load(Seal("compact.cryptex", true));
  ASSERT_TRUE(OpenAndVerify(good).ok());
  size_t accepted = 0;
  for (size_t at = 0; at < good.size(); ++at) {
    Bytes bad = good;
    bad[at] ^= 0x01;
    if (OpenAndVerify(bad).ok()) {
      ADD_FAILURE() << "a flipped byte at offset " << at << " of " << good.size()
                    << " went unnoticed";
      if (++accepted > 5) break;
    }
  }
}

// Hostile framing, re-signed with the trusted key so that it reaches the
// decoder: each is refused with a message naming the field.
TEST_F(CompactLayoutTest, HostileFramingIsRefusedNamingIt) {
  const Bytes good = Load(Seal("compact.cryptex", true));
  ASSERT_NE(key_, nullptr);
  const SuperblockInfo sb = Peek(good);
  const Bytes area(good.begin(), good.begin() + static_cast<ptrdiff_t>(sb.hash_offset));
  // Unchanged, the re-sealed image is valid: the cases below fail for their
  // one change only.
  ASSERT_TRUE(OpenAndVerify(Reseal(area, sb, *key_)).ok());
  struct Case {
    const char* what;
    std::function<void(SuperblockInfo*, Bytes*)> edit;
    const char* says;
    bool classic_trailer = false;
  };
  const std::vector<Case> cases = {
      {"packed metadata over the limit",
       [](SuperblockInfo* s, Bytes*) { s->packed_meta_raw = format::kMaxPackedMetaBytes + 1; },
       "packed metadata of 67108865 bytes"},
      {"packed metadata stored in more than it holds",
       [](SuperblockInfo* s, Bytes*) { s->packed_meta_raw = s->packed_meta_stored - 1; },
       "never stored in more"},
      {"packed metadata empty", [](SuperblockInfo* s, Bytes*) { s->packed_meta_stored = 0; },
       "lies outside the verified area"},
      {"packed metadata past the verified area",
       [](SuperblockInfo* s, Bytes*) { s->packed_meta_offset = s->hash_offset - 1; },
       "lies outside the verified area"},
      {"packed metadata inside the header",
       [](SuperblockInfo* s, Bytes*) { s->packed_meta_offset = 10; },
       "lies outside the verified area"},
      {"an inode table past the packed metadata",
       [](SuperblockInfo* s, Bytes*) {
         s->regions[format::kRegionInodes].offset = s->packed_meta_raw;
       },
       "region inodes"},
      {"the data region over the packed metadata",
       [](SuperblockInfo* s, Bytes*) {
         s->regions[format::kRegionData].length += s->packed_meta_stored;
       },
       "overlap"},
      {"a wrong decompressed size", [](SuperblockInfo* s, Bytes*) { s->packed_meta_raw += 1; },
       "not one zstd frame of"},
      {"packed metadata that is not zstd",
       [](SuperblockInfo* s, Bytes* a) {
         std::memset(a->data() + s->packed_meta_offset, 0x5a, s->packed_meta_stored);
       },
       "packed metadata at offset"},
      {"the compact flag on a classic trailer", [](SuperblockInfo*, Bytes*) {},
       "compact layout flagged", true},
      {"a compact trailer without the flag",
       [](SuperblockInfo* s, Bytes*) { s->incompat &= ~format::kIncompatCompact; },
       "classic layout, but"},
      {"a table by columns that is not whole records",
       [](SuperblockInfo* s, Bytes*) {
         s->incompat |= format::kIncompatColumns;
         s->regions[format::kRegionInodes].length -= 1;
       },
       "a table region is not a whole number of records"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.what);
    SuperblockInfo s = sb;
    Bytes a = area;
    c.edit(&s, &a);
    const Status st = OpenAndVerify(Reseal(a, s, *key_, c.classic_trailer));
    ASSERT_FALSE(st.ok()) << "accepted";
    EXPECT_NE(st.ToString().find(c.says), std::string::npos) << st.ToString();
  }
}

// A classic image may not carry packed metadata fields (they were reserved
// zero bytes before the compact layout) or the columns flag: re-signed with
// them set, refused.
TEST_F(CompactLayoutTest, ClassicImageWithPackedFieldsIsRefused) {
  const Bytes good = Load(Seal("classic.cryptex", false));
  ASSERT_NE(key_, nullptr);
  SuperblockInfo sb = Peek(good);
  const Bytes area(good.begin(), good.begin() + static_cast<ptrdiff_t>(sb.hash_offset));
  ASSERT_TRUE(OpenAndVerify(Reseal(area, sb, *key_, true)).ok());
  SuperblockInfo columns = sb;
  sb.packed_meta_raw = 1;
  const Status st = OpenAndVerify(Reseal(area, sb, *key_, true));
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.ToString().find("packed metadata fields set in a classic-layout image"),
            std::string::npos)
      << st.ToString();
  columns.incompat |= format::kIncompatColumns;
  const Status st2 = OpenAndVerify(Reseal(area, columns, *key_, true));
  ASSERT_FALSE(st2.ok());
  EXPECT_NE(st2.ToString().find("tables by columns flagged in a classic-layout image"),
            std::string::npos)
      << st2.ToString();
}

// Truncated or extended by a byte, a compact image is refused naming the
// size (there is no block padding left to absorb it).
TEST_F(CompactLayoutTest, TruncatedOrExtendedIsRefused) {
  const Bytes good = Load(Seal("compact.cryptex", true));
  Bytes shorter(good.begin(), good.end() - 1);
  Bytes longer = good;
  longer.push_back(0);
  for (const Bytes& b : {shorter, longer}) {
    const Status st = OpenAndVerify(b);
    ASSERT_FALSE(st.ok());
    EXPECT_NE(st.ToString().find("not a cryptex image"), std::string::npos) << st.ToString();
  }
}

}  // namespace
}  // namespace cryptex
