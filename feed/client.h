// The device side of a feed (docs/FEED.md, "Pulling"): fetch the index,
// verify it TUF-style, download the patches the agent wants, check each
// against its signed length and hash before the store sees it.
//
// Client state lives in STATE_DIR (the store's feed/ directory), apart from
// the store's state and history, which a feed failure never touches:
//   feed.json     newest index version seen and its expiry, the validators
//                 of the last fetch, keys announced by verified indexes, and
//                 the last refusals (bounded), replaced atomically
//   index.cxfeed  the newest verified index file (reused on a 304)
//   cache/        downloads: SHA256.part while incomplete (resumed next
//                 time), SHA256.cxpatch once its length and hash check out
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "index.h"
#include "keys.h"
#include "status.h"
#include "transport.h"

namespace cryptex::feed {

struct FeedSettings {
  std::string url;        // https://..., file:///..., or a directory
  std::string trust;      // index keys: a directory of *.pub or one .pub file
  std::string state_dir;  // where the client state lives (see above)
  TransportOptions transport;
};

// One refusal, as recorded in feed.json and printed by `cryptex feed status`.
struct Refusal {
  int64_t at = 0;
  std::string what;    // "index" or the patch id
  std::string reason;  // the error message (names the URL)
};

// What feed.json holds (`cryptex feed status`); read without the network.
struct ClientState {
  std::string url;              // the feed of the last fetch
  uint64_t newest_version = 0;  // 0: no index accepted yet
  std::string newest_sha256;    // of the newest index's payload (hex)
  int64_t published = 0;
  int64_t expires = 0;
  int64_t last_fetch = 0;          // last Refresh, accepted or not
  int64_t last_accepted = 0;       // last Refresh that accepted an index
  Validators validators;           // of the kept index
  std::vector<AnnouncedKey> keys;  // announced by verified indexes (kept)
  std::vector<Revocation> revoked;
  std::vector<Refusal> refusals;  // oldest first, at most kMaxRefusals
};

// The URL (or path) of `rel` in the feed at `base` (a URL ending in '/' or
// not, or a directory), for messages.
inline std::string FeedUrlOf(const std::string& base, const std::string& rel) {
  return base + (!base.empty() && base.back() == '/' ? "" : "/") + rel;
}

inline constexpr size_t kMaxRefusals = 50;
// Index keys announced by verified indexes that a device remembers.
inline constexpr size_t kMaxAnnouncedKeys = 64;
inline constexpr const char* kStateFile = "feed.json";

// Reads STATE_DIR/feed.json: an empty state if it does not exist,
// kCorruption naming the file if it is not a valid state.
Result<ClientState> ReadClientState(const std::string& state_dir);

// The kept index of settings.state_dir, verified again (with settings.trust
// and the keys announced before) and current at `now`, without contacting
// the feed: what `cryptex policy simulate` and `cryptex approve` see of the
// feed. kNotFound if no index was accepted yet; kCorruption if it is not the
// newest accepted or has expired (freeze).
Result<Index> ReadKeptIndex(const FeedSettings& settings, int64_t now);

class FeedClient {
 public:
  ~FeedClient();
  FeedClient(FeedClient&&) noexcept;
  FeedClient& operator=(FeedClient&&) noexcept;

  // Loads the trust, the client state (creating STATE_DIR 0700) and opens
  // the transport. Errors name the file or setting at fault.
  static Result<FeedClient> Open(const FeedSettings& settings);

  // Fetches the index (conditionally) and accepts it only if: its signature
  // is by a trusted or announced key; its version is not older than the
  // newest seen (rollback), and an equal version has the same payload;
  // it has not expired at `now` (freeze: a 304 re-checks the kept index).
  // Accepting persists the new state. A refusal is recorded in feed.json
  // and returned (kSignature / kCorruption / kIOError naming the URL); the
  // kept index is not used after a refusal. The index returned belongs to
  // the client: valid until its next Refresh or its end.
  Result<const Index*> Refresh(int64_t now);

  // Downloads `p` (resuming a partial download) and checks its length and
  // SHA-256 against the index. Returns the path of the checked file in the
  // cache. A hash mismatch deletes the download; every failure is recorded
  // as a refusal of p.id.
  Result<std::string> Download(const FeedPatch& p, int64_t now);

  // Records a refusal that the caller found (e.g. the downloaded image's
  // manifest does not match its index entry: mix-and-match).
  Status RecordRefusal(const Refusal& r);

  std::vector<Refusal> refusals() const;
  uint64_t newest_version() const;
  TransportStats stats() const;

  // The revocations of the newest accepted index, persisted in feed.json:
  // still applied after a refusal (a revocation only ever holds a patch
  // back, so an attacker gains nothing from it), unlike its offers.
  std::vector<Revocation> revocations() const;

 private:
  struct Impl;
  explicit FeedClient(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace cryptex::feed
