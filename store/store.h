// The device store (docs/STORE.md): sealed base images, installed patches,
// each image line's state and the history, in one directory.
//
// Readers (status, history, a mount) take no lock: they read the state file,
// which every change replaces atomically, so they see the store as of one
// committed change, never a half-applied one. Every mutating call takes an
// exclusive flock on DIR/lock for its whole duration (two commands never
// interleave), first repairs what a killed command may have left (an
// uncommitted history tail, files no state refers to), then checks, writes
// new files under new names, appends its history record and commits by
// replacing the state file. A crash at any point leaves the old state or the
// new one (docs/STORE.md, "Crash safety").
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "history.h"
#include "image.h"
#include "keys.h"
#include "state.h"
#include "status.h"
#include "view.h"

namespace cryptex::store {

inline constexpr const char* kDefaultStoreDir = "/var/lib/cryptex";

// Who asked for a change, and why (history records).
struct Actor {
  std::string who = "command";
  std::string reason;
};

// The files of one level of a line (what a mount opens), from one state.
struct LevelFiles {
  std::string base;
  std::vector<std::string> patches;  // bottom first
  std::vector<std::string> trees;    // per patch: its tree file, "" if none
  uint64_t generation = 0;           // history records committed when read
};

// One stored file that does not match the state (status).
struct Damage {
  std::string line;
  std::string patch;  // "" for the base
  Status problem;
};

class Store final {
 public:
  // `dir` need not exist yet (Add creates it). `trust` verifies signatures
  // of everything added, installed or opened; it must outlive the store.
  static Result<std::unique_ptr<Store>> Open(const std::string& dir, const TrustStore* trust);

  const std::string& dir() const { return dir_; }
  std::string BasePath(const std::string& line) const;
  std::string PatchPath(const std::string& line, const std::string& id) const;
  std::string TreePath(const std::string& line, const std::string& id) const;

  // ---- readers (no lock) ----
  // The last committed state (empty if the store has none yet).
  Result<StoreState> ReadState() const;
  Result<LineState> ReadLine(const std::string& name) const;
  // The files of `level` of line `name`: "" for the active level, "base",
  // or an active patch id (the active patches up to and including it).
  Result<LevelFiles> FilesAt(const std::string& name, const std::string& level) const;
  static Result<LevelFiles> FilesAt(const Store& s, const StoreState& st, const std::string& name,
                                    const std::string& level);
  // A View of that level, with the persisted hash trees of its delta files.
  Result<std::unique_ptr<View>> OpenLevel(const std::string& name, const std::string& level,
                                          ImageOptions opts = {}) const;
  // The committed history, checked (history.h ReadHistory); *uncommitted
  // gets the bytes past the committed records (a killed command's tail).
  Result<std::vector<HistoryRecord>> History(uint64_t* uncommitted = nullptr) const;
  // Checks of every stored file against the state: each image opens
  // (signature, superblock), has the recorded size and root digest; each
  // patch and tree file is the bytes install stored (CheckStoredPatch).
  // Reads no base content: cost O(patches + tree bytes), independent of the
  // bases' sizes (a damaged base block fails its read, EIO at a mount).
  Result<std::vector<Damage>> Check() const;
  // The stored files of installed patch `p` of line `line` are the bytes
  // install checked: sizes and SHA-256 as recorded (PatchEntry::sha256);
  // reads the patch and its tree file once, needs no trusted key. For an
  // entry without recorded digests, a full check against its signed root
  // (needs the trusted keys). kCorruption naming the file and what differs.
  Status CheckStoredPatch(const std::string& line, const PatchEntry& p) const;

  // ---- changes (exclusive lock; each commits history records) ----
  // Registers base image `image` under its manifest name. Returns the line;
  // *added is false if the same base (same root digest) was already there
  // (no change). kExists if the name holds another base.
  Result<LineState> Add(const std::string& image, const Actor& actor, bool* added = nullptr);
  // Checks everything (docs/STORE.md, "Install"), then stores the patch and
  // its hash trees; with `activate` also activates it (same commit).
  // A refusal leaves the store unchanged except for one "refuse" record.
  Result<PatchEntry> Install(const std::string& patch, bool activate, const Actor& actor);
  // `line` may be "" when the id is unique in the store.
  Status Activate(const std::string& line, const std::string& id, const Actor& actor);
  Status Revert(const std::string& line, const std::string& id, const Actor& actor);
  Status RevertAll(const std::string& line, const Actor& actor);
  Status Remove(const std::string& line, const std::string& id, const Actor& actor);
  // Appends `records` (seq, time and prev are filled in) to the history in
  // one commit, changing no line: the policy agent's decisions and
  // approvals (docs/POLICY.md). kNotFound if there is no store.
  Status Note(std::vector<HistoryRecord> records);

 private:
  Store(std::string dir, const TrustStore* trust) : dir_(std::move(dir)), trust_(trust) {}
  class Lock;
  class Txn;
  std::string StatePath() const { return dir_ + "/state"; }
  std::string HistoryPath() const { return dir_ + "/history"; }
  ImageOptions Opts() const;
  // The line holding patch `id` (`line` if given).
  Result<std::string> LineOf(const StoreState& st, const std::string& line,
                             const std::string& id) const;

  std::string dir_;
  const TrustStore* trust_;
};

}  // namespace cryptex::store
