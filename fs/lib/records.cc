#include "records.h"

#include <cstring>
#include <string>
#include <vector>

namespace cryptex::records {

using namespace format;

DiskInode EncodeInode(const InodeInfo& in) {
  DiskInode d;
  std::memset(&d, 0, sizeof d);
  d.mode.set(in.mode);
  d.uid.set(in.uid);
  d.gid.set(in.gid);
  d.nlink.set(in.nlink);
  d.size.set(in.size);
  d.mtime_sec.set(static_cast<uint64_t>(in.mtime_sec));
  d.mtime_nsec.set(in.mtime_nsec);
  d.flags.set(in.flags);
  d.rdev.set(in.rdev);
  d.payload.set(in.payload);
  d.payload_count.set(in.payload_count);
  d.xattr_count.set(in.xattr_count);
  d.xattr_index.set(in.xattr_index);
  std::memcpy(d.digest, in.digest.data(), sizeof d.digest);
  d.source_offset.set(in.source_offset);
  d.source_len.set(in.source_len);
  d.stored_size.set(in.stored_size);
  return d;
}

Result<InodeInfo> DecodeInode(const DiskInode& d, uint64_t ino, const std::string& where) {
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
  std::memcpy(i.digest.data(), d.digest, sizeof d.digest);
  i.source_offset = d.source_offset.get();
  i.source_len = d.source_len.get();
  i.stored_size = d.stored_size.get();
  auto bad = [&](const std::string& m) {
    return Status::Corruption(where + ": inode " + std::to_string(ino) + ": " + m);
  };
  if (i.mtime_nsec >= 1000000000u) return bad("nanoseconds out of range");
  if (i.flags & ~kInodeFlagsKnown) return bad("unknown flags");
  if (d.reserved.get() != 0) return bad("reserved field is not zero");
  if (!i.is_sourced() && (i.source_offset != 0 || i.source_len != 0 || i.stored_size != 0)) {
    return bad("source fields set without a lower-content or delta flag");
  }
  return i;
}

DiskDirent EncodeDirent(const Dirent& e) {
  DiskDirent d;
  std::memset(&d, 0, sizeof d);
  d.name_offset.set(e.name_offset);
  d.inode.set(e.ino);
  d.name_len.set(e.name_len);
  d.type = e.type;
  return d;
}

Dirent DecodeDirent(const DiskDirent& d) {
  return {d.name_offset.get(), d.name_len.get(), d.inode.get(), d.type};
}

DiskExtent EncodeExtent(const Extent& e) {
  DiskExtent d;
  d.frame.set(e.frame);
  d.offset.set(e.offset);
  return d;
}

Extent DecodeExtent(const DiskExtent& d) { return {d.frame.get(), d.offset.get()}; }

DiskFrame EncodeFrame(const Frame& f) {
  DiskFrame d;
  d.offset.set(f.offset);
  d.stored_size.set(f.stored_size);
  d.raw_size.set(f.raw_size);
  return d;
}

Frame DecodeFrame(const DiskFrame& d) {
  return {d.offset.get(), d.stored_size.get(), d.raw_size.get()};
}

DiskXattr EncodeXattr(const XattrRef& x) {
  DiskXattr d;
  d.name_offset.set(x.name_offset);
  d.value_offset.set(x.value_offset);
  d.name_len.set(x.name_len);
  d.value_len.set(x.value_len);
  return d;
}

XattrRef DecodeXattr(const DiskXattr& d) {
  return {d.name_offset.get(), d.value_offset.get(), d.name_len.get(), d.value_len.get()};
}

size_t RecordSize(Region r) {
  switch (r) {
    case kRegionInodes:
      return sizeof(DiskInode);
    case kRegionDirents:
      return sizeof(DiskDirent);
    case kRegionExtents:
      return sizeof(DiskExtent);
    case kRegionXattrs:
      return sizeof(DiskXattr);
    case kRegionFrames:
      return sizeof(DiskFrame);
    default:
      return 0;
  }
}

namespace {

// Moves byte j of record i between i * record + j (rows) and j * count + i
// (columns).
void Transpose(std::span<uint8_t> bytes, size_t record, bool to_columns) {
  const size_t count = bytes.size() / record;
  if (count < 2) return;  // one record is the same either way
  std::vector<uint8_t> out(bytes.size());
  for (size_t i = 0; i < count; ++i) {
    for (size_t j = 0; j < record; ++j) {
      const size_t row = i * record + j, col = j * count + i;
      if (to_columns) {
        out[col] = bytes[row];
      } else {
        out[row] = bytes[col];
      }
    }
  }
  std::memcpy(bytes.data(), out.data(), out.size());
}

}  // namespace

void ToColumns(std::span<uint8_t> bytes, size_t record) { Transpose(bytes, record, true); }
void FromColumns(std::span<uint8_t> bytes, size_t record) { Transpose(bytes, record, false); }

}  // namespace cryptex::records
