// The full reader given an arbitrary image. The harness signs the (fuzzed)
// superblock with the fixed trusted key and recomputes nothing else, so the
// fuzzer explores everything past the signature check: superblock geometry
// against the file, the root of the tree, and whatever the fuzzer manages to
// keep consistent with it. See fuzz_image_resealed for the parsers behind
// the tree.
#include "fuzz_support.h"
#include "surgery.h"

using namespace cryptex;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size > (1u << 20)) return 0;
  surgery::Bytes image(data, data + size);
  if (image.size() >= format::kBlockSize) {
    if (!surgery::SignLastBlock(&image, fuzz::FixedKey()).ok()) fuzz::Finding("signing failed");
  }
  fuzz::ExploreImage(image);
  return 0;
}
