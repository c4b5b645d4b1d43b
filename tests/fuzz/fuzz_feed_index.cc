// The feed index (feed/index.h). Input: a whole index file, or a payload.
// Properties: never crashes; every refusal is kCorruption, kSignature or
// kUnsupported; a decoded payload re-encodes to a payload that decodes to
// the same index; and the input re-signed with the harness key as a payload
// verifies exactly when DecodePayload accepts it (the signature layer
// neither hides nor adds payload errors), with the same index.
#include <string>
#include <string_view>

#include "fuzz_support.h"
#include "index.h"

using namespace cryptex;
using namespace cryptex::feed;

namespace {

void ExpectRefusal(const Status& st, const char* what) {
  const Code c = st.code();
  if (c != Code::kCorruption && c != Code::kSignature && c != Code::kUnsupported) {
    fuzz::Finding(std::string(what) + ": unexpected error code: " + st.ToString());
  }
}

// DecodePayload, and the round trip through EncodePayload.
Result<Index> DecodeAndRoundTrip(std::string_view payload) {
  auto ix = DecodePayload(payload, "fuzz");
  if (!ix.ok()) {
    ExpectRefusal(ix.status(), "DecodePayload");
    return ix;
  }
  const std::string enc = EncodePayload(*ix);
  auto again = DecodePayload(enc, "fuzz re-encoded");
  if (!again.ok())
    fuzz::Finding("re-encoded payload does not decode: " + again.status().ToString());
  if (EncodePayload(*again) != enc) fuzz::Finding("index changed on a round trip");
  return ix;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  // As a whole file: signed by whatever the input says.
  auto v = VerifyIndex(input, fuzz::FixedTrust(), {}, "fuzz");
  if (!v.ok()) ExpectRefusal(v.status(), "VerifyIndex");
  // As a payload, decoded directly and signed by the harness key.
  auto direct = DecodeAndRoundTrip(input);
  const std::string payload(input);
  std::string message("cryptex-feed-index 1\0", 21);
  message += payload;
  auto sig = fuzz::FixedKey().Sign(
      std::span(reinterpret_cast<const uint8_t*>(message.data()), message.size()));
  if (!sig.ok()) fuzz::Finding("signing failed: " + sig.status().ToString());
  const std::string file = "cryptex-feed 1\nsig ed25519 " + HexEncode(fuzz::FixedKey().id()) + " " +
                           HexEncode(*sig) + "\n\n" + payload;
  auto signed_v = VerifyIndex(file, fuzz::FixedTrust(), {}, "fuzz");
  if (file.size() > kMaxIndexBytes) return 0;  // refused for its size alone
  if (signed_v.ok() != direct.ok()) {
    fuzz::Finding("a signed payload verifies iff it decodes: verify " +
                  signed_v.status().ToString() + ", decode " + direct.status().ToString());
  }
  if (signed_v.ok() && EncodePayload(signed_v->index) != EncodePayload(*direct)) {
    fuzz::Finding("VerifyIndex and DecodePayload read different indexes");
  }
  return 0;
}
