// The policy agent's commands (docs/POLICY.md): cryptex agent --once,
// cryptex policy simulate, cryptex approve, and the pending decisions that
// cryptex status shows.
#include <cstdio>
#include <ctime>
#include <fstream>
#include <string>
#include <thread>

#include "agent.h"
#include "cli.h"
#include "config.h"
#include "decisions.h"
#include "json.h"
#include "store.h"
#include "terminal.h"

namespace cryptex::cli {

const char* const kAgentConfigHelp =
    "  --config FILE    the configuration (default /etc/cryptex/cryptex.conf; when\n"
    "                   that does not exist: store /var/lib/cryptex, trust\n"
    "                   /etc/cryptex/keys, plugins = auto)\n";

Result<policy::Config> LoadConfigOf(const Args& args) {
  if (auto f = args.Get("--config")) return policy::LoadConfig(*f, /*missing_ok=*/false);
  return policy::LoadConfig(policy::kDefaultConfigPath, /*missing_ok=*/true);
}

namespace {

using policy::AgentDecision;
using policy::Config;

const char* const kConfigHelp = kAgentConfigHelp;

const char* StateName(policy::PatchState s) {
  switch (s) {
    case policy::PatchState::kAvailable:
      return "available";
    case policy::PatchState::kInstalled:
      return "installed";
    case policy::PatchState::kActive:
      return "active";
  }
  return "?";
}

Json DecisionJson(const AgentDecision& d) {
  Json j;
  j["line"] = d.line;
  j["patch"] = d.patch;
  j["version"] = d.version;
  j["file"] = d.file;
  j["state"] = StateName(d.state);
  j["activation"] = d.activation;
  j["verdict"] = std::string(policy::VerdictName(d.chain.verdict));
  j["until"] = d.chain.verdict == policy::Verdict::kDefer && d.chain.until != 0
                   ? Json(policy::IsoTime(d.chain.until))
                   : Json(nullptr);
  j["action"] = d.action;
  j["held"] = d.held;
  j["recorded"] = d.recorded;
  j["who"] = d.who;
  j["reason"] = d.chain.reason;
  Json votes = Json::array();
  for (const policy::Vote& v : d.chain.votes) {
    votes.push_back({{"plugin", v.plugin},
                     {"verdict", std::string(policy::VerdictName(v.verdict))},
                     {"until", v.until != 0 ? Json(policy::IsoTime(v.until)) : Json(nullptr)},
                     {"reason", v.reason},
                     {"failed", v.failed}});
  }
  j["votes"] = votes;
  j["error"] = d.outcome.ok() ? Json(nullptr) : Json(d.outcome.ToString());
  return j;
}

// A download's progress on stderr when it is a terminal and the patch is
// large: one line redrawn ("downloading ID: 12.0 MiB of 40.0 MiB (30%)").
class ProgressBar {
 public:
  static constexpr uint64_t kMinBytes = uint64_t{1} << 20;

  void Update(const std::string& id, uint64_t done, uint64_t total) {
    if (total < kMinBytes || !StderrIsTerminal()) return;
    const int pct = static_cast<int>(done * 100 / total);
    if (id == id_ && pct == pct_ && done != total) return;
    id_ = id;
    pct_ = pct;
    std::fprintf(stderr, "\r\033[Kdownloading %s: %s of %s (%d%%)%s", ForTerminal(id, true).c_str(),
                 HumanBytes(done).c_str(), HumanBytes(total).c_str(), pct,
                 done >= total ? "\n" : "");
    std::fflush(stderr);
  }

