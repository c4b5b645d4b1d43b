// The device store commands (docs/STORE.md): cryptex add, install, activate,
// revert, remove, history, and the store side of cryptex status.
#include <limits.h>
#include <stdlib.h>
#include <sys/stat.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <string>

#include "agent.h"
#include "cli.h"
#include "json.h"
#include "status_channel.h"
#include "store.h"
#include "terminal.h"

namespace cryptex::cli {

namespace {

using store::Actor;
using store::Store;

const char* const kStoreHelp =
    "  --store DIR      the store (default $CRYPTEX_STORE, else /var/lib/cryptex)\n";
const char* const kTrustHelp =
    "  --trust DIR | --pubkey FILE   trusted signing keys (default /etc/cryptex/keys)\n";

std::string StoreDir(const Args& args) {
  if (auto d = args.Get("--store")) return *d;
  if (const char* e = std::getenv("CRYPTEX_STORE"); e != nullptr && *e != '\0') return e;
  return store::kDefaultStoreDir;
}

Actor ActorOf(const Args& args) {
  Actor a;
  if (auto r = args.Get("--reason")) a.reason = *r;
  return a;
}

std::string List(const std::vector<std::string>& v) {
  std::string out;
  for (const auto& s : v) out += (out.empty() ? "" : " ") + s;
  return out;
}

// Opens the store with trusted keys (for commands that open images).
int OpenWithTrust(const std::string& cmd, const Args& args, TrustStore* trust,
                  std::unique_ptr<Store>* out) {
  auto t = LoadTrust(args);
  if (!t.ok()) return Fail(cmd, t.status());
  *trust = std::move(*t);
  auto s = Store::Open(StoreDir(args), trust);
  if (!s.ok()) return Fail(cmd, s.status());
  *out = std::move(*s);
  return kExitOk;
}

int OpenNoTrust(const std::string& cmd, const Args& args, std::unique_ptr<Store>* out) {
  auto s = Store::Open(StoreDir(args), nullptr);
  if (!s.ok()) return Fail(cmd, s.status());
  *out = std::move(*s);
  return kExitOk;
}

Json PatchJson(const store::LineState& l, const store::PatchEntry& p) {
  Json j;
  j["id"] = p.id;
  j["version"] = p.version;
  j["active"] = l.IsActive(p.id);
  j["release_counter"] = p.release_counter;
  j["activation"] = p.activation;
  j["severity"] = p.severity;
  j["cves"] = p.cves;
  j["requires"] = p.requires_patches;
  j["installed_at"] = policy::IsoTime(p.installed_at);
  j["size"] = p.size;
  j["root_hash"] = HexEncode(p.root);
  j["tree_files"] = p.tree_files;
  j["tree_bytes"] = p.tree_bytes;
  return j;
}

Json RecordJson(const store::HistoryRecord& r) {
  Json j;
  j["seq"] = r.seq;
  j["time"] = policy::IsoTime(r.time);
  j["action"] = r.action;
  j["line"] = r.line;
  j["patch"] = r.patch;
  j["version"] = r.version;
  j["cves"] = r.cves;
  j["severity"] = r.severity;
  j["who"] = r.who;
  j["reason"] = r.reason;
  if (!r.verdict.empty()) j["verdict"] = r.verdict;  // "decide" records (docs/POLICY.md)
  if (r.until != 0) j["until"] = policy::IsoTime(r.until);
  if (!r.votes.empty()) {
    Json vs = Json::array();
    for (const auto& v : r.votes) {
      vs.push_back({{"plugin", v.plugin},
                    {"verdict", v.verdict},
                    {"until", v.until != 0 ? Json(policy::IsoTime(v.until)) : Json(nullptr)},
                    {"reason", v.reason},
                    {"failed", v.failed}});
    }
    j["votes"] = vs;
  }
  return j;
}

}  // namespace

// Live activation (cli.h): asks every cryptexfs mount of a line of this store to
// serve its line's committed level, and waits until each does or answers
// that the change is pending. The driver decides (Filesystem::Reload): a
// mount moves only if every patch that differs between the level it serves
// and the committed one is of class relaunch; otherwise the whole change
// waits for its next mount. `live` is the caller's expectation (a change of
// reboot-class patches: false) and no longer changes what is asked; kept
// for the callers' sake. `quiet`: no line per mount that followed (a
// command that changed nothing). Returns kExitOk, or kExitError if a mount
// could not follow (the change itself is committed).
int FollowMounts(const std::string& cmd, const Store& s, bool live, bool quiet) {
  (void)live;
  char dir[PATH_MAX];
  if (::realpath(s.dir().c_str(), dir) == nullptr) return kExitOk;
  const std::string prefix = std::string(dir) + "/";
  int rc = kExitOk;
  for (const std::string& mp : cxfs::CryptexfsMounts()) {
    auto st = cxfs::QueryMountStatus(mp);
    if (!st.ok() || st->image.rfind(prefix, 0) != 0) continue;
    const std::string where = ForTerminal(mp, StdoutIsTerminal());
    cxfs::ReloadAnswer answer = cxfs::ReloadAnswer::kServing;
    const Status r = cxfs::ReloadMount(mp, &answer);
    if (r.ok() && answer == cxfs::ReloadAnswer::kPending) {
      // Also when quiet: the mount does not serve what is committed.
      std::printf(
          "%s: change pending until the line is remounted (takes effect at its next mount: a "
          "reboot-class patch differs from the level it serves; see cryptex status)\n",
          where.c_str());
    } else if (r.ok()) {
      if (!quiet) std::printf("%s: now serving the new level\n", where.c_str());
    } else if (r.code() != Code::kUnsupported) {  // a pinned level= mount stays
      std::fprintf(stderr, "cryptex %s: %s\n", cmd.c_str(), r.message().c_str());
      rc = kExitError;
    }
  }
  return rc;
}

namespace {

// Whether a change of patch `id` goes live on running mounts (relaunch
// class), from the committed state.
bool LiveChange(const Store& s, const std::string& id) {
  auto st = s.ReadState();
  if (!st.ok()) return true;
  for (const auto& [name, line] : st->lines) {
    if (const store::PatchEntry* p = line.Find(id)) return p->activation != "reboot";
  }
  return true;
}

// A change asked for that is already committed (e.g. by a command killed
// after its commit, before the mounts followed) still brings the mounts to
// the committed level, so running the command again completes it.
void FollowIfAlreadyDone(const std::string& cmd, const Store& s, const Status& st,
                         const std::string& id) {
  if (st.code() == Code::kExists) (void)FollowMounts(cmd, s, LiveChange(s, id), /*quiet=*/true);
}

// What one running mount of a line serves against the line's committed
// active level (a change pending until the line is remounted: reboot class).
struct MountView {
  std::string mountpoint;
  std::vector<std::string> serves;    // patch ids (hex root if no longer installed)
  std::vector<std::string> activate;  // committed, waiting for the next mount
  std::vector<std::string> revert;    // reverted, still served until the next mount
  bool pending() const { return !activate.empty() || !revert.empty(); }
};

// The running mounts of line `l` of store `s` that follow it (pinned level=
// mounts and mounts of other stores are left out).
std::vector<MountView> MountsOf(const Store& s, const store::LineState& l) {
  std::vector<MountView> out;
  char base[PATH_MAX];
  if (::realpath(s.BasePath(l.name).c_str(), base) == nullptr) return out;
  for (const std::string& mp : cxfs::CryptexfsMounts()) {
    auto st = cxfs::QueryMountStatus(mp);
    if (!st.ok() || st->image != base) continue;
    auto level = cxfs::QueryMountLevel(mp);
    if (!level.ok()) continue;  // pinned, or a driver that cannot tell
    MountView m;
    m.mountpoint = mp;
    for (const auto& root : level->patch_roots) {
      std::string id = HexEncode(root);
      for (const auto& p : l.patches) {
        if (p.root == root) id = p.id;
      }
      m.serves.push_back(id);
    }
    size_t common = 0;
    while (common < m.serves.size() && common < l.active.size() &&
           m.serves[common] == l.active[common]) {
      ++common;
    }
    m.activate.assign(l.active.begin() + static_cast<std::ptrdiff_t>(common), l.active.end());
    m.revert.assign(m.serves.begin() + static_cast<std::ptrdiff_t>(common), m.serves.end());
    out.push_back(std::move(m));
  }
  return out;
}

// "active" / "inactive", and whether running mounts do not serve it so.
std::string PatchState(const store::LineState& l, const store::PatchEntry& p,
                       const std::vector<MountView>& mounts) {
  std::string t = l.IsActive(p.id) ? "active" : "inactive";
  for (const MountView& m : mounts) {
    if (std::find(m.activate.begin(), m.activate.end(), p.id) != m.activate.end()) {
      return t + " (pending: not live on " + m.mountpoint + " until it is remounted)";
    }
    if (std::find(m.revert.begin(), m.revert.end(), p.id) != m.revert.end()) {
      return t + " (pending: still live on " + m.mountpoint + " until it is remounted)";
    }
  }
  return t;
}

}  // namespace

int CmdAdd(int argc, char** argv) {
  Args args(argc, argv, {"--store", "--trust", "--pubkey", "--reason"}, {});
  if (args.help()) {
    std::printf(
        "usage: cryptex add IMAGE [--store DIR] [--trust DIR | --pubkey FILE]\n"
        "                   [--reason TEXT]\n\n"
        "Registers a signed base image in the store under its manifest name (an\n"
        "image line). The image is checked completely, copied into the store and\n"
        "the change recorded in the history. Adding the same base again changes\n"
        "nothing; another base under a name already present is refused (exit 6).\n\n%s%s",
        kStoreHelp, kTrustHelp);
    return kExitOk;
  }
  if (!args.ok()) return Usage("add", args.error());
  if (args.positional().size() != 1) return Usage("add", "expected one IMAGE");
  TrustStore trust;
  std::unique_ptr<Store> s;
  if (int rc = OpenWithTrust("add", args, &trust, &s); rc != kExitOk) return rc;
  bool added = false;
  auto l = s->Add(args.positional()[0], ActorOf(args), &added);
  if (!l.ok()) return Fail("add", l.status());
  std::printf(
      "%s %s (%s, root hash %s)\n",
      added ? "added" : "already present:", ForTerminal(l->name, StdoutIsTerminal()).c_str(),
      ForTerminal(l->base_version, StdoutIsTerminal()).c_str(), HexEncode(l->base_root).c_str());
  return kExitOk;
}

int CmdInstall(int argc, char** argv) {
  Args args(argc, argv, {"--store", "--trust", "--pubkey", "--reason"}, {"--activate"});
  if (args.help()) {
    std::printf(
        "usage: cryptex install PATCH [--activate] [--store DIR]\n"
        "                       [--trust DIR | --pubkey FILE] [--reason TEXT]\n\n"
        "Checks a patch completely before changing anything: its signature, that it\n"
        "is a patch, that its line's base is in the store with the root digest the\n"
        "patch names, that the patches it requires are active in that order, that\n"
        "its release counter is not older than the highest seen for the line and\n"
        "that it is not installed already (anti-rollback), and that every file it\n"
        "changes decodes to its signed digest. Then stores it with the hash trees of\n"
        "its delta files. --activate also activates it, in the same change.\n"
        "A refusal changes nothing but a 'refuse' record in the history.\n"
        "Exit status: 0 installed, 3 corrupt or badly signed, 5 no base for it,\n"
        "6 already installed (replay), 1 refused by policy or other errors.\n\n%s%s",
        kStoreHelp, kTrustHelp);
    return kExitOk;
  }
  if (!args.ok()) return Usage("install", args.error());
  if (args.positional().size() != 1) return Usage("install", "expected one PATCH");
  TrustStore trust;
  std::unique_ptr<Store> s;
  if (int rc = OpenWithTrust("install", args, &trust, &s); rc != kExitOk) return rc;
  auto p = s->Install(args.positional()[0], args.Has("--activate"), ActorOf(args));
  if (!p.ok()) {
    if (p.status().code() == Code::kExists && args.Has("--activate")) {
      // Installed already (a replay): if it is active, the mounts serve it.
      ImageOptions opts;
      opts.trust = &trust;
      if (auto img = Image::Open(args.positional()[0], opts); img.ok()) {
        const std::string id = (*img)->manifest().patch_id;
        auto line = s->ReadLine((*img)->manifest().name);
        if (line.ok() && line->IsActive(id)) FollowIfAlreadyDone("install", *s, p.status(), id);
      }
    }
    return Fail("install", p.status());
  }
  std::printf("installed %s (%s)%s\n", ForTerminal(p->id, StdoutIsTerminal()).c_str(),
              ForTerminal(p->version, StdoutIsTerminal()).c_str(),
              args.Has("--activate") ? ", active" : "");
  if (args.Has("--activate")) return FollowMounts("install", *s, p->activation != "reboot");
  return kExitOk;
}

int CmdActivate(int argc, char** argv) {
  Args args(argc, argv, {"--store", "--line", "--reason"}, {});
  if (args.help()) {
    std::printf(
        "usage: cryptex activate ID [--line NAME] [--store DIR] [--reason TEXT]\n\n"
        "Activates installed patch ID on top of its line's active patches. The\n"
        "patches it requires must be exactly the active ones, in order. The stored\n"
        "patch must still be the bytes install stored (size and SHA-256): a damaged\n"
        "one is refused (exit 3, recorded). Reads the patch once, never the base;\n"
        "writes only the state file and the history. --line names the line\n"
        "when several hold a patch with that id.\n\n%s",
        kStoreHelp);
    return kExitOk;
  }
  if (!args.ok()) return Usage("activate", args.error());
  if (args.positional().size() != 1) return Usage("activate", "expected one patch ID");
  std::unique_ptr<Store> s;
  if (int rc = OpenNoTrust("activate", args, &s); rc != kExitOk) return rc;
  const Status st =
      s->Activate(args.Get("--line").value_or(""), args.positional()[0], ActorOf(args));
  if (!st.ok()) {
    FollowIfAlreadyDone("activate", *s, st, args.positional()[0]);  // already active
    return Fail("activate", st);
  }
  std::printf("activated %s\n", ForTerminal(args.positional()[0], StdoutIsTerminal()).c_str());
  return FollowMounts("activate", *s, LiveChange(*s, args.positional()[0]));
}

int CmdRevert(int argc, char** argv) {
  Args args(argc, argv, {"--store", "--line", "--reason"}, {"--all"});
  if (args.help()) {
    std::printf(
        "usage: cryptex revert ID [--line NAME] [--store DIR] [--reason TEXT]\n"
        "       cryptex revert --all NAME [--store DIR] [--reason TEXT]\n\n"
        "Deactivates patch ID (it stays installed). Refused, naming them, while\n"
        "active patches depend on it. --all NAME deactivates every patch of line\n"
        "NAME: back to its base. A change of the state file only (O(1)): no image\n"
        "is read or written.\n\n%s",
        kStoreHelp);
    return kExitOk;
  }
  if (!args.ok()) return Usage("revert", args.error());
  if (args.positional().size() != 1) {
    return Usage("revert", args.Has("--all") ? "expected one line NAME" : "expected one patch ID");
  }
  std::unique_ptr<Store> s;
  if (int rc = OpenNoTrust("revert", args, &s); rc != kExitOk) return rc;
  const std::string& what = args.positional()[0];
  const Status st = args.Has("--all")
                        ? s->RevertAll(what, ActorOf(args))
                        : s->Revert(args.Get("--line").value_or(""), what, ActorOf(args));
  if (!st.ok()) {
    // E.g. not active (any more): the mounts serve what is committed.
    if (st.code() == Code::kInvalidArgument) (void)FollowMounts("revert", *s, true, /*quiet=*/true);
    return Fail("revert", st);
  }
  std::printf("reverted %s%s\n", args.Has("--all") ? "all patches of " : "",
              ForTerminal(what, StdoutIsTerminal()).c_str());
  // Reverting a reboot-class patch (or one below it) waits for the next
  // mount too: the driver answers that it is pending.
  return FollowMounts("revert", *s, true);
}

int CmdRemove(int argc, char** argv) {
  Args args(argc, argv, {"--store", "--line", "--reason"}, {});
  if (args.help()) {
    std::printf(
        "usage: cryptex remove ID [--line NAME] [--store DIR] [--reason TEXT]\n\n"
        "Deletes an inactive installed patch and its hash trees from the store.\n"
        "An active patch is refused (revert it first). The highest release counter\n"
        "seen is kept: the patch cannot be installed again.\n\n%s",
        kStoreHelp);
    return kExitOk;
  }
  if (!args.ok()) return Usage("remove", args.error());
  if (args.positional().size() != 1) return Usage("remove", "expected one patch ID");
  std::unique_ptr<Store> s;
  if (int rc = OpenNoTrust("remove", args, &s); rc != kExitOk) return rc;
  const Status st = s->Remove(args.Get("--line").value_or(""), args.positional()[0], ActorOf(args));
  if (!st.ok()) return Fail("remove", st);
  std::printf("removed %s\n", ForTerminal(args.positional()[0], StdoutIsTerminal()).c_str());
  return kExitOk;
}

int CmdHistory(int argc, char** argv) {
  Args args(argc, argv, {"--store"}, {"--json", "--verify"});
  if (args.help()) {
    std::printf(
        "usage: cryptex history [NAME] [--json] [--verify] [--store DIR]\n\n"
        "The store's history, oldest first (of line NAME only, if given): when,\n"
        "which action (add, install, activate, revert, revert-all, remove, refuse,\n"
        "and the policy agent's decide and approve),\n"
        "the patch, its version, severity and CVEs, who asked and why. The hash\n"
        "chain is checked every time; --verify prints only the verdict.\n"
        "Exit status: 0 intact, 3 the history was edited, reordered or truncated.\n\n%s",
        kStoreHelp);
    return kExitOk;
  }
  if (!args.ok()) return Usage("history", args.error());
  if (args.positional().size() > 1) return Usage("history", "expected at most one NAME");
  const std::string name = args.positional().empty() ? "" : args.positional()[0];
  std::unique_ptr<Store> s;
  if (int rc = OpenNoTrust("history", args, &s); rc != kExitOk) return rc;
  uint64_t uncommitted = 0;
  auto h = s->History(&uncommitted);
  if (!h.ok()) return Fail("history", h.status());
  if (args.Has("--verify")) {
    std::printf("%s: history intact: %zu records, hash chain and anchor OK", s->dir().c_str(),
                h->size());
    if (uncommitted != 0) {
      std::printf(" (%llu bytes of an interrupted command past them, ignored)",
                  static_cast<unsigned long long>(uncommitted));
    }
    std::printf("\n");
    return kExitOk;
  }
  const bool tty = StdoutIsTerminal();
  Json list = Json::array();
  for (const auto& r : *h) {
    if (!name.empty() && r.line != name) continue;
    if (args.Has("--json")) {
      list.push_back(RecordJson(r));
      continue;
    }
    std::string line =
        std::to_string(r.seq) + " " + policy::IsoTime(r.time) + " " + r.action + " " + r.line;
    if (!r.patch.empty()) line += " " + r.patch;
    if (!r.version.empty()) line += " (" + r.version + ")";
    if (!r.severity.empty()) line += " severity " + r.severity;
    // append(), not `line += " " + List(...)`: GCC 12 at -O3 reports a false
    // -Wrestrict in that operator+ (GCC bug 105329).
    if (!r.cves.empty()) line.append(" ").append(List(r.cves));
    line += " by " + r.who;
    if (!r.reason.empty()) line += ": " + r.reason;
    std::printf("%s\n", ForTerminal(line, tty).c_str());
  }
  if (args.Has("--json")) return PrintJson("history", list);
  return kExitOk;
}

// `cryptex status [NAME] --store ...`: the store's lines (cmd_status.cc
// sends here anything that is not a mount point).
int StoreStatus(const Args& args) {
  std::unique_ptr<Store> s;
  if (int rc = OpenNoTrust("status", args, &s); rc != kExitOk) return rc;
  auto st = s->ReadState();
  if (!st.ok()) return Fail("status", st.status());
  const auto& names = args.positional();
  for (const auto& n : names) {
    if (!st->lines.count(n)) {
      return Fail("status", Status::NotFound(n + ": no such image line in " + s->dir() +
                                             " (and not a cryptexfs mount point)"));
    }
  }
  // The stored images are opened: that needs the trusted keys.
  TrustStore trust;
  if (int rc = OpenWithTrust("status", args, &trust, &s); rc != kExitOk) return rc;
  auto damage = s->Check();
  if (!damage.ok()) return Fail("status", damage.status());
  const bool json = args.Has("--json");
  const bool tty = StdoutIsTerminal();
  Json lines = Json::array();
  int rc = kExitOk;
  for (const auto& [name, l] : st->lines) {
    if (!names.empty() && std::find(names.begin(), names.end(), name) == names.end()) continue;
    const std::vector<MountView> mounts = MountsOf(*s, l);
    Json dj = Json::array();
    std::string dtext;
    for (const auto& d : *damage) {
      if (d.line != name) continue;
      rc = kExitIntegrity;
      dj.push_back({{"patch", d.patch}, {"problem", d.problem.ToString()}});
      dtext += "  DAMAGED " + (d.patch.empty() ? std::string("base") : d.patch) + ": " +
               d.problem.ToString() + "\n";
    }
    if (json) {
      Json j;
      j["name"] = name;
      j["base_version"] = l.base_version;
      j["base_root_hash"] = HexEncode(l.base_root);
      j["base_size"] = l.base_size;
      j["added_at"] = policy::IsoTime(l.added_at);
      j["highest_release_counter"] = l.highest_counter;
      j["active"] = l.active;
      Json ps = Json::array();
      for (const auto& p : l.patches) ps.push_back(PatchJson(l, p));
      j["patches"] = ps;
      Json ms = Json::array();
      for (const MountView& m : mounts) {
        ms.push_back({{"mountpoint", m.mountpoint},
                      {"serves", m.serves},
                      {"pending", m.pending()},
                      {"pending_activate", m.activate},
                      {"pending_revert", m.revert}});
      }
      j["mounts"] = ms;
      j["damaged"] = dj;
      (void)PendingOfLine(*s, *st, name, &j);
      lines.push_back(j);
      continue;
    }
    std::string t = name + "\n  base:     " + l.base_version + " (root hash " +
                    HexEncode(l.base_root) + ", " + HumanBytes(l.base_size) + ")\n" +
                    "  active:   " + (l.active.empty() ? "none (the base)" : List(l.active)) +
                    "\n  highest release counter: " + std::to_string(l.highest_counter) + "\n";
    for (const auto& p : l.patches) {
      t += "  patch " + p.id + " (" + p.version + "): " + PatchState(l, p, mounts) + ", counter " +
           std::to_string(p.release_counter) + ", " + p.activation;
      if (!p.severity.empty()) t += ", severity " + p.severity;
      if (!p.cves.empty()) t += ", " + List(p.cves);
      t += ", installed " + policy::IsoTime(p.installed_at) + "\n";
    }
    for (const MountView& m : mounts) {
      t += "  mount " + m.mountpoint + ": serves " +
           (m.serves.empty() ? std::string("the base") : List(m.serves));
      if (!m.pending()) {
        t += " (the active level)\n";
        continue;
      }
      t += "; pending until the line is remounted:";
      if (!m.activate.empty()) t += " activate " + List(m.activate);
      if (!m.activate.empty() && !m.revert.empty()) t += ",";
      if (!m.revert.empty()) t += " revert " + List(m.revert);
      t += "\n";
    }
    t += PendingOfLine(*s, *st, name, nullptr);
    std::printf("%s%s", ForTerminal(t, tty).c_str(), ForTerminal(dtext, tty).c_str());
  }
  if (json) {
    Json doc;
    doc["store"] = s->dir();
    doc["generation"] = st->history.records;
    doc["lines"] = lines;
    const int w = PrintJson("status", doc);
    if (w != kExitOk) return w;
  } else if (st->lines.empty()) {
    std::printf("%s: no image lines\n", ForTerminal(s->dir(), tty).c_str());
  }
  if (rc != kExitOk) {
    std::fprintf(stderr, "cryptex status: stored files are damaged (see above)\n");
  }
  return rc;
}

}  // namespace cryptex::cli
