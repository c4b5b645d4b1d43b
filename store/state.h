// The store's state file (docs/STORE.md, "State file"): every image line
// (its base, installed patches, active order, highest release counter seen)
// and the history anchor, as one JSON document replaced atomically. Its
// rename is the commit point of every change to the store.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "history.h"
#include "sha256.h"
#include "status.h"

namespace cryptex::store {

struct PatchEntry {
  std::string id;
  std::string version;
  uint64_t release_counter = 0;
  std::string activation;  // relaunch | reboot (the manifest's class; "" = relaunch)
  std::string severity;
  std::vector<std::string> cves;
  std::vector<std::string> requires_patches;  // bottom first
  int64_t installed_at = 0;
  uint64_t size = 0;        // bytes of the stored patch file
  Digest root{};            // the patch image's signed root digest
  uint64_t tree_files = 0;  // delta files with a persisted hash tree
  uint64_t tree_bytes = 0;  // size of the persisted tree file (0: none)
  // SHA-256 of the stored patch file and of its tree file, taken at install
  // from the copies as checked: what activation and status compare the
  // stored files with (a check that needs no trusted key). Absent in states
  // written before they were recorded.
  std::optional<Digest> sha256;
  std::optional<Digest> tree_sha256;
};

struct LineState {
  std::string name;
  std::string base_version;
  Digest base_root{};
  uint64_t base_size = 0;
  int64_t added_at = 0;
  uint64_t highest_counter = 0;     // highest release counter seen (base or patch)
  std::vector<PatchEntry> patches;  // installed, in install order
  std::vector<std::string> active;  // active ids, bottom first

  const PatchEntry* Find(const std::string& id) const;
  bool IsActive(const std::string& id) const;
};

struct StoreState {
  HistoryHead history;
  std::map<std::string, LineState> lines;

  std::string Encode() const;
  // kCorruption naming `what` if the document is not a valid state.
  static Result<StoreState> Decode(const std::string& bytes, const std::string& what);
};

// Names used as file names (line names, patch ids): 1..128 bytes of
// [A-Za-z0-9._+-], not starting with '.'. kInvalidArgument naming `what`.
Status CheckStoreName(const std::string& name, const std::string& what);

}  // namespace cryptex::store
