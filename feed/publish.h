// The vendor side of a feed (docs/FEED.md, "Publishing and revoking"):
// (re)writes a feed directory's signed index from the patches and base
// images in it. Used by `cryptex feed publish` and `cryptex feed revoke`.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "index.h"
#include "keys.h"
#include "status.h"

namespace cryptex::feed {

// Longest expiry a publisher may give an index (a frozen feed is noticed
// within this time at the latest).
inline constexpr int64_t kMaxExpirySeconds = int64_t{366} * 24 * 3600;

// "90s", "30m", "12h", "7d", "2w" or plain seconds, from 1 second to
// kMaxExpirySeconds: kInvalidArgument naming `what` otherwise.
Result<int64_t> ParseExpiry(std::string_view text, const std::string& what);

struct PublishOptions {
  std::string dir;                      // the feed directory
  std::vector<const PrivateKey*> keys;  // index keys, at least one
  int64_t now = 0;                      // "published"; expiry counts from it
  int64_t expires_in = 7 * 24 * 3600;   // seconds
  std::vector<AnnouncedKey> announce;   // index keys the new index announces
  // Checks each image's own signature (the patch key, which may differ from
  // the index keys). Null: the manifest and root are read without a
  // signature check (a device checks them when it installs).
  const TrustStore* image_trust = nullptr;
  // Version of the new index instead of the previous one's + 1; needed when
  // the previous index cannot be read. Refused if not above a readable
  // previous index's version (devices would refuse it as a rollback).
  std::optional<uint64_t> force_version;
  // A revocation to add (`cryptex feed revoke`); refused (kExists) if the
  // previous index already revokes that (line, id).
  std::optional<Revocation> revoke;
  // Test hook: called with each file's path after its manifest was read and
  // before it is hashed (tests change the file there).
  std::function<void(const std::string& path)> after_read;
};

struct PublishResult {
  Index index;                               // what was signed
  std::string path;                          // DIR/index.cxfeed
  std::optional<uint64_t> previous_version;  // of the index replaced, if any
};

// Scans opts.dir recursively (dot files and directories skipped) for
// *.cxpatch (patches) and *.cryptex (base images); opens each with the
// image library and records its manifest, root digest, length and SHA-256;
// keeps the previous index's revocations (plus opts.revoke); signs with
// every key and replaces DIR/index.cxfeed atomically and durably. On any
// error (a file that does not open or verify, a name a feed cannot serve,
// two files with one (line, id), an unreadable previous index) the old
// index is left as it was, and the error names the file at fault.
Result<PublishResult> Publish(const PublishOptions& opts);

// The bytes of the index file `path`: kNotFound if missing, kCorruption if
// larger than kMaxIndexBytes (refused unread), errors naming `path`.
Result<std::string> ReadIndexFile(const std::string& path);

}  // namespace cryptex::feed