 private:
  std::string id_;
  int pct_ = -1;
};

Json ReportJson(const policy::AgentReport& r, int64_t at) {
  Json doc;
  doc["at"] = policy::IsoTime(at);
  Json ds = Json::array();
  for (const auto& d : r.decisions) ds.push_back(DecisionJson(d));
  doc["decisions"] = ds;
  doc["refused_files"] = r.refused_files;
  Json feed;
  feed["version"] = r.feed_version;
  feed["refused"] = r.feed_refused.empty() ? Json(nullptr) : Json(r.feed_refused);
  feed["refused_patches"] = r.feed_refused_patches;
  doc["feed"] = feed;
  Json hs = Json::array();
  for (const auto& h : r.health_run) hs.push_back({{"check", h.check}, {"ok", h.ok}});
  doc["health"] = hs;
  return doc;
}

// Loads config, trust and chain; returns kExitOk or the failure's exit code.
int Prepare(const std::string& cmd, const Args& args, Config* cfg, TrustStore* trust,
            std::vector<policy::ChainMember>* chain) {
  auto c = LoadConfigOf(args);
  if (!c.ok()) return Fail(cmd, c.status());
  *cfg = std::move(*c);
  auto t = TrustStore::LoadDir(cfg->trust);
  if (!t.ok()) return Fail(cmd, t.status());
  *trust = std::move(*t);
  if (chain != nullptr) {
    auto ch = policy::LoadChain(*cfg);
    if (!ch.ok()) return Fail(cmd, ch.status());
    *chain = std::move(*ch);
  }
  return kExitOk;
}

int Simulate(int argc, char** argv) {
  Args args(argc, argv, {"--config", "--at"}, {"--json"});
  if (args.help()) {
    std::printf(
        "usage: cryptex policy simulate [--at TIME] [--json] [--config FILE]\n\n"
        "What the configured plugin chain would decide now (or at TIME) for every\n"
        "patch available to the device, and what the agent would do, in the order\n"
        "`cryptex agent --once` would do it. Changes nothing: no record, no state,\n"
        "no health check is run (the stored results are used), no mount is touched.\n"
        "TIME is ISO 8601 UTC (2026-12-01T10:00:00Z, 2026-12-01) or @UNIX-SECONDS.\n\n"
        "%s",
        kConfigHelp);
    return kExitOk;
  }
  if (!args.ok()) return Usage("policy simulate", args.error());
  if (!args.positional().empty()) return Usage("policy simulate", "expected no argument");
  int64_t at = static_cast<int64_t>(std::time(nullptr));
  if (auto t = args.Get("--at")) {
    auto parsed = policy::ParseTime(*t, "--at");
    if (!parsed.ok()) return Usage("policy simulate", parsed.status().message());
    at = *parsed;
  }
  Config cfg;
  TrustStore trust;
  std::vector<policy::ChainMember> chain;
  if (int rc = Prepare("policy simulate", args, &cfg, &trust, &chain); rc != kExitOk) return rc;
  policy::AgentOptions opts;
  opts.now = at;
  opts.dry_run = true;
  auto r = policy::RunAgent(cfg, trust, chain, opts);
  if (!r.ok()) return Fail("policy simulate", r.status());
  if (args.Has("--json")) return PrintJson("policy simulate", ReportJson(*r, at));
  const bool tty = StdoutIsTerminal();
  std::printf("at %s, chain %s:\n", policy::IsoTime(at).c_str(),
              ForTerminal(cfg.plugins.empty() ? "(empty)" : [&] {
                std::string s;
                for (const auto& p : cfg.plugins) s += (s.empty() ? "" : ",") + p;
                return s;
              }(), tty).c_str());
  if (!cfg.feed.empty()) {
    const std::string f = r->feed_version != 0
                              ? "feed: the kept index, version " + std::to_string(r->feed_version)
                              : "feed: no offers (" + r->feed_refused + ")";
    std::printf("  %s\n", ForTerminal(f, tty).c_str());
  }
  for (const auto& m : r->refused_files) std::printf("  refused %s\n", ForTerminal(m, tty).c_str());
  for (const auto& d : r->decisions) {
    std::string line = policy::JournalLine(d);
    line = "  " + line.substr(line.find(": ") + 2);
    std::printf("%s\n", ForTerminal(line, tty).c_str());
  }
  if (r->decisions.empty()) std::printf("  no patch available\n");
  return kExitOk;
}

}  // namespace

int CmdAgent(int argc, char** argv) {
  Args args(argc, argv, {"--config", "--at"}, {"--once", "--loop", "--json"});
  if (args.help()) {
    std::printf(
        "usage: cryptex agent --once [--at TIME] [--json] [--config FILE]\n"
        "       cryptex agent --loop [--config FILE]\n\n"
        "One run of the policy agent (cryptex-agent.service runs it from its timer):\n"
        "runs the configured health checks, then for every patch available to the\n"
        "device -- installed in the store (active ones too, so that plugins can\n"
        "revert them) or offered as a signed .cxpatch in patch_dir -- asks the\n"
        "plugin chain and carries the decision out through the store: install and\n"
        "activate, activate, revert, or nothing (defer, reject). Running mounts of\n"
        "the store follow each change. Every decision is recorded in the history\n"
        "('decide', with each plugin's vote); one that repeats the patch's last\n"
        "decision is not recorded again. Prints one line per decision; --json\n"
        "prints the run as one document instead.\n"
        "With feed = URL configured, the run first fetches and checks the feed's\n"
        "signed index (docs/FEED.md): its patches are offered with the facts it\n"
        "signs, and one is downloaded (a progress bar on a terminal) only when the\n"
        "chain says install. A refused index or download is recorded (cryptex feed\n"
        "status), changes nothing in the store, and makes the run exit 1.\n"
        "--at TIME decides as if it were TIME (ISO 8601 UTC or @UNIX-SECONDS): the\n"
        "plugins and the feed's expiry check see it; history records keep the\n"
        "real time of each change (tests, fleet simulations).\n"
        "--loop runs forever instead, one run every feed_poll (default 1h), for\n"
        "systems without the timer; a failed run is reported and the next one\n"
        "comes all the same.\n"
        "Exit status: 0 done, 1 an action failed or the feed was refused, 2 a\n"
        "configuration error (nothing changed), 5 no store.\n\n"
        "%s",
        kConfigHelp);
    return kExitOk;
  }
  if (!args.ok()) return Usage("agent", args.error());
  const bool loop = args.Has("--loop");
  if (args.Has("--once") == loop) {
    return Usage("agent",
                 "one of --once (the systemd timer runs it periodically) or --loop is required");
  }
  if (loop && (args.Has("--at") || args.Has("--json"))) {
    return Usage("agent", "--at and --json go with --once");
  }
  if (!args.positional().empty()) return Usage("agent", "expected no argument");
  int64_t at = 0;
  if (auto t = args.Get("--at")) {
    auto parsed = policy::ParseTime(*t, "--at");
    if (!parsed.ok()) return Usage("agent", parsed.status().message());
    at = *parsed;
  }
  Config cfg;
  TrustStore trust;
  std::vector<policy::ChainMember> chain;
  if (int rc = Prepare("agent", args, &cfg, &trust, &chain); rc != kExitOk) return rc;
  const bool json = args.Has("--json");
  policy::AgentOptions opts;
  if (!json) {
    opts.log = [](const std::string& line) {
      std::printf("%s\n", ForTerminal(line, StdoutIsTerminal()).c_str());
      std::fflush(stdout);
    };
  }
  // Quiet: one line per decision (a mount that cannot follow still says so
  // on stderr, and the decision's line says FAILED).
  opts.follow_mounts = [](const store::Store& s, bool live) {
    return FollowMounts("agent", s, live, /*quiet=*/true) == kExitOk
               ? Status::Ok()
               : Status::IOError("a mount could not follow the change (see above)");
  };
  ProgressBar bar;
  opts.progress = [&bar](const std::string& id, uint64_t done, uint64_t total) {
    bar.Update(id, done, total);
  };
  for (;;) {
    opts.now = at != 0 ? at : static_cast<int64_t>(std::time(nullptr));
    auto r = policy::RunAgent(cfg, trust, chain, opts);
    if (!loop) {
      if (!r.ok()) return Fail("agent", r.status());
      if (json) {
        const int w = PrintJson("agent", ReportJson(*r, opts.now));
        if (w != kExitOk) return w;
      }
      return r->failed ? kExitError : kExitOk;
    }
    if (!r.ok()) (void)Fail("agent", r.status());
    std::this_thread::sleep_for(cfg.feed_poll);
  }
}

int CmdPolicy(int argc, char** argv) {
  if (argc >= 2 && std::string(argv[1]) == "simulate") return Simulate(argc - 1, argv + 1);
  if (argc >= 2 && (std::string(argv[1]) == "--help" || std::string(argv[1]) == "-h")) {
    std::printf(
        "usage: cryptex policy simulate [--at TIME] [--json] [--config FILE]\n\n"
        "The policy plugin chain (docs/POLICY.md). 'simulate' shows what it would\n"
        "decide, changing nothing; see cryptex policy simulate --help.\n");
    return kExitOk;
  }
  return Usage("policy", "expected 'simulate'");
}

int CmdApprove(int argc, char** argv) {
  Args args(argc, argv, {"--config", "--line", "--reason"}, {});
  if (args.help()) {
    std::printf(
        "usage: cryptex approve ID [--line NAME] [--reason TEXT] [--config FILE]\n\n"
        "Records an administrator's approval of patch ID in the store's history\n"
        "('approve'). Plugins see it as patch.approved (the approve plugin installs\n"
        "only approved patches); an approval given after a rejection makes the\n"
        "agent ask again. ID must be installed in the store or offered in the\n"
        "configured patch_dir; --line names the line when several have that id.\n\n"
        "%s",
        kConfigHelp);
    return kExitOk;
  }
  if (!args.ok()) return Usage("approve", args.error());
  if (args.positional().size() != 1) return Usage("approve", "expected one patch ID");
  Config cfg;
  TrustStore trust;
  std::vector<policy::ChainMember> chain;  // loaded to check the plugins' options
  if (int rc = Prepare("approve", args, &cfg, &trust, &chain); rc != kExitOk) return rc;
  const std::string& id = args.positional()[0];
  const Status st = policy::Approve(cfg, trust, args.Get("--line").value_or(""), id,
                                    args.Get("--reason").value_or(""));
  if (!st.ok()) return Fail("approve", st);
  std::printf("approved %s\n", ForTerminal(id, StdoutIsTerminal()).c_str());
  return kExitOk;
}

namespace {

// The kernel's boot time (btime of /proc/stat), 0 if unknown.
int64_t BootTime() {
  std::ifstream in("/proc/stat");
  for (std::string key; in >> key;) {
    if (key == "btime") {
      int64_t t = 0;
      in >> t;
      return t;
    }
    in.ignore(1 << 20, '\n');
  }
  return 0;
}

}  // namespace

std::string PendingOfLine(const store::Store& s, const store::StoreState& st,
                          const std::string& line, Json* json) {
  Json pending = Json::array();
  Json reboot = Json::array();
  std::string text;
  auto decisions = store::ReadDecisions(s.dir());
  if (decisions.ok()) {
    for (const auto& [key, d] : decisions->by_patch) {
      if (d.line != line || (d.verdict != "defer" && d.verdict != "reject")) continue;
      pending.push_back({{"patch", d.patch},
                         {"version", d.version},
                         {"verdict", d.verdict},
                         {"until", d.until != 0 ? Json(policy::IsoTime(d.until)) : Json(nullptr)},
                         {"since", policy::IsoTime(d.at)},
                         {"who", d.who},
                         {"reason", d.reason}});
      text += "  pending " + d.patch + " (" + d.version + "): " + d.verdict;
      if (d.verdict == "defer") {
        text += d.until != 0 ? " until " + policy::IsoTime(d.until) : " (asked again next run)";
      }
      text += " since " + policy::IsoTime(d.at) + " by " + d.who + ": " + d.reason + "\n";
    }
  } else {
    text += "  pending: unreadable: " + decisions.status().ToString() + "\n";
  }
  // Reboot-class patches activated since boot take effect at the next mount.
  const int64_t boot = BootTime();
  auto lit = st.lines.find(line);
  auto history = s.History();
  if (lit != st.lines.end() && history.ok()) {
    for (const std::string& id : lit->second.active) {
      const store::PatchEntry* p = lit->second.Find(id);
      if (p == nullptr || p->activation != "reboot") continue;
      int64_t activated = 0;
      for (const auto& r : *history) {
        if (r.action == "activate" && r.line == line && r.patch == id) activated = r.time;
      }
      if (activated < boot) continue;
      reboot.push_back({{"patch", id}, {"activated_at", policy::IsoTime(activated)}});
      text += "  reboot pending: " + id + " (reboot class, activated " +
              policy::IsoTime(activated) + "): takes effect at the next mount\n";
    }
  }
  if (json != nullptr) {
    (*json)["pending"] = pending;
    (*json)["reboot_pending"] = reboot;
  }
  return text;
}

}  // namespace cryptex::cli
