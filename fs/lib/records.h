// One codec for every metadata record of the image format (format.h,
// docs/FORMAT.md section 6): the builder and the patch builder encode with
// it, the reader decodes with it, so a field is converted in exactly one
// place. Decoding checks what a record can say about itself (ranges of its
// own fields, reserved bytes zero); checks against the image's tables and
// features stay in the reader (image_impl.h).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

#include "format.h"
#include "image.h"
#include "status.h"

namespace cryptex::records {

// InodeInfo <-> DiskInode. EncodeInode ignores `ino`. DecodeInode gives
// kCorruption (naming `where` and the field) for nanoseconds >= 1e9,
// unknown flags, a non-zero reserved field, or source fields set on an
// inode without the lower-content or delta flag.
format::DiskInode EncodeInode(const InodeInfo& in);
Result<InodeInfo> DecodeInode(const format::DiskInode& d, uint64_t ino, const std::string& where);

struct Dirent {
  uint64_t name_offset = 0;
  uint16_t name_len = 0;
  uint32_t ino = 0;
  uint8_t type = 0;  // format::EntryType
};
format::DiskDirent EncodeDirent(const Dirent& e);
Dirent DecodeDirent(const format::DiskDirent& d);

struct Extent {
  uint32_t frame = 0;  // or format::kHoleFrame
  uint32_t offset = 0;
};
format::DiskExtent EncodeExtent(const Extent& e);
Extent DecodeExtent(const format::DiskExtent& d);

struct Frame {
  uint64_t offset = 0;
  uint32_t stored_size = 0;
  uint32_t raw_size = 0;
};
format::DiskFrame EncodeFrame(const Frame& f);
Frame DecodeFrame(const format::DiskFrame& d);

struct XattrRef {
  uint64_t name_offset = 0;
  uint64_t value_offset = 0;
  uint32_t name_len = 0;
  uint32_t value_len = 0;
};
format::DiskXattr EncodeXattr(const XattrRef& x);
XattrRef DecodeXattr(const format::DiskXattr& d);

// The size of one record of region r: 0 for the regions that are not
// tables of records (manifest, strings, data).
size_t RecordSize(format::Region r);

// The column layout of a table (format::kIncompatColumns): byte j of record
// i moves from i * record + j to j * count + i (ToColumns) and back
// (FromColumns). REQUIRES: bytes.size() is a multiple of `record` (> 0).
void ToColumns(std::span<uint8_t> bytes, size_t record);
void FromColumns(std::span<uint8_t> bytes, size_t record);

}  // namespace cryptex::records
