// The policy agent (docs/POLICY.md, "The agent"): for every patch available
// to the device -- the store's installed patches (active ones too, so that
// revert votes can act) and the signed .cxpatch files of the configured
// patch_dir -- it builds the facts, asks the configured plugin chain, and
// carries the decision out through the store engine (install + activate,
// activate, revert; nothing for defer and reject). Every decision is
// recorded in the store's history as a "decide" record with each plugin's
// vote; one that only repeats the patch's last decision (a deferral asked
// again every hour) is not recorded again.
//
// Simulation (`cryptex policy simulate`) runs the same code with `dry_run`
// (with a feed: the offers of its kept index, fetching nothing):
// the same offers, facts and chain, and the same sequence of would-be
// changes (a patch that requires one installed earlier in the run sees it
// active), but nothing is written, no health check runs and no mount is
// touched.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "client.h"
#include "config.h"
#include "facts.h"
#include "iso_time.h"
#include "keys.h"
#include "plugin_host.h"
#include "status.h"
#include "store.h"

namespace cryptex::policy {

struct AgentOptions {
  int64_t now = 0;       // the decision time
  bool dry_run = false;  // simulate: change nothing
  // One line per decision (the journal line, without a newline).
  std::function<void(const std::string&)> log;
  // Called after each committed change of a line's active patches, to bring
  // running mounts along (cli FollowMounts); `live` false for a
  // reboot-class activation. Not called in a dry run.
  std::function<Status(const store::Store&, bool live)> follow_mounts;
  // Called as a patch is downloaded from the feed (bytes so far, its signed
  // length); the CLI draws a progress bar from it on a TTY. May be empty.
  std::function<void(const std::string& patch, uint64_t done, uint64_t total)> progress;
};

// One decision of a run.
struct AgentDecision {
  std::string line;
  std::string patch;
  std::string version;
  std::string file;  // the offered .cxpatch ("" if installed in the store)
  PatchState state = PatchState::kAvailable;
  std::string activation;  // relaunch | reboot
  ChainDecision chain;     // verdict, until, reason, votes (held or blocked: the host's)
  std::string who;         // "policy:PLUGIN[,PLUGIN...]", or "agent" (blocked)
  // What is (or in a dry run would be) done: "install+activate", "activate",
  // "revert", or "none".
  std::string action;
  bool held = false;      // a rejection that still holds: not asked again
  bool recorded = false;  // a "decide" record was (would be) written
  Status outcome;         // the action's result (ok in a dry run)
};

struct AgentReport {
  std::vector<AgentDecision> decisions;
  std::vector<std::string> refused_files;  // offered files that do not verify (message)
  std::vector<HealthResult> health_run;    // the checks this run ran
  bool failed = false;                     // an action failed, or the feed was refused (exit 1)
  // The feed (cfg.feed set, not in a dry run): the index version accepted
  // this run (0: none), the refusal of the index ("" if none), and the
  // refusals of this run's downloads ("ID: MESSAGE").
  uint64_t feed_version = 0;
  std::string feed_refused;
  std::vector<std::string> feed_refused_patches;
};

// The feed client's settings of `cfg` (cfg.feed must be set).
feed::FeedSettings FeedSettingsOf(const Config& cfg);

// The device's bucket: cfg.device_bucket, else the first 8 bytes of
// SHA-256(/etc/machine-id) mod 100. kNotFound naming the file if there is
// no machine id.
Result<uint32_t> DeviceBucket(const Config& cfg);

// The fingerprint of the configured chain (plugin names and options, in
// order): a rejection holds while it is unchanged.
std::string ChainFingerprint(const Config& cfg);

// Loads the chain of `cfg`. A plugin that refuses its options is a config
// error (kInvalidArgument naming the config file and the plugin's section);
// any other load failure becomes a member whose votes are failed deferrals.
Result<std::vector<ChainMember>> LoadChain(const Config& cfg);

// One run. Errors are about the run itself (no store, a damaged history,
// a config error); a failed action is reported in its decision and in
// `failed`, and the run goes on with the next patch.
//
// With cfg.feed set (docs/FEED.md, "Pulling (device side)"), the run first
// refreshes the feed's index. Each entry of an accepted index for a line of
// the store is offered with the facts the index signs, before anything is
// downloaded; its revocations (kept from the newest accepted index) set
// patch.revoked of offered and installed patches. Only an install verdict
// downloads the patch, which must then verify with `trust` and match its
// index entry (mix-and-match otherwise) before the store sees it. A refused
// index or download is recorded in the feed's state (feed.json), reported
// in AgentReport::feed_refused*, makes the run fail, and changes nothing in
// the store: the store's state, history and patch files stay as they were,
// and installed patches are decided as usual.
Result<AgentReport> RunAgent(const Config& cfg, const TrustStore& trust,
                             const std::vector<ChainMember>& chain, const AgentOptions& opts);

// `cryptex approve`: records an approval of patch `id` (in line `line`, ""
// if the id is unique) in the history (action "approve"); the agent gives
// plugins patch.approved from it. The patch must be installed in the store,
// offered in cfg.patch_dir, or listed by the feed's kept index (the newest
// accepted, while current; the feed is not contacted). kNotFound otherwise.
Status Approve(const Config& cfg, const TrustStore& trust, const std::string& line,
               const std::string& id, const std::string& reason);

// Runs the configured health checks now (sh -c, killed after their
// timeout) and stores their results (bounded per check). Returns them.
Result<std::vector<HealthResult>> RunHealthChecks(const Config& cfg, int64_t now);

// The journal line of a decision: "cryptex-agent: LINE PATCH: VERDICT (REASON)".
std::string JournalLine(const AgentDecision& d);

// "2026-11-29T10:00:00Z".
using ::cryptex::IsoTime;
// ISO 8601 UTC ("2026-11-29T10:00:00Z", "2026-11-29T10:00Z", "2026-11-29")
// or "@UNIX". kInvalidArgument naming `what` otherwise.
Result<int64_t> ParseTime(const std::string& text, const std::string& what);

}  // namespace cryptex::policy
