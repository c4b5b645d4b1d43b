// The parsers behind the Merkle tree, reached through hostile-but-signed
// images. Input layout (compact, so that mutations land on metadata):
//
//   [0, 512)    the superblock's signed bytes (regions, features, chunk size,
//               salt... as the fuzzer likes; geometry fields are recomputed)
//   [512, end)  the image bytes from file offset 4096 on (frames, inodes,
//               dirents, extents, xattrs, strings, manifest), zero-padded
//
// The harness puts a valid header block in front, RE-SEALS (computes the
// dm-verity tree over the data area and signs the superblock with the fixed
// trusted key), opens the result and walks everything: readdir, lookup,
// getattr, read of every file, readlink, xattrs, VerifyAll.
#include <cstring>

#include "format.h"
#include "fuzz_support.h"
#include "surgery.h"

using namespace cryptex;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < sizeof(format::DiskSuperblock) || size > (1u << 20)) return 0;
  surgery::SuperblockBytes sb;
  std::memcpy(sb.data(), data, sb.size());
  surgery::Bytes area(format::kBlockSize, 0);
  format::DiskHeader h;
  std::memset(&h, 0, sizeof h);
  std::memcpy(h.magic, format::kHeaderMagic, 8);
  h.format_version.set(format::kFormatVersion);
  std::memcpy(area.data(), &h, sizeof h);
  area.insert(area.end(), data + sb.size(), data + size);
  auto image = surgery::SealRaw(std::move(area), sb, fuzz::FixedKey());
  if (!image.ok()) fuzz::Finding("sealing failed: " + image.status().ToString());
  fuzz::ExploreImage(*image);
  return 0;
}
