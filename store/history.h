// The store's history (docs/STORE.md, "History"): one JSON record per line,
// append-only, each carrying the SHA-256 of the previous record's line, and
// anchored by the state file (records committed + hash of the last one), so
// that an edited, reordered, inserted or truncated record is detected.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "sha256.h"
#include "status.h"

namespace cryptex::store {

// One plugin's vote in a "decide" record (the policy chain's, docs/POLICY.md).
struct HistoryVote {
  std::string plugin;
  std::string verdict;  // install | defer | reject | revert
  int64_t until = 0;    // defer: when to ask again (0: next run)
  std::string reason;
  bool failed = false;  // the plugin failed (load, crash, timeout, garbage): a deferral

  bool operator==(const HistoryVote&) const = default;
};

struct HistoryRecord {
  uint64_t seq = 0;  // 1, 2, 3, ... (the n-th record)
  int64_t time = 0;  // Unix seconds
  // add | install | activate | revert | revert-all | remove | refuse, and
  // from the policy agent: decide | approve
  std::string action;
  std::string line;  // image line (base image name); may be empty for a refusal
  std::string patch;
  std::string version;
  std::vector<std::string> cves;
  std::string severity;
  std::string who;     // "command", or "policy:PLUGIN[,PLUGIN...]" (the agent)
  std::string reason;  // free text: why (refusals), what was asked
  // Added later, encoded only when set (so older records keep their bytes
  // and hashes, and decode with these empty):
  std::string verdict;             // "decide": the chain's verdict
  int64_t until = 0;               // "decide" of a deferral: when it is asked again
  std::vector<HistoryVote> votes;  // "decide": each plugin's vote, in chain order
  std::string prev;  // hex SHA-256 of the previous record's line; 64 zeros for the first

  // The record as one line of JSON (no newline): the bytes that are hashed.
  std::string Encode() const;
  // Parses one line; kCorruption naming `what` if it is not a record.
  static Result<HistoryRecord> Decode(std::string_view line, const std::string& what);
};

// What the state file says about the history: how many records are
// committed and the hash of the last one (all zeros if none).
struct HistoryHead {
  uint64_t records = 0;
  Digest last{};
};

// SHA-256 of one encoded record line.
Digest RecordHash(std::string_view line);

// The committed records of history file `path` under `head`, checked: each
// line parses, seq counts 1, 2, ..., each prev is the hash of the line
// before, there are at least head.records lines and the last committed one
// hashes to head.last. Lines after the committed ones (left by a command
// killed between its append and its state commit) are not part of the
// history: *uncommitted_at is the byte offset where they start (the file
// size if none). kCorruption naming the record and what is wrong otherwise;
// a missing file is an empty history.
Result<std::vector<HistoryRecord>> ReadHistory(const std::string& path, const HistoryHead& head,
                                               uint64_t* uncommitted_at = nullptr);

}  // namespace cryptex::store
