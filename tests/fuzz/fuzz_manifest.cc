// Manifest TLV decode. Input: the manifest region bytes. Properties: never
// crashes; a decoded manifest re-encodes to bytes that decode to the same
// manifest (no field is lost or changes meaning on the way round).
#include "fuzz_support.h"
#include "manifest.h"

using namespace cryptex;

namespace {

bool Same(const Manifest& a, const Manifest& b) {
  return a.name == b.name && a.version == b.version && a.description == b.description &&
         a.release_counter == b.release_counter && a.created_at == b.created_at &&
         a.patch_id == b.patch_id && a.base_root_digest == b.base_root_digest &&
         a.requires_patches == b.requires_patches && a.severity == b.severity && a.cves == b.cves &&
         a.released_at == b.released_at && a.activation == b.activation;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto m = Manifest::Decode(std::span<const uint8_t>(data, size), "fuzz");
  if (!m.ok()) {
    const Code c = m.status().code();
    if (c != Code::kCorruption && c != Code::kUnsupported) {
      fuzz::Finding("unexpected error code: " + m.status().ToString());
    }
    return 0;
  }
  const std::vector<uint8_t> enc = m->Encode();
  auto again = Manifest::Decode(enc, "fuzz re-encoded");
  if (!again.ok())
    fuzz::Finding("re-encoded manifest does not decode: " + again.status().ToString());
  if (!Same(*m, *again)) fuzz::Finding("manifest changed on a round trip");
  return 0;
}
