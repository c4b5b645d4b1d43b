// The policy agent's small state in the store directory (docs/POLICY.md,
// "The agent"), beside the store's own state file and written the same way
// (ReplaceFile: a reader sees the old file or the new one):
//
//   decisions   the last decision per patch (what `cryptex status` shows as
//               pending, and what keeps the history from growing when the
//               agent defers the same patch every hour: a decision that did
//               not change is not recorded again);
//   health      the latest results of each configured health check (at most
//               `keep` per check, newest last);
//   agent.lock  flock(LOCK_EX) by each `cryptex agent` run for its duration.
//
// These files are not part of the hash-chained history: losing them costs
// at most one repeated "decide" record per patch.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "durable.h"
#include "status.h"

namespace cryptex::store {

struct Decision {
  std::string line;
  std::string patch;
  std::string version;
  std::string verdict;  // install | defer | reject | revert
  int64_t until = 0;    // defer: when it is asked again
  std::string who;      // "policy:PLUGIN[,PLUGIN...]"
  std::string reason;
  int64_t at = 0;            // when this decision was first made
  std::string chain;         // fingerprint of the chain's configuration (reject holds while equal)
  std::string activation;    // relaunch | reboot
  int64_t activated_at = 0;  // when the agent activated it (0: it did not)
  // The action of this decision failed ("FILE-SIGNATURE\nmessage"): the same
  // decision on the same file is not retried (so that a patch the store
  // refuses does not add records every run).
  std::string failed;

  // The same decision (what is compared to decide whether to record it).
  bool SameAs(const Decision& o) const {
    return verdict == o.verdict && until == o.until && who == o.who && reason == o.reason;
  }
};

struct Decisions {
  // Key: Key(line, patch).
  std::map<std::string, Decision> by_patch;
  // Refused offered files: file name -> "size mtime: message" (recorded once).
  std::map<std::string, std::string> refused_files;

  static std::string Key(const std::string& line, const std::string& patch) {
    return line + "/" + patch;
  }
  std::string Encode() const;
  static Result<Decisions> Decode(const std::string& bytes, const std::string& what);
};

struct HealthRecord {
  int64_t at = 0;
  bool ok = false;
  std::string detail;  // "exit 1", "timed out after 5s", ...
};

struct HealthLog {
  std::map<std::string, std::vector<HealthRecord>> by_check;  // oldest first

  // Appends `r` to check `name`, keeping its newest `keep`.
  void Add(const std::string& name, HealthRecord r, size_t keep);
  std::string Encode() const;
  static Result<HealthLog> Decode(const std::string& bytes, const std::string& what);
};

// Read (a missing file is empty) and write (atomically) in store `dir`.
Result<Decisions> ReadDecisions(const std::string& dir);
Status WriteDecisions(const std::string& dir, const Decisions& d);
Result<HealthLog> ReadHealthLog(const std::string& dir);
Status WriteHealthLog(const std::string& dir, const HealthLog& h);

// An exclusive flock on DIR/agent.lock, released on destruction. Waits for
// another agent run to finish.
class AgentLock {
 public:
  static Result<AgentLock> Take(const std::string& dir);

 private:
  explicit AgentLock(FileLock held) : held_(std::move(held)) {}
  FileLock held_;
};

}  // namespace cryptex::store
