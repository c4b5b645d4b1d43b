#include "records.h"

#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <string>
#include <vector>

namespace cryptex::records {
namespace {

using namespace format;

// Every byte of a record survives decode then encode: the one codec covers
// every field (a field the codec forgot would come back as zero).
template <typename Disk, typename Decode, typename Encode>
void ExpectRoundTrip(Decode decode, Encode encode, std::mt19937_64& rng) {
  for (int round = 0; round < 200; ++round) {
    Disk d;
    auto* p = reinterpret_cast<uint8_t*>(&d);
    for (size_t i = 0; i < sizeof d; ++i) p[i] = static_cast<uint8_t>(rng());
    if constexpr (std::is_same_v<Disk, DiskDirent>) d.reserved = 0;
    const Disk back = encode(decode(d));
    EXPECT_EQ(0, std::memcmp(&d, &back, sizeof d)) << "round " << round;
  }
}

TEST(RecordsTest, DirentExtentFrameXattrRoundTripEveryByte) {
  std::mt19937_64 rng(7);
  ExpectRoundTrip<DiskDirent>(DecodeDirent, EncodeDirent, rng);
  ExpectRoundTrip<DiskExtent>(DecodeExtent, EncodeExtent, rng);
  ExpectRoundTrip<DiskFrame>(DecodeFrame, EncodeFrame, rng);
  ExpectRoundTrip<DiskXattr>(DecodeXattr, EncodeXattr, rng);
}

InodeInfo SampleInode() {
  InodeInfo in;
  in.mode = S_IFREG | 04755;
  in.uid = 0x01020304;
  in.gid = 0x05060708;
  in.nlink = 3;
  in.size = 0x1122334455667788ull;
  in.mtime_sec = -12345678901;
  in.mtime_nsec = 999999999;
  in.flags = kInodeDelta;
  in.rdev = 0x0102030405060708ull;
  in.payload = 0xA0A0A0A0A0ull;
  in.payload_count = 0xB0B0B0B0;
  in.xattr_count = 17;
  in.xattr_index = 0xC0C0C0C0C0ull;
  for (size_t i = 0; i < in.digest.size(); ++i) in.digest[i] = static_cast<uint8_t>(i * 7 + 1);
  in.source_offset = 0xD0D0D0D0D0ull;
  in.source_len = 65536;
  in.stored_size = 0xE0E0E0E0E0ull;
  return in;
}

TEST(RecordsTest, InodeRoundTripsEveryField) {
  const InodeInfo in = SampleInode();
  const DiskInode d = EncodeInode(in);
  auto back = DecodeInode(d, 42, "img");
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(back->ino, 42u);
  EXPECT_EQ(back->mode, in.mode);
  EXPECT_EQ(back->uid, in.uid);
  EXPECT_EQ(back->gid, in.gid);
  EXPECT_EQ(back->nlink, in.nlink);
  EXPECT_EQ(back->size, in.size);
  EXPECT_EQ(back->mtime_sec, in.mtime_sec);
  EXPECT_EQ(back->mtime_nsec, in.mtime_nsec);
  EXPECT_EQ(back->flags, in.flags);
  EXPECT_EQ(back->rdev, in.rdev);
  EXPECT_EQ(back->payload, in.payload);
  EXPECT_EQ(back->payload_count, in.payload_count);
  EXPECT_EQ(back->xattr_count, in.xattr_count);
  EXPECT_EQ(back->xattr_index, in.xattr_index);
  EXPECT_EQ(back->digest, in.digest);
  EXPECT_EQ(back->source_offset, in.source_offset);
  EXPECT_EQ(back->source_len, in.source_len);
  EXPECT_EQ(back->stored_size, in.stored_size);
  const DiskInode again = EncodeInode(*back);
  EXPECT_EQ(0, std::memcmp(&d, &again, sizeof d));
}

TEST(RecordsTest, DecodeInodeRefusesWhatARecordCannotSay) {
  auto refused = [](DiskInode d, const char* what) {
    auto r = DecodeInode(d, 9, "app.cryptex");
    ASSERT_FALSE(r.ok()) << what;
    EXPECT_EQ(r.status().code(), Code::kCorruption) << what;
    EXPECT_NE(r.status().message().find("app.cryptex: inode 9"), std::string::npos)
        << r.status().message();
  };
  DiskInode d = EncodeInode(SampleInode());
  d.mtime_nsec.set(1000000000);
  refused(d, "nanoseconds");
  d = EncodeInode(SampleInode());
  d.flags.set(1u << 20);
  refused(d, "unknown flag");
  d = EncodeInode(SampleInode());
  d.reserved.set(1);
  refused(d, "reserved");
  InodeInfo plain = SampleInode();
  plain.flags = 0;  // source fields without a source flag
  refused(EncodeInode(plain), "source fields");
}

// The column layout of a table (kIncompatColumns): byte j of record i goes
// to j * count + i, and FromColumns undoes it, for every record size of the
// format and counts 0, 1, 2 and many.
TEST(RecordsTest, ColumnsPlaceEachByteAndComeBack) {
  std::mt19937_64 rng(11);
  EXPECT_EQ(RecordSize(kRegionInodes), sizeof(DiskInode));
  EXPECT_EQ(RecordSize(kRegionFrames), sizeof(DiskFrame));
  EXPECT_EQ(RecordSize(kRegionStrings), 0u);
  EXPECT_EQ(RecordSize(kRegionManifest), 0u);
  EXPECT_EQ(RecordSize(kRegionData), 0u);
  for (uint32_t r = 0; r < kRegionCount; ++r) {
    const size_t record = RecordSize(static_cast<Region>(r));
    if (record == 0) continue;
    for (size_t count : {0, 1, 2, 3, 301}) {
      SCOPED_TRACE(std::to_string(record) + "-byte records x " + std::to_string(count));
      std::vector<uint8_t> rows(record * count);
      for (auto& b : rows) b = static_cast<uint8_t>(rng());
      std::vector<uint8_t> cols = rows;
      ToColumns(cols, record);
      for (size_t i = 0; i < count; ++i) {
        for (size_t j = 0; j < record; ++j) {
          ASSERT_EQ(cols[j * count + i], rows[i * record + j]) << "record " << i << " byte " << j;
        }
      }
      FromColumns(cols, record);
      EXPECT_EQ(cols, rows);
    }
  }
}

}  // namespace
}  // namespace cryptex::records
