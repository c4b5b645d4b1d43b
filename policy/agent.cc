#include "agent.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <ctime>
#include <map>
#include <optional>
#include <string_view>
#include <thread>

#include "decisions.h"
#include "durable.h"
#include "format.h"
#include "image.h"
#include "sha256.h"

namespace cryptex::policy {
namespace {

using store::Decision;
using store::Decisions;
using store::HistoryRecord;
using store::ListDir;
using store::Store;

constexpr size_t kMaxRevokedReason = 512;

std::string Join(const std::vector<std::string>& v, const std::string& sep = ", ") {
  std::string out;
  for (const auto& s : v) out += (out.empty() ? "" : sep) + s;
  return out;
}

// "defer until T" / "install".
std::string VerdictText(Verdict v, int64_t until) {
  std::string s(VerdictName(v));
  if (v == Verdict::kDefer && until != 0) s += " until " + IsoTime(until);
  return s;
}

// A vote's reason without a leading "VERDICT: " naming the vote's own
// verdict (the shipped plugins start their reasons so): the text around it
// already says the verdict once.
std::string_view ReasonAfterVerdict(const Vote& v) {
  std::string_view r = v.reason;
  const std::string prefix = std::string(VerdictName(v.verdict)) + ": ";
  if (r.starts_with(prefix)) r.remove_prefix(prefix.size());
  return r;
}

// Every vote: "PLUGIN: VERDICT[ until T][ (plugin failed)][ -- REASON]; ...".
std::string VotesText(const std::vector<Vote>& votes) {
  std::vector<std::string> parts;
  for (const Vote& v : votes) {
    std::string part = v.plugin + ": " + VerdictText(v.verdict, v.until);
    if (v.failed) part += " (plugin failed)";
    const std::string_view reason = ReasonAfterVerdict(v);
    if (!reason.empty()) part.append(" -- ").append(reason);
    parts.push_back(std::move(part));
  }
  return Join(parts, "; ");
}

std::string WhoOf(const std::vector<ChainMember>& chain) {
  std::vector<std::string> names;
  for (const auto& m : chain) names.push_back(m.name);
  return "policy:" + Join(names, ",");
}

// What the history says about the device: approvals and activation times.
struct HistoryFacts {
  std::map<std::string, int64_t> approved;   // "LINE/ID" or "/ID" (any line) -> time
  std::map<std::string, int64_t> activated;  // "LINE/ID" -> last activation, while active
};

HistoryFacts FactsFromHistory(const std::vector<HistoryRecord>& records) {
  HistoryFacts f;
  for (const HistoryRecord& r : records) {
    const std::string key = Decisions::Key(r.line, r.patch);
    if (r.action == "approve") {
      f.approved[key] = r.time;
    } else if (r.action == "activate") {
      f.activated[key] = r.time;
    } else if (r.action == "revert") {
      f.activated.erase(key);
    } else if (r.action == "revert-all") {
      for (auto it = f.activated.begin(); it != f.activated.end();) {
        it = it->first.rfind(r.line + "/", 0) == 0 ? f.activated.erase(it) : std::next(it);
      }
    }
  }
  return f;
}

int64_t ApprovedAt(const HistoryFacts& h, const std::string& line, const std::string& id) {
  int64_t at = 0;
  for (const std::string& k : {Decisions::Key(line, id), Decisions::Key("", id)}) {
    auto it = h.approved.find(k);
    if (it != h.approved.end()) at = std::max(at, it->second);
  }
  return at;
}

// One patch available to the device.
struct Offer {
  PatchFacts facts;
  std::string file;  // offered .cxpatch, "" if installed or not downloaded yet
  std::vector<std::string> requires_patches;
  std::optional<feed::FeedPatch> feed;  // offered by the feed's index
};

// The feed's part of a run.
struct FeedRun {
  std::optional<feed::FeedClient> client;
  std::optional<feed::Index> index;       // accepted this run (none after a refusal)
  std::vector<feed::Revocation> revoked;  // of the newest accepted index
  std::string current;                    // the patch being downloaded (progress)
};

// The feed's revocation of `p` (on its line or on every line).
void ApplyFeedRevocation(const FeedRun* feed, PatchFacts* p) {
  if (feed == nullptr || p->revoked) return;
  feed::Index idx;
  idx.revoked = feed->revoked;
  const feed::Revocation* r = idx.FindRevocation(p->line, p->id);
  if (r == nullptr) return;
  p->revoked = true;
  p->revoked_reason = r->reason.substr(0, kMaxRevokedReason);
  if (p->revoked_reason.empty()) p->revoked_reason = "revoked by the feed";
}

PatchFacts FactsFromFeed(const feed::FeedPatch& f) {
  PatchFacts p;
  p.id = f.id;
  p.line = f.line;
  p.version = f.version;
  p.severity = f.severity;
  p.activation = f.activation.empty() ? "relaunch" : f.activation;
  p.cves = f.cves;
  p.released_at = f.released_at;
  p.size = f.length;
  p.release_counter = f.release_counter;
  return p;
}

// The local revocation flag: PATCH_DIR/ID.revoked; its first line is the reason.
void ApplyRevocation(const Config& cfg, PatchFacts* p) {
  if (cfg.patch_dir.empty()) return;
  const std::string flag = cfg.patch_dir + "/" + p->id + ".revoked";
  struct stat st;
  if (lstat(flag.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) return;
  p->revoked = true;
  auto bytes = store::ReadWholeFile(flag);
  std::string reason = bytes.ok() ? bytes->substr(0, kMaxRevokedReason) : "";
  reason = reason.substr(0, reason.find('\n'));
  p->revoked_reason = reason.empty() ? "revoked locally (" + flag + ")" : reason;
}

PatchFacts FactsFromManifest(const Manifest& m) {
  PatchFacts p;
  p.id = m.patch_id;
  p.line = m.name;
  p.version = m.version;
  p.severity = m.severity;
  p.activation = m.activation.empty() ? "relaunch" : m.activation;
  p.cves = m.cves;
  p.released_at = static_cast<int64_t>(m.released_at);
  p.release_counter = m.release_counter;
  return p;
}

// The offers, per line: installed patches (active ones top first, so that
// dependents are reverted before what they depend on), then the inactive
// and the offered ones, those with fewer requirements first.
struct Offers {
  std::vector<Offer> list;
  std::vector<std::pair<std::string, std::string>> refused;  // file, message
};

Result<Offers> CollectOffers(const Config& cfg, const Store& s, const store::StoreState& st,
                             const HistoryFacts& hist, const TrustStore& trust,
                             const FeedRun* feed = nullptr) {
  Offers out;
  ImageOptions opts;
  opts.trust = &trust;
  std::map<std::string, std::vector<Offer>> by_line;
  for (const auto& [name, l] : st.lines) {
    for (const store::PatchEntry& e : l.patches) {
      Offer o;
      PatchFacts& p = o.facts;
      p.id = e.id;
      p.line = name;
      p.version = e.version;
      p.severity = e.severity;
      p.activation = e.activation.empty() ? "relaunch" : e.activation;
      p.cves = e.cves;
      p.size = e.size;
      p.release_counter = e.release_counter;
      p.installed_at = e.installed_at;
      p.state = l.IsActive(e.id) ? PatchState::kActive : PatchState::kInstalled;
      if (p.state == PatchState::kActive) {
        auto it = hist.activated.find(Decisions::Key(name, e.id));
        p.activated_at = it == hist.activated.end() ? e.installed_at : it->second;
      }
      // released_at is in the signed manifest only.
      if (auto img = Image::Open(s.PatchPath(name, e.id), opts); img.ok()) {
        p.released_at = static_cast<int64_t>((*img)->manifest().released_at);
      }
      o.requires_patches = e.requires_patches;
      by_line[name].push_back(std::move(o));
    }
  }
  if (!cfg.patch_dir.empty()) {
    for (const std::string& f : ListDir(cfg.patch_dir)) {
      if (f.size() <= 8 || f.substr(f.size() - 8) != ".cxpatch") continue;
      const std::string path = cfg.patch_dir + "/" + f;
      auto img = Image::Open(path, opts);
      Status bad;
      if (!img.ok()) {
        bad = img.status();
      } else if ((*img)->superblock().kind != format::kKindPatch) {
        bad = Status::InvalidArgument(path + ": a base image, not a patch");
      } else if (Status n = store::CheckStoreName((*img)->manifest().patch_id, path + ": patch id");
                 !n.ok()) {
        bad = n;
      } else if (Status v = (*img)->VerifyAll(); !v.ok()) {
        bad = v.Prefixed(path);  // every block and file digest: offered only if whole
      }
      if (!bad.ok()) {
        out.refused.emplace_back(path, bad.ToString());
        continue;
      }
      const Manifest& m = (*img)->manifest();
      auto lit = st.lines.find(m.name);
      if (lit == st.lines.end()) continue;         // not for an image line of this device
      if (lit->second.Find(m.patch_id)) continue;  // installed: the store's entry is asked
      if (m.release_counter < lit->second.highest_counter) continue;  // older than what was seen
      Offer o;
      o.facts = FactsFromManifest(m);
      struct stat sb;
      if (stat(path.c_str(), &sb) == 0) o.facts.size = static_cast<uint64_t>(sb.st_size);
      o.file = path;
      o.requires_patches = m.requires_patches;
      by_line[m.name].push_back(std::move(o));
    }
  }
  if (feed != nullptr && feed->index) {
    for (const feed::FeedPatch& f : feed->index->patches) {
      auto lit = st.lines.find(f.line);
      if (lit == st.lines.end()) continue;                            // not a line of this device
      if (lit->second.Find(f.id)) continue;                           // installed
      if (f.release_counter < lit->second.highest_counter) continue;  // older than what was seen
      if (f.base_root != lit->second.base_root) continue;  // for another base of the line
      auto& offered = by_line[f.line];
      if (std::any_of(offered.begin(), offered.end(),
                      [&](const Offer& x) { return x.facts.id == f.id; })) {
        continue;  // patch_dir offers it too: that file is used
      }
      Offer o;
      o.facts = FactsFromFeed(f);
      o.requires_patches = f.requires_patches;
      o.feed = f;
      offered.push_back(std::move(o));
    }
  }
  for (auto& [name, offers] : by_line) {
    const auto& active = st.lines.at(name).active;
    auto rank = [&](const Offer& o) {
      auto it = std::find(active.begin(), active.end(), o.facts.id);
      // Active: top first (negative ranks); then by requirements, counter.
      if (it != active.end())
        return std::make_tuple(-static_cast<long>(it - active.begin()) - 1L, 0UL, std::string());
      return std::make_tuple(static_cast<long>(o.requires_patches.size()),
                             static_cast<unsigned long>(o.facts.release_counter), o.facts.id);
    };
    std::stable_sort(offers.begin(), offers.end(),
                     [&](const Offer& a, const Offer& b) { return rank(a) < rank(b); });
    for (Offer& o : offers) {
      o.facts.approved_at = ApprovedAt(hist, name, o.facts.id);
      o.facts.approved = o.facts.approved_at != 0;
      ApplyRevocation(cfg, &o.facts);
      ApplyFeedRevocation(feed, &o.facts);
      out.list.push_back(std::move(o));
    }
  }
  return out;
}

DeviceFacts DeviceOf(int64_t now, uint32_t bucket, const store::StoreState& st,
                     const HistoryFacts& hist, const store::HealthLog& health) {
  DeviceFacts d;
  d.now = now;
  d.bucket = bucket;
  for (const auto& [name, l] : st.lines) {
    for (const auto& e : l.patches) {
      InstalledFacts f;
      f.id = e.id;
      f.line = name;
      f.active = l.IsActive(e.id);
      f.installed_at = e.installed_at;
      if (f.active) {
        auto it = hist.activated.find(Decisions::Key(name, e.id));
        f.activated_at = it == hist.activated.end() ? e.installed_at : it->second;
      }
      d.patches.push_back(std::move(f));
    }
  }
  for (const auto& [check, rs] : health.by_check) {
    for (const auto& r : rs) d.health.push_back(HealthResult{check, r.at, r.ok});
  }
  std::stable_sort(d.health.begin(), d.health.end(),
                   [](const HealthResult& a, const HealthResult& b) { return a.at < b.at; });
  return d;
}

HistoryRecord DecideRecord(const AgentDecision& d, const PatchFacts& p) {
  HistoryRecord r;
  r.action = "decide";
  r.line = d.line;
  r.patch = d.patch;
  r.version = d.version;
  r.cves = p.cves;
  r.severity = p.severity;
  r.who = d.who;
  r.reason = d.chain.votes.empty() ? d.chain.reason : VotesText(d.chain.votes);
  r.verdict = std::string(VerdictName(d.chain.verdict));
  r.until = d.chain.verdict == Verdict::kDefer ? d.chain.until : 0;
  for (const Vote& v : d.chain.votes) {
    r.votes.push_back(store::HistoryVote{v.plugin, std::string(VerdictName(v.verdict)), v.until,
                                         v.reason, v.failed});
  }
  return r;
}

// Runs `command` with sh -c in its own process group, stdin/stdout/stderr
// on /dev/null; kills the group after `timeout`.
HealthResult RunCheck(const HealthCheck& h, int64_t now, std::string* detail) {
  HealthResult r{h.name, now, false};
  const pid_t pid = fork();
  if (pid < 0) {
    *detail = std::string("fork: ") + std::strerror(errno);
    return r;
  }
  if (pid == 0) {
    setpgid(0, 0);
    const int null = open("/dev/null", O_RDWR);
    if (null >= 0) {
      dup2(null, 0);
      dup2(null, 1);
      dup2(null, 2);
    }
    execl("/bin/sh", "sh", "-c", h.command.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  setpgid(pid, pid);
  const auto deadline = std::chrono::steady_clock::now() + h.timeout;
  int status = 0;
  while (true) {
    const pid_t w = waitpid(pid, &status, WNOHANG);
    if (w == pid) break;
    if (w < 0 && errno != EINTR) {
      *detail = std::string("waitpid: ") + std::strerror(errno);
      return r;
    }
    if (std::chrono::steady_clock::now() >= deadline) {
      kill(-pid, SIGKILL);
      kill(pid, SIGKILL);
      while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
      }
      *detail = "timed out after " + std::to_string(h.timeout.count()) + "ms (killed)";
      return r;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  kill(-pid, SIGKILL);  // what it left behind in its group
  if (WIFEXITED(status)) {
    r.ok = WEXITSTATUS(status) == 0;
    *detail = "exit " + std::to_string(WEXITSTATUS(status));
  } else {
    *detail = "killed by signal " + std::to_string(WTERMSIG(status));
  }
  return r;
}

std::string CounterText(uint64_t n) { return std::to_string(n); }

// The signed patch at `path` is the one index entry `f` describes: what the
// policy decided on (the index's facts) is what the image signs. A
// difference is mix-and-match: a validly signed patch served for another.
Status MatchesEntry(const Image& img, const feed::FeedPatch& f, const std::string& what) {
  const Manifest& m = img.manifest();
  std::vector<std::string> diffs;
  auto cmp = [&](const char* field, const std::string& got, const std::string& want) {
    if (got != want) diffs.push_back(std::string(field) + " " + got + " (index: " + want + ")");
  };
  const auto cls = [](const std::string& a) { return a.empty() ? std::string("relaunch") : a; };
  cmp("id", m.patch_id, f.id);
  cmp("line", m.name, f.line);
  cmp("version", m.version, f.version);
  cmp("root", HexEncode(img.superblock().root_hash), HexEncode(f.root));
  cmp("base root", m.base_root_digest ? HexEncode(*m.base_root_digest) : "none",
      HexEncode(f.base_root));
  cmp("requires", "[" + Join(m.requires_patches) + "]", "[" + Join(f.requires_patches) + "]");
  cmp("release counter", CounterText(m.release_counter), CounterText(f.release_counter));
  cmp("class", cls(m.activation), cls(f.activation));
  cmp("severity", m.severity, f.severity);
  cmp("cves", "[" + Join(m.cves) + "]", "[" + Join(f.cves) + "]");
  cmp("released_at", CounterText(m.released_at), std::to_string(f.released_at));
  if (diffs.empty()) return Status::Ok();
  return Status::Corruption(what + ": the signed patch does not match its index entry " +
                            "(mix-and-match): " + Join(diffs, "; "));
}

// Opens and checks a download as the patch_dir path checks an offered file
// (signature with the store's trust, every block), then against its entry.
Status CheckDownload(const std::string& path, const feed::FeedPatch& f, const std::string& url,
                     const TrustStore& trust) {
  ImageOptions opts;
  opts.trust = &trust;
  auto img = Image::Open(path, opts);
  if (!img.ok()) return img.status().Prefixed(url);
  if ((*img)->superblock().kind != format::kKindPatch) {
    return Status::Corruption(url + ": a base image, not a patch (mix-and-match)");
  }
  if (Status v = (*img)->VerifyAll(); !v.ok()) return v.Prefixed(url);
  return MatchesEntry(**img, f, url);
}

// Downloads `f` and checks it; a failure is recorded as a refusal of f.id.
Result<std::string> FetchChecked(FeedRun* feed, const Config& cfg, const feed::FeedPatch& f,
                                 const TrustStore& trust, int64_t now) {
  feed->current = f.id;
  CX_ASSIGN_OR_RETURN(std::string path, feed->client->Download(f, now));
  const Status bad = CheckDownload(path, f, feed::FeedUrlOf(cfg.feed, f.file), trust);
  if (bad.ok()) return path;
  unlink(path.c_str());
  if (Status r = feed->client->RecordRefusal(feed::Refusal{now, f.id, bad.message()}); !r.ok()) {
    return r.Prefixed("recording a refusal (" + bad.ToString() + ")");
  }
  return bad;
}

}  // namespace

feed::FeedSettings FeedSettingsOf(const Config& cfg) {
  feed::FeedSettings f;
  f.url = cfg.feed;
  f.trust = cfg.feed_trust;
  f.state_dir = cfg.feed_state;
  f.transport.ca_file = cfg.feed_ca;
  f.transport.ca_path = cfg.feed_capath;
  f.transport.client_cert = cfg.feed_client_cert;
  f.transport.client_key = cfg.feed_client_key;
  f.transport.connect_timeout = cfg.feed_connect_timeout;
  f.transport.idle_timeout = cfg.feed_timeout;
  return f;
}

Result<int64_t> ParseTime(const std::string& text, const std::string& what) {
  const auto bad = [&] {
    return Status::InvalidArgument(
        what + ": '" + text +
        "' is not a time (ISO 8601 UTC: 2026-12-01T10:00:00Z, 2026-12-01T10:00Z, 2026-12-01; "
        "or @UNIX-SECONDS)");
  };
  if (!text.empty() && text[0] == '@') {
    const std::string n = text.substr(1);
    if (n.empty() || n.size() > 12 || !std::all_of(n.begin(), n.end(), ::isdigit)) return bad();
    return static_cast<int64_t>(std::stoll(n));
  }
  for (const char* fmt : {"%Y-%m-%dT%H:%M:%SZ", "%Y-%m-%dT%H:%MZ", "%Y-%m-%d"}) {
    struct tm tm {};
    const char* end = strptime(text.c_str(), fmt, &tm);
    if (end != nullptr && *end == '\0') return static_cast<int64_t>(timegm(&tm));
  }
  return bad();
}

Result<uint32_t> DeviceBucket(const Config& cfg) {
  if (cfg.device_bucket) return *cfg.device_bucket;
  for (const char* path : {"/etc/machine-id", "/var/lib/dbus/machine-id"}) {
    auto id = store::ReadWholeFile(path);
    if (!id.ok()) continue;
    std::string s = *id;
    while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
    if (s.empty()) continue;
    const Digest d = Sha256::Hash(s.data(), s.size());
    uint64_t v = 0;
    for (int i = 0; i < 8; ++i) v = (v << 8) | d[static_cast<size_t>(i)];
    return static_cast<uint32_t>(v % 100);
  }
  return Status::NotFound(
      "/etc/machine-id: no machine id to derive the device bucket from (create it with "
      "systemd-machine-id-setup, or set device_bucket= in [cryptex])");
}

std::string ChainFingerprint(const Config& cfg) {
  std::string s;
  for (const std::string& name : cfg.plugins) {
    s += name + '\0';
    for (const auto& [k, v] : cfg.OptionsOf(name)) s += k + '\0' + v + '\0';
    s += '\n';
  }
  return HexEncode(Sha256::Hash(s.data(), s.size()));
}

Result<std::vector<ChainMember>> LoadChain(const Config& cfg) {
  std::vector<ChainMember> chain;
  HostLimits limits;
  limits.timeout = cfg.plugin_timeout;
  for (const std::string& name : cfg.plugins) {
    ChainMember m;
    m.name = name;
    m.options = cfg.OptionsOf(name);
    auto p = Plugin::Load(cfg.plugin_dir, name, m.options, limits);
    if (p.ok()) {
      m.plugin = std::make_shared<const Plugin>(std::move(*p));
    } else if (p.status().code() == Code::kInvalidArgument) {
      // The plugin refused its options: a config error, at its section.
      auto line = cfg.plugin_lines.find(name);
      const std::string where =
          (cfg.path.empty() ? std::string("configuration") : cfg.path) +
          (line == cfg.plugin_lines.end() ? "" : ":" + std::to_string(line->second));
      return Status::InvalidArgument(where + ": [plugin." + name + "] " + p.status().message());
    } else {
      m.load_error = p.status();
    }
    chain.push_back(std::move(m));
  }
  return chain;
}

Result<std::vector<HealthResult>> RunHealthChecks(const Config& cfg, int64_t now) {
  std::vector<HealthResult> out;
  if (cfg.health.empty()) return out;
  CX_ASSIGN_OR_RETURN(store::HealthLog log, store::ReadHealthLog(cfg.store));
  for (const HealthCheck& h : cfg.health) {
    std::string detail;
    HealthResult r = RunCheck(h, now, &detail);
    log.Add(h.name, store::HealthRecord{r.at, r.ok, detail}, cfg.health_keep);
    out.push_back(std::move(r));
  }
  // Checks no longer configured are dropped.
  for (auto it = log.by_check.begin(); it != log.by_check.end();) {
    const bool known = std::any_of(cfg.health.begin(), cfg.health.end(),
                                   [&](const HealthCheck& h) { return h.name == it->first; });
    it = known ? std::next(it) : log.by_check.erase(it);
  }
  CX_RETURN_IF_ERROR(store::WriteHealthLog(cfg.store, log));
  return out;
}

std::string JournalLine(const AgentDecision& d) {
  std::string s = "cryptex-agent: " + d.line + " " + d.patch + ": " +
                  VerdictText(d.chain.verdict, d.chain.until);
  if (d.held) s += " (held)";
  if (d.action != "none") s += " -> " + d.action;
  s += " (" + (d.chain.votes.empty() ? d.chain.reason : VotesText(d.chain.votes)) + ")";
  if (!d.outcome.ok()) s += ": FAILED: " + d.outcome.ToString();
  return s;
}

namespace {

// The feed as the last run left it, without the network (simulate,
// approve): the revocations of the newest accepted index, and its offers
// while it is current. *why says why there are none.
Status KeptFeed(const Config& cfg, int64_t now, FeedRun* feed, std::string* why) {
  CX_ASSIGN_OR_RETURN(feed::ClientState fs, feed::ReadClientState(cfg.feed_state));
  feed->revoked = fs.revoked;
  auto kept = feed::ReadKeptIndex(FeedSettingsOf(cfg), now);
  if (kept.ok()) {
    feed->index = std::move(*kept);
  } else {
    *why = kept.status().message();
  }
  return Status::Ok();
}

// Opens the feed client and refreshes the index. A refused index is
// reported (and recorded by the client) and the run goes on without the
// feed's offers; only a failure to open the client's state is an error.
Status RefreshFeed(const Config& cfg, const AgentOptions& opts, FeedRun* feed,
                   AgentReport* report) {
  feed::FeedSettings settings = FeedSettingsOf(cfg);
  if (opts.progress) {
    settings.transport.progress = [feed, &opts](uint64_t done, uint64_t total) {
      opts.progress(feed->current, done, total);
    };
  }
  CX_ASSIGN_OR_RETURN(feed::FeedClient client, feed::FeedClient::Open(settings));
  feed->client.emplace(std::move(client));
  auto idx = feed->client->Refresh(opts.now);
  if (idx.ok()) {
    feed->index = **idx;
    report->feed_version = (*idx)->version;
    if (opts.log) {
      opts.log("cryptex-agent: feed: index version " + std::to_string((*idx)->version) +
               " (expires " + IsoTime((*idx)->expires) + ", " +
               std::to_string((*idx)->patches.size()) + " patches, " +
               std::to_string((*idx)->revoked.size()) + " revoked)");
    }
  } else {
    report->feed_refused = idx.status().message();
    report->failed = true;
    if (opts.log) opts.log("cryptex-agent: feed: refused index: " + idx.status().message());
  }
  feed->revoked = feed->client->revocations();
  return Status::Ok();
}

}  // namespace

Result<AgentReport> RunAgent(const Config& cfg, const TrustStore& trust,
                             const std::vector<ChainMember>& chain, const AgentOptions& opts) {
  CX_ASSIGN_OR_RETURN(auto s, Store::Open(cfg.store, &trust));
  struct stat sb;
  if (stat(cfg.store.c_str(), &sb) != 0) {
    return Status::NotFound(cfg.store + ": no store here (cryptex add creates one)");
  }
  std::optional<store::AgentLock> lock;
  if (!opts.dry_run) {
    CX_ASSIGN_OR_RETURN(store::AgentLock l, store::AgentLock::Take(cfg.store));
    lock.emplace(std::move(l));
  }
  CX_ASSIGN_OR_RETURN(const uint32_t bucket, DeviceBucket(cfg));
  AgentReport report;
  if (!opts.dry_run) {
    CX_ASSIGN_OR_RETURN(report.health_run, RunHealthChecks(cfg, opts.now));
  }
  std::optional<FeedRun> feed;
  if (!cfg.feed.empty()) {
    feed.emplace();
    if (opts.dry_run) {
      // A simulation fetches nothing: it offers what the kept index offers.
      CX_RETURN_IF_ERROR(KeptFeed(cfg, opts.now, &*feed, &report.feed_refused));
      if (feed->index) report.feed_version = feed->index->version;
    } else {
      CX_RETURN_IF_ERROR(RefreshFeed(cfg, opts, &*feed, &report));
    }
  }
  CX_ASSIGN_OR_RETURN(store::HealthLog health, store::ReadHealthLog(cfg.store));
  CX_ASSIGN_OR_RETURN(store::StoreState st, s->ReadState());
  CX_ASSIGN_OR_RETURN(auto records, s->History());
  CX_ASSIGN_OR_RETURN(Decisions decisions, store::ReadDecisions(cfg.store));
  const HistoryFacts hist = FactsFromHistory(records);
  CX_ASSIGN_OR_RETURN(Offers offers,
                      CollectOffers(cfg, *s, st, hist, trust, feed ? &*feed : nullptr));
  const std::string fingerprint = ChainFingerprint(cfg);
  const std::string who = WhoOf(chain);

  // Offered files that do not verify: recorded once per file content.
  std::map<std::string, std::string> refused_now;
  for (const auto& [path, msg] : offers.refused) {
    report.refused_files.push_back(msg);
    struct stat fs {};
    stat(path.c_str(), &fs);
    const std::string sig =
        std::to_string(fs.st_size) + " " + std::to_string(fs.st_mtime) + ": " + msg;
    refused_now[path] = sig;
    if (opts.log) opts.log("cryptex-agent: refused " + msg);
    if (opts.dry_run || decisions.refused_files[path] == sig) continue;
    HistoryRecord r;
    r.action = "refuse";
    r.who = who;
    r.reason = "offered file " + msg;
    CX_RETURN_IF_ERROR(s->Note({r}));
  }
  decisions.refused_files = refused_now;

  // The active lists as this run changes them (a dry run changes its copy).
  std::map<std::string, std::vector<std::string>> active;
  for (const auto& [name, l] : st.lines) active[name] = l.active;
  std::map<std::string, Decision> seen;

  for (Offer& o : offers.list) {
    PatchFacts& p = o.facts;
    auto& act = active[p.line];
    const bool is_active = std::find(act.begin(), act.end(), p.id) != act.end();
    if (p.state != PatchState::kAvailable) {
      p.state = is_active ? PatchState::kActive : PatchState::kInstalled;
    }
    if (p.state == PatchState::kActive) {
      p.level = static_cast<uint32_t>(std::find(act.begin(), act.end(), p.id) - act.begin() + 1);
    } else {
      p.level = static_cast<uint32_t>(act.size() + 1);
    }
    const std::string key = Decisions::Key(p.line, p.id);
    const Decision* prev = decisions.by_patch.count(key) ? &decisions.by_patch[key] : nullptr;

    AgentDecision d;
    d.line = p.line;
    d.patch = p.id;
    d.version = p.version;
    d.file = o.file;
    d.state = p.state;
    d.activation = p.activation;
    d.who = who;
    d.action = "none";
    if (p.state != PatchState::kActive && o.requires_patches != act) {
      // Not installable now: the host defers it without asking.
      d.who = "agent";
      d.chain.verdict = Verdict::kDefer;
      d.chain.reason = "requires [" + Join(o.requires_patches) + "] active in that order; [" +
                       Join(act) + "] are active";
    } else if (prev != nullptr && prev->verdict == "reject" && prev->chain == fingerprint &&
               prev->who != "agent" && p.state != PatchState::kActive && p.approved_at < prev->at) {
      // A rejection holds until the chain's configuration changes or the
      // patch is approved after it. The agent's own (a revocation, below)
      // holds only while the revocation does.
      d.held = true;
      d.who = prev->who;
      d.chain.verdict = Verdict::kReject;
      d.chain.reason = prev->reason;
    } else if (p.revoked && p.state != PatchState::kActive) {
      // Whatever the chain: a revoked patch is never installed or activated
      // (an active one is the chain's to revert: the revocation plugin).
      d.who = "agent";
      d.chain.verdict = Verdict::kReject;
      d.chain.reason = "revoked: " + p.revoked_reason + " (a revoked patch is never installed)";
    } else {
      const DeviceFacts device = DeviceOf(opts.now, bucket, st, hist, health);
      d.chain = DecideChain(chain, p, device);
    }

    const Verdict v = d.chain.verdict;
    if (v == Verdict::kInstall && p.state == PatchState::kAvailable) d.action = "install+activate";
    if (v == Verdict::kInstall && p.state == PatchState::kInstalled) d.action = "activate";
    if (v == Verdict::kRevert && p.state == PatchState::kActive) d.action = "revert";

    Decision now;
    now.line = p.line;
    now.patch = p.id;
    now.version = p.version;
    now.verdict = std::string(VerdictName(v));
    now.until = v == Verdict::kDefer ? d.chain.until : 0;
    now.who = d.who;
    now.reason = d.chain.votes.empty() ? d.chain.reason : VotesText(d.chain.votes);
    now.at = opts.now;
    now.chain = fingerprint;
    now.activation = p.activation;
    if (prev != nullptr) now.activated_at = prev->activated_at;
    const bool changed = prev == nullptr || !prev->SameAs(now);
    if (!changed) now.at = prev->at;
    d.recorded = d.action != "none" || changed;
    // The identity of what would be acted on: a failed action is retried only
    // when the decision or the offered file changes.
    std::string target = o.file;
    if (struct stat fsb{}; !o.file.empty() && stat(o.file.c_str(), &fsb) == 0) {
      target += " " + std::to_string(fsb.st_size) + " " + std::to_string(fsb.st_mtim.tv_sec) + "." +
                std::to_string(fsb.st_mtim.tv_nsec);
    }
    if (o.feed) {
      target = "feed " + o.feed->file + " " + HexEncode(o.feed->sha256);
      d.file = feed::FeedUrlOf(cfg.feed, o.feed->file);
    }
    if (!changed && d.action != "none" && !prev->failed.empty() &&
        prev->failed.substr(0, prev->failed.find('\n')) == target) {
      d.outcome =
          Status::Permission("not retried: this decision failed before on the same patch (" +
                             prev->failed.substr(prev->failed.find('\n') + 1) +
                             "); it is tried again when the decision or the offered file changes");
      now.failed = prev->failed;
      d.recorded = false;
      report.failed = true;
      if (opts.log) opts.log(JournalLine(d));
      seen[key] = now;
      report.decisions.push_back(std::move(d));
      continue;
    }

    if (d.action == "install+activate" && o.feed && !opts.dry_run) {
      // Downloaded only now, and checked before anything is recorded: a
      // refused download leaves the store as it was (and is asked again next
      // run, when the server may be fixed).
      auto got = FetchChecked(&*feed, cfg, *o.feed, trust, opts.now);
      if (!got.ok()) {
        d.outcome = got.status();
        d.recorded = false;
        report.failed = true;
        report.feed_refused_patches.push_back(p.id + ": " + got.status().message());
        if (prev != nullptr) seen[key] = *prev;
        if (opts.log) opts.log(JournalLine(d));
        report.decisions.push_back(std::move(d));
        continue;
      }
      o.file = *got;
    }
    if (d.action == "install+activate" || d.action == "activate") {
      act.push_back(p.id);
      now.activated_at = opts.now;
    } else if (d.action == "revert") {
      act.erase(std::find(act.begin(), act.end(), p.id));
      now.activated_at = 0;
    }

    if (!opts.dry_run) {
      if (d.recorded) CX_RETURN_IF_ERROR(s->Note({DecideRecord(d, p)}));
      store::Actor actor{d.who, "policy decision: " + now.reason};
      if (d.action == "install+activate") {
        auto r = s->Install(o.file, true, actor);
        d.outcome = r.ok() ? Status::Ok() : r.status();
        if (o.feed) unlink(o.file.c_str());  // the store holds its copy (or refused it)
      } else if (d.action == "activate") {
        d.outcome = s->Activate(p.line, p.id, actor);
      } else if (d.action == "revert") {
        d.outcome = s->Revert(p.line, p.id, actor);
      }
      if (!d.outcome.ok()) {
        report.failed = true;
        now.failed = target + "\n" + d.outcome.ToString();
        // Undo the run's view of the change.
        if (d.action == "revert") {
          act.push_back(p.id);
        } else if (d.action != "none") {
          act.pop_back();
          now.activated_at = 0;
        }
      } else if (d.action != "none" && opts.follow_mounts) {
        const bool live = d.action == "revert" || p.activation != "reboot";
        if (Status f = opts.follow_mounts(*s, live); !f.ok()) {
          d.outcome = f;
          report.failed = true;
        }
      }
    }
    if (opts.log) opts.log(JournalLine(d));
    seen[key] = now;
    report.decisions.push_back(std::move(d));
  }
  if (!opts.dry_run) {
    decisions.by_patch = std::move(seen);  // patches no longer offered are forgotten
    CX_RETURN_IF_ERROR(store::WriteDecisions(cfg.store, decisions));
  }
  return report;
}

Status Approve(const Config& cfg, const TrustStore& trust, const std::string& line,
               const std::string& id, const std::string& reason) {
  CX_RETURN_IF_ERROR(store::CheckStoreName(id, "patch id"));
  CX_ASSIGN_OR_RETURN(auto s, Store::Open(cfg.store, &trust));
  CX_ASSIGN_OR_RETURN(store::StoreState st, s->ReadState());
  CX_ASSIGN_OR_RETURN(auto records, s->History());
  const HistoryFacts hist = FactsFromHistory(records);
  std::optional<FeedRun> feed;
  std::string why;
  if (!cfg.feed.empty()) {
    feed.emplace();
    CX_RETURN_IF_ERROR(KeptFeed(cfg, static_cast<int64_t>(std::time(nullptr)), &*feed, &why));
  }
  CX_ASSIGN_OR_RETURN(Offers offers,
                      CollectOffers(cfg, *s, st, hist, trust, feed ? &*feed : nullptr));
  const Offer* found = nullptr;
  std::vector<std::string> lines;
  for (const Offer& o : offers.list) {
    if (o.facts.id != id || (!line.empty() && o.facts.line != line)) continue;
    found = &o;
    lines.push_back(o.facts.line);
  }
  if (found == nullptr) {
    return Status::NotFound("patch " + id + " is neither installed in " + cfg.store +
                            (cfg.patch_dir.empty() ? "" : " nor offered in " + cfg.patch_dir) +
                            (cfg.feed.empty() ? ""
                                              : " nor in the feed's newest index" +
                                                    (why.empty() ? "" : " (" + why + ")")));
  }
  if (lines.size() > 1) {
    return Status::InvalidArgument("patch " + id + " is in several lines (" + Join(lines) +
                                   "): name one with --line");
  }
  HistoryRecord r;
  r.action = "approve";
  r.line = found->facts.line;
  r.patch = id;
  r.version = found->facts.version;
  r.cves = found->facts.cves;
  r.severity = found->facts.severity;
  r.who = "command";
  r.reason = reason;
  return s->Note({r});
}

}  // namespace cryptex::policy
