// The feed index (docs/FEED.md, "The index"): the one mutable file of a
// feed, `index.cxfeed`, signed by the feed's index key(s). It lists every
// patch (and base image) the feed serves with what a device needs to decide
// before downloading and to check what it downloads, the revocations, and
// the index keys it announces (key rotation: an index signed by a trusted
// key may announce the key that will sign the next ones).
//
// File: a text header, then the payload (a JSON document):
//   cryptex-feed 1\n
//   sig ed25519 <key id, 64 hex> <signature, 128 hex>\n   (one or more)
//   \n
//   <payload>
// Each signature is over "cryptex-feed-index 1\0" followed by the payload
// bytes exactly as stored (no canonical form needed).
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "keys.h"
#include "sha256.h"
#include "status.h"

namespace cryptex::feed {

inline constexpr const char* kIndexFile = "index.cxfeed";
// A larger index is refused unread (a hostile server's endless index).
inline constexpr uint64_t kMaxIndexBytes = uint64_t{16} << 20;
// More signature lines than this are refused (each costs a verification).
inline constexpr size_t kMaxIndexSignatures = 16;

struct FeedPatch {
  std::string id;
  std::string line;                           // the image line (the base image's name)
  std::string version;                        // the manifest's version
  std::string file;                           // path of the .cxpatch relative to the feed root
  uint64_t length = 0;                        // bytes of that file
  Digest sha256{};                            // SHA-256 of that file
  Digest root{};                              // the patch image's signed root digest
  Digest base_root{};                         // the base it applies to
  std::vector<std::string> requires_patches;  // bottom first
  uint64_t release_counter = 0;
  std::string severity;  // low | medium | high | critical ("" = none)
  std::vector<std::string> cves;
  std::string activation;   // relaunch | reboot
  int64_t released_at = 0;  // unix seconds (0 = unknown)
};

struct FeedBase {
  std::string line;
  std::string version;
  std::string file;
  uint64_t length = 0;
  Digest sha256{};
  Digest root{};
  uint64_t release_counter = 0;
};

struct Revocation {
  std::string line;  // "" = the id on every line
  std::string id;
  std::string reason;
  int64_t at = 0;  // when it was revoked (unix seconds)
};

struct AnnouncedKey {
  KeyId id{};
  std::array<uint8_t, 32> raw{};  // the Ed25519 public key
};

struct Index {
  uint64_t version = 0;  // grows with every publish; never reused
  int64_t published = 0;
  int64_t expires = 0;  // unix seconds; a device refuses the index after it
  std::vector<FeedPatch> patches;
  std::vector<FeedBase> bases;
  std::vector<Revocation> revoked;
  std::vector<AnnouncedKey> keys;  // index keys this index announces

  // The patch `id` of `line`, or nullptr.
  const FeedPatch* FindPatch(const std::string& line, const std::string& id) const;
  // The revocation of patch `id` on `line` (or on every line), or nullptr.
  const Revocation* FindRevocation(const std::string& line, const std::string& id) const;
};

// True if `rel` is a path a feed can serve: relative, [A-Za-z0-9._-]
// components joined by '/', none of them "." or ".." (the rule of
// CheckFeedPath, transport.h, which should call this one definition).
bool IsFeedPath(std::string_view rel);

// The payload (JSON) of `index` (docs/FEED.md, "The index"). Decoding is
// strict: an unknown format or member, a missing or wrongly typed member, a
// digest that is not 64 lower-case hex digits, a file path that fails
// CheckFeedPath, an empty or zero length, a string longer than
// format::kMaxManifestStringLen or holding a control character, a member
// given twice, or two entries with the same (line, id) (patches,
// revocations), file (bases) or key id (keys) is refused.
std::string EncodePayload(const Index& index);
// kCorruption naming `what` if `payload` is not a valid index payload.
Result<Index> DecodePayload(std::string_view payload, const std::string& what);

// EncodePayload REQUIRES every string to be valid UTF-8 (nlohmann's writer
// throws otherwise) and checks nothing else: a publisher decodes what it
// encoded before signing it.

// The whole file, the payload signed by each key (at least one; a key given
// twice signs once). kInvalidArgument if a string is not UTF-8, or if the
// file would be larger than kMaxIndexBytes (devices would refuse it).
Result<std::string> SignIndex(const Index& index, const std::vector<const PrivateKey*>& keys);

struct VerifiedIndex {
  Index index;
  std::string payload;           // the signed bytes
  std::vector<KeyId> signed_by;  // the trusted keys whose signature verified
};

// Parses `file` (named `what` in messages) and checks its signatures: ok
// when at least one signature verifies under a key of `trusted` or of
// `extra` (keys announced by an index verified earlier). kCorruption for a
// malformed file; kSignature naming the key ids when no signature is by a
// trusted key or one by a trusted key does not verify.
Result<VerifiedIndex> VerifyIndex(std::string_view file, const TrustStore& trusted,
                                  const std::vector<AnnouncedKey>& extra, const std::string& what);

// The index of a whole index file with its signatures NOT checked: for the
// publisher reading back its own previous index (publish.h), never for a
// device. kCorruption / kUnsupported naming `what` as VerifyIndex would.
Result<Index> ReadIndexUnverified(std::string_view file, const std::string& what);

}  // namespace cryptex::feed
