// The policy host: loads plugins safely and asks them, one decision at a
// time, each in an isolated child process with a time limit; chains their
// votes. Nothing a plugin does (fail to load, crash, hang, return garbage)
// can take down the caller: it becomes a failed vote that defers, with the
// failure in its reason. docs/POLICY.md describes the rules.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "facts.h"
#include "status.h"

namespace cryptex::policy {

// Ordered by conservativeness: a higher value wins in a chain.
enum class Verdict { kInstall = 0, kDefer = 1, kReject = 2, kRevert = 3 };
std::string_view VerdictName(Verdict v);  // install | defer | reject | revert

struct Vote {
  std::string plugin;
  Verdict verdict = Verdict::kDefer;
  int64_t until = 0;    // kDefer: when to ask again (0: at the next run)
  std::string reason;   // the plugin's reason, or what failed
  bool failed = false;  // the plugin failed (verdict is then kDefer)
};

struct HostLimits {
  std::chrono::milliseconds timeout{5000};  // per call (load probe, check_options, decide)
  size_t reason_cap = 1024;                 // bytes a plugin may write as its reason
};

// A plugin that passed every check of Load. Copyable handle; holds the open
// descriptor of the checked file, and each call loads exactly that file (by
// descriptor) in a fresh child process.
class Plugin {
 public:
  // Opens DIR/NAME.so. NAME must be a bare name (no '/', not "." or ".."); the
  // directory and the file must be owned by root and not group- or
  // world-writable, and the file regular -- checked with fstat on the opened
  // descriptors (O_NOFOLLOW), so there is no check-then-use race. Then, in a
  // child: dlopen, the entry symbol, ABI major, struct size, name, and
  // check_options(options) if the plugin has it. Errors name the file:
  // kInvalidArgument if the plugin refused its options (a config error; the
  // message names the key), another code for every other refusal.
  static Result<Plugin> Load(const std::string& dir, const std::string& name,
                             const Options& options, HostLimits limits = {});

  const std::string& name() const;
  const std::string& path() const;  // DIR/NAME.so as opened

  // Asks the plugin about one patch. Never fails: a crash, a signal, a
  // timeout, a non-zero return, an out-of-range verdict, a reason longer
  // than the cap or not UTF-8 gives {kDefer, failed=true, reason=what
  // happened}.
  Vote Decide(const PatchFacts& patch, const DeviceFacts& device) const;

 private:
  struct Impl;
  std::shared_ptr<const Impl> impl_;
};

// One member of a configured chain: its plugin, or why it could not be
// loaded (then every vote it casts is a failed deferral naming that error).
struct ChainMember {
  std::string name;
  Options options;
  std::shared_ptr<const Plugin> plugin;  // null if loading failed
  Status load_error;
};

struct ChainDecision {
  Verdict verdict = Verdict::kDefer;
  int64_t until = 0;        // kDefer: the latest `until` among the deferring votes
  std::string reason;       // "PLUGIN: reason" of the winning vote(s), joined by "; "
  std::vector<Vote> votes;  // one per member, in chain order
};

// Asks every member (an empty chain defers: nothing allowed it). The most
// conservative verdict wins: revert > reject > defer > install.
ChainDecision DecideChain(const std::vector<ChainMember>& chain, const PatchFacts& patch,
                          const DeviceFacts& device);

}  // namespace cryptex::policy
