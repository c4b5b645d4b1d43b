// cryptex feed status [--json] [--config FILE]: the device's feed client
// state (docs/FEED.md, "Pulling (device side)"), read from feed_state's
// feed.json without contacting the feed.
#include <cstdio>
#include <ctime>
#include <string>

#include "agent.h"
#include "cli.h"
#include "client.h"
#include "config.h"
#include "json.h"
#include "terminal.h"

namespace cryptex::cli {
namespace {

std::string TimeOrNever(int64_t t) { return t == 0 ? "never" : policy::IsoTime(t); }
Json TimeJson(int64_t t) { return t == 0 ? Json(nullptr) : Json(policy::IsoTime(t)); }

Json StatusJson(const policy::Config& cfg, const feed::ClientState& s, int64_t now) {
  Json j;
  j["feed"] = cfg.feed.empty() ? Json(nullptr) : Json(cfg.feed);
  j["state_dir"] = cfg.feed_state;
  j["last_url"] = s.url;
  j["newest_version"] = s.newest_version;
  j["published"] = TimeJson(s.published);
  j["expires"] = TimeJson(s.expires);
  j["expired"] = s.newest_version != 0 && now >= s.expires;
  j["last_fetch"] = TimeJson(s.last_fetch);
  j["last_accepted"] = TimeJson(s.last_accepted);
  Json rev = Json::array();
  for (const feed::Revocation& r : s.revoked) {
    rev.push_back({{"line", r.line}, {"id", r.id}, {"reason", r.reason}, {"at", TimeJson(r.at)}});
  }
  j["revoked"] = rev;
  Json refs = Json::array();
  for (const feed::Refusal& r : s.refusals) {
    refs.push_back({{"at", policy::IsoTime(r.at)}, {"what", r.what}, {"reason", r.reason}});
  }
  j["refusals"] = refs;
  return j;
}

void PrintText(const policy::Config& cfg, const feed::ClientState& s, int64_t now) {
  const bool tty = StdoutIsTerminal();
  const auto t = [&](const std::string& x) { return ForTerminal(x, tty); };
  std::printf("feed %s\n  state:          %s\n",
              t(cfg.feed.empty() ? "(none configured: feed = URL in [cryptex])" : cfg.feed).c_str(),
              t(cfg.feed_state).c_str());
  if (s.newest_version == 0) {
    std::printf("  newest index:   none accepted yet\n");
  } else {
    std::printf("  newest index:   version %llu, published %s, expires %s%s\n",
                static_cast<unsigned long long>(s.newest_version), TimeOrNever(s.published).c_str(),
                policy::IsoTime(s.expires).c_str(),
                now >= s.expires ? " (EXPIRED: refused until the feed publishes a newer one)" : "");
  }
  std::printf("  last fetch:     %s\n  last accepted:  %s\n", TimeOrNever(s.last_fetch).c_str(),
              TimeOrNever(s.last_accepted).c_str());
  for (const feed::Revocation& r : s.revoked) {
    std::printf("  revoked:        %s %s: %s\n", t(r.line.empty() ? "*" : r.line).c_str(),
                t(r.id).c_str(), t(r.reason).c_str());
  }
  if (s.refusals.empty()) {
    std::printf("  refusals:       none\n");
    return;
  }
  std::printf("  refusals (%zu, oldest first, the last %zu kept):\n", s.refusals.size(),
              feed::kMaxRefusals);
  for (const feed::Refusal& r : s.refusals) {
    std::printf("    %s %s: %s\n", policy::IsoTime(r.at).c_str(), t(r.what).c_str(),
                t(r.reason).c_str());
  }
}

}  // namespace

int CmdFeedStatus(int argc, char** argv) {
  Args args(argc, argv, {"--config"}, {"--json"});
  if (args.help()) {
    std::printf(
        "usage: cryptex feed status [--json] [--config FILE]\n\n"
        "The device's view of the configured feed (feed = URL in cryptex.conf),\n"
        "from the client state in feed_state (default STORE/feed/feed.json); the\n"
        "feed is not contacted. Shows the newest index version accepted, when it\n"
        "expires, the last fetch and the last accepted one, the revocations in\n"
        "force and the last refusals (rollback, freeze, bad signature, downloads\n"
        "longer, shorter or other than signed...) with their time and reason.\n\n"
        "%s",
        kAgentConfigHelp);
    return kExitOk;
  }
  if (!args.ok()) return Usage("feed status", args.error());
  if (!args.positional().empty()) return Usage("feed status", "expected no argument");
  auto cfg = LoadConfigOf(args);
  if (!cfg.ok()) return Fail("feed status", cfg.status());
  auto state = feed::ReadClientState(cfg->feed_state);
  if (!state.ok()) return Fail("feed status", state.status());
  const int64_t now = static_cast<int64_t>(std::time(nullptr));
  if (args.Has("--json")) return PrintJson("feed status", StatusJson(*cfg, *state, now));
  PrintText(*cfg, *state, now);
  return kExitOk;
}

}  // namespace cryptex::cli
