// Superblock decode + signature check. Input: the image's last block (4096
// bytes; shorter inputs are zero-padded, longer ones cut), whose trailer is
// its start (classic layout) or its last 640 bytes (compact). Properties:
// decoding never crashes; a decoded superblock re-encodes to exactly the
// signed 512 bytes (every signed byte has one meaning); a superblock the
// fixed key signed verifies and decodes to the same fields.
#include <cstring>

#include "format.h"
#include "fuzz_support.h"
#include "superblock.h"
#include "surgery.h"

using namespace cryptex;

namespace {

void CheckDecoded(const std::vector<uint8_t>& block, uint64_t file_size) {
  auto info = DecodeSuperblock(block, file_size, "fuzz");
  if (!info.ok()) return;
  const auto enc = EncodeSuperblock(*info);
  const auto trailer = TrailerOf(block);
  if (trailer.empty()) fuzz::Finding("a superblock decoded from no trailer");
  if (std::memcmp(enc.data(), trailer.data(), enc.size()) != 0) {
    fuzz::Finding("decoded superblock does not re-encode to its signed bytes");
  }
  if (info->image_size != file_size) fuzz::Finding("image_size accepted for another file size");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::vector<uint8_t> block(format::kBlockSize, 0);
  if (size > 0) std::memcpy(block.data(), data, std::min<size_t>(size, block.size()));
  format::DiskSuperblock d;
  const auto found = TrailerOf(block);
  std::memcpy(&d, found.empty() ? block.data() : found.data(), sizeof d);
  const uint64_t claimed = d.image_size.get();
  CheckDecoded(block, claimed);
  CheckDecoded(block, 1ull << 20);
  CheckDecoded(block, claimed & ~uint64_t{4095});

  // As found: the signature (almost always) does not verify, cleanly.
  Status st = VerifySuperblockSignature(block, fuzz::FixedTrust(), "fuzz");
  (void)st;
  // Signed with the fixed key: must verify, and decode to the same fields.
  auto before = DecodeSuperblock(block, claimed, "fuzz");
  surgery::Bytes signed_block = block;
  if (!surgery::SignLastBlock(&signed_block, fuzz::FixedKey()).ok())
    fuzz::Finding("signing failed");
  Status v = VerifySuperblockSignature(signed_block, fuzz::FixedTrust(), "fuzz");
  if (!v.ok()) {
    fuzz::Finding("a superblock signed by the trusted key does not verify: " + v.ToString());
  }
  auto after = DecodeSuperblock(signed_block, claimed, "fuzz");
  if (before.ok()) {
    if (!after.ok()) fuzz::Finding("re-signing broke decoding: " + after.status().ToString());
    if (EncodeSuperblock(*before) != EncodeSuperblock(*after)) {
      fuzz::Finding("re-signing changed decoded fields");
    }
  }
  CheckDecoded(signed_block, claimed);
  return 0;
}
