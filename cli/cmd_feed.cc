// cryptex feed: the vendor's side of a signed patch feed (docs/FEED.md):
// publish a feed directory's index, revoke a patch, show an index.
#include <sys/stat.h>

#include <charconv>
#include <cstdio>
#include <ctime>
#include <string>
#include <vector>

#include "cli.h"
#include "index.h"
#include "json.h"
#include "publish.h"
#include "terminal.h"

namespace cryptex::cli {
namespace {

constexpr char kCmd[] = "feed";

constexpr char kHelp[] =
    "usage: cryptex feed publish DIR --key KEY [--key KEY]... [--expires DURATION]\n"
    "                    [--announce PUB]... [--epoch SECONDS] [--force-version N]\n"
    "                    [--trust DIR | --pubkey FILE]\n"
    "       cryptex feed revoke DIR ID --reason TEXT [--line NAME] --key KEY [--key KEY]...\n"
    "                    [--expires DURATION] [--announce PUB]... [--epoch SECONDS]\n"
    "                    [--trust DIR | --pubkey FILE]\n"
    "       cryptex feed show DIR|INDEX [--trust DIR | --pubkey FILE] [--previous INDEX]\n"
    "                    [--json]\n"
    "       cryptex feed status [--json]   (the device side: see its own help)\n\n"
    "publish: (re)writes DIR/index.cxfeed, the signed index of the *.cxpatch patches\n"
    "and *.cryptex base images under DIR (dot files skipped): for each, its id,\n"
    "line, version, root and base root digests, requirements, release counter,\n"
    "severity, CVEs, class, length and SHA-256. The version is the previous\n"
    "index's + 1; its revocations are kept. The index is replaced atomically.\n"
    "revoke: adds a revocation of patch ID (on every line, or on --line) and\n"
    "publishes again. show: checks an index's signature and prints it.\n\n"
    "  --key KEY             Ed25519 private key that signs the index (repeat to\n"
    "                        sign with several, e.g. the old and new key)\n"
    "  --expires DURATION    devices refuse the index after this long: 3600s, 30m,\n"
    "                        12h, 7d, 2w (default 7d, at most 366d)\n"
    "  --announce PUB        an index public key to announce (key rotation; repeat)\n"
    "  --epoch SECONDS       the publication time (default: now)\n"
    "  --force-version N     the new index's version, when the previous index\n"
    "                        cannot be read (its revocations are lost)\n"
    "  --trust DIR           publish, revoke: check each image's signature (the\n"
    "                        patch key) with these keys; show: the index keys\n"
    "                        (default /etc/cryptex/keys)\n"
    "  --pubkey FILE         trust exactly this public key instead\n"
    "  --reason TEXT         why the patch is revoked (shown on devices)\n"
    "  --line NAME           revoke ID on this line only\n"
    "  --previous INDEX      show: an earlier index, checked with the same trust,\n"
    "                        whose announced keys are trusted too\n"
    "  --json                show: print one JSON document\n"
    "Without --trust or --pubkey, publish reads the images' manifests unchecked.\n";

std::optional<uint64_t> ParseNumber(const std::string& s) {
  uint64_t v = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (s.empty() || ec != std::errc() || end != s.data() + s.size()) return std::nullopt;
  return v;
}

// Refuses the options in `given` that subcommand `sub` does not take.
int CheckOptions(const Args& args, const std::string& sub,
                 const std::vector<std::string>& not_for) {
  for (const auto& o : not_for) {
    if (args.Has(o)) return Usage(kCmd, o + " is not an option of 'cryptex feed " + sub + "'");
  }
  return kExitOk;
}

// The index keys of --key (each loaded once).
Result<std::vector<PrivateKey>> LoadKeys(const Args& args) {
  std::vector<PrivateKey> keys;
  for (const auto& path : args.GetAll("--key")) {
    CX_ASSIGN_OR_RETURN(PrivateKey k, PrivateKey::LoadPem(path));
    keys.push_back(std::move(k));
  }
  if (keys.empty()) return Status::InvalidArgument("an index key is required (--key)");
  return keys;
}

std::string Short(const KeyId& id) { return HexEncode(id).substr(0, 16); }

std::string When(int64_t t) { return UtcTime(t, "%Y-%m-%d %H:%M:%S UTC"); }

// publish and revoke: the options shared by both, into `opts`; keys and
// trust are owned by the caller.
int PrepareWrite(const Args& args, std::vector<PrivateKey>* keys, std::optional<TrustStore>* trust,
                 feed::PublishOptions* opts) {
  auto loaded = LoadKeys(args);
  if (!loaded.ok()) return Fail(kCmd, loaded.status());
  *keys = std::move(loaded).value();
  for (const auto& k : *keys) opts->keys.push_back(&k);
  if (auto e = args.Get("--expires")) {
    auto sec = feed::ParseExpiry(*e, "--expires");
    if (!sec.ok()) return Fail(kCmd, sec.status());
    opts->expires_in = *sec;
  }
  opts->now = static_cast<int64_t>(std::time(nullptr));
  if (auto e = args.Get("--epoch")) {
    auto v = ParseNumber(*e);
    if (!v || *v > static_cast<uint64_t>(INT64_MAX / 2)) {
      return Usage(kCmd, "--epoch must be seconds since 1970");
    }
    opts->now = static_cast<int64_t>(*v);
  }
  if (auto v = args.Get("--force-version")) {
    auto n = ParseNumber(*v);
    if (!n || *n == 0) return Usage(kCmd, "--force-version must be a number above 0");
    opts->force_version = *n;
  }
  for (const auto& path : args.GetAll("--announce")) {
    auto pub = PublicKey::LoadPem(path);
    if (!pub.ok()) return Fail(kCmd, pub.status().Prefixed("--announce"));
    opts->announce.push_back({pub->id(), pub->raw()});
  }
  if (args.Has("--trust") || args.Has("--pubkey")) {
    auto t = LoadTrust(args);
    if (!t.ok()) return Fail(kCmd, t.status());
    trust->emplace(std::move(t).value());
    opts->image_trust = &**trust;
  } else {
    std::fprintf(stderr,
                 "cryptex feed: warning: the images' signatures are not checked (no --trust or "
                 "--pubkey)\n");
  }
  return kExitOk;
}

// True if `index` lists the patch `r` revokes (on its line, or on any).
bool Lists(const feed::Index& index, const feed::Revocation& r) {
  for (const auto& p : index.patches) {
    if (p.id == r.id && (r.line.empty() || p.line == r.line)) return true;
  }
  return false;
}

int Write(const Args& args, const std::string& dir, std::optional<feed::Revocation> revoke) {
  std::vector<PrivateKey> keys;
  std::optional<TrustStore> trust;
  feed::PublishOptions opts;
  opts.dir = dir;
  if (int rc = PrepareWrite(args, &keys, &trust, &opts); rc != kExitOk) return rc;
  if (revoke) revoke->at = opts.now;
  opts.revoke = std::move(revoke);
  auto r = feed::Publish(opts);
  if (!r.ok()) return Fail(kCmd, r.status());
  const bool tty = StdoutIsTerminal();
  const feed::Index& ix = r->index;
  if (opts.revoke && !Lists(ix, *opts.revoke)) {
    std::fprintf(stderr,
                 "cryptex feed: warning: the feed lists no patch %s%s (revoked anyway: devices "
                 "that have it revert it)\n",
                 ForTerminal(opts.revoke->id, StderrIsTerminal()).c_str(),
                 opts.revoke->line.empty()
                     ? ""
                     : (" on line " + ForTerminal(opts.revoke->line, StderrIsTerminal())).c_str());
  }
  if (opts.revoke) {
    std::printf("revoked %s%s\n", ForTerminal(opts.revoke->id, tty).c_str(),
                opts.revoke->line.empty()
                    ? ""
                    : (" on line " + ForTerminal(opts.revoke->line, tty)).c_str());
  }
  std::printf(
      "%s: version %llu (%s), %zu patches, %zu base images, %zu revocations, expires %s\n",
      ForTerminal(r->path, tty).c_str(), static_cast<unsigned long long>(ix.version),
      r->previous_version ? ("was " + std::to_string(*r->previous_version)).c_str() : "new feed",
      ix.patches.size(), ix.bases.size(), ix.revoked.size(), When(ix.expires).c_str());
  return kExitOk;
}

int Publish(const Args& args) {
  if (int rc = CheckOptions(args, "publish", {"--reason", "--line", "--previous", "--json"});
      rc != kExitOk) {
    return rc;
  }
  if (args.positional().size() != 1) return Usage(kCmd, "publish expects one directory DIR");
  return Write(args, args.positional()[0], std::nullopt);
}

int Revoke(const Args& args) {
  if (int rc = CheckOptions(args, "revoke", {"--previous", "--json"}); rc != kExitOk) return rc;
  if (args.positional().size() != 2) return Usage(kCmd, "revoke expects DIR and a patch ID");
  auto reason = args.Get("--reason");
  if (!reason || reason->empty()) return Usage(kCmd, "revoke needs --reason TEXT");
  feed::Revocation r;
  r.id = args.positional()[1];
  r.line = args.Get("--line").value_or("");
  r.reason = *reason;
  return Write(args, args.positional()[0], r);
}

Json ShowJson(const std::string& path, const feed::VerifiedIndex& v, int64_t now) {
  Json doc = Json::parse(v.payload);
  Json signed_by = Json::array();
  for (const auto& id : v.signed_by) signed_by.push_back(HexEncode(id));
  Json out{{"index", path}, {"signed_by", signed_by}, {"expired", v.index.expires <= now}};
  for (auto& [k, val] : doc.items()) out[k] = val;
  return out;
}

void ShowText(const std::string& path, const feed::VerifiedIndex& v, int64_t now) {
  const bool tty = StdoutIsTerminal();
  auto t = [&](const std::string& s) { return ForTerminal(s, tty); };
  const feed::Index& ix = v.index;
  std::printf("index:       %s\n", t(path).c_str());
  std::printf("version:     %llu\n", static_cast<unsigned long long>(ix.version));
  std::printf("published:   %s\n", When(ix.published).c_str());
  std::printf("expires:     %s%s\n", When(ix.expires).c_str(),
              ix.expires <= now ? " (EXPIRED: devices refuse this index)" : "");
  for (const auto& id : v.signed_by) std::printf("signed by:   %s\n", Short(id).c_str());
  std::printf("patches:     %zu\n", ix.patches.size());
  for (const auto& p : ix.patches) {
    std::string cves;
    for (const auto& c : p.cves) cves += (cves.empty() ? "" : ",") + c;
    std::printf("  %s/%s  version %s  %s  severity %s  %s  %s  %s\n", t(p.line).c_str(),
                t(p.id).c_str(), t(p.version).c_str(), t(p.activation).c_str(),
                p.severity.empty() ? "-" : t(p.severity).c_str(),
                cves.empty() ? "-" : t(cves).c_str(), HumanBytes(p.length).c_str(),
                t(p.file).c_str());
    for (const auto& r : p.requires_patches) std::printf("    requires %s\n", t(r).c_str());
  }
  std::printf("base images: %zu\n", ix.bases.size());
  for (const auto& b : ix.bases) {
    std::printf("  %s  version %s  %s  %s\n", t(b.line).c_str(), t(b.version).c_str(),
                HumanBytes(b.length).c_str(), t(b.file).c_str());
  }
  std::printf("revoked:     %zu\n", ix.revoked.size());
  for (const auto& r : ix.revoked) {
    std::printf("  %s/%s  %s  %s\n", r.line.empty() ? "*" : t(r.line).c_str(), t(r.id).c_str(),
                When(r.at).c_str(), t(r.reason).c_str());
  }
  std::printf("announced keys: %zu\n", ix.keys.size());
  for (const auto& k : ix.keys) std::printf("  %s\n", HexEncode(k.id).c_str());
}

int Show(const Args& args) {
  if (int rc = CheckOptions(
          args, "show",
          {"--key", "--expires", "--announce", "--epoch", "--force-version", "--reason", "--line"});
      rc != kExitOk) {
    return rc;
  }
  if (args.positional().size() != 1) return Usage(kCmd, "show expects a feed DIR or INDEX file");
  std::string path = args.positional()[0];
  struct stat st;
  if (stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode))
    path += std::string("/") + feed::kIndexFile;
  auto trust = LoadTrust(args);
  if (!trust.ok()) return Fail(kCmd, trust.status());
  std::vector<feed::AnnouncedKey> extra;
  if (auto prev = args.Get("--previous")) {
    auto bytes = feed::ReadIndexFile(*prev);
    if (!bytes.ok()) return Fail(kCmd, bytes.status());
    auto pv = feed::VerifyIndex(*bytes, *trust, {}, *prev);
    if (!pv.ok()) return Fail(kCmd, pv.status().Prefixed("--previous"));
    extra = pv->index.keys;
  }
  auto bytes = feed::ReadIndexFile(path);
  if (!bytes.ok()) return Fail(kCmd, bytes.status());
  auto v = feed::VerifyIndex(*bytes, *trust, extra, path);
  if (!v.ok()) return Fail(kCmd, v.status());
  const int64_t now = static_cast<int64_t>(std::time(nullptr));
  if (args.Has("--json")) return PrintJson(kCmd, ShowJson(path, *v, now));
  ShowText(path, *v, now);
  return kExitOk;
}

}  // namespace

int CmdFeed(int argc, char** argv) {
  // The device side (cmd_feed_status.cc) has its own options.
  if (argc > 1 && std::string(argv[1]) == "status") return CmdFeedStatus(argc - 1, argv + 1);
  Args args(argc > 1 ? argc - 1 : argc, argc > 1 ? argv + 1 : argv,
            {"--key", "--expires", "--announce", "--epoch", "--force-version", "--trust",
             "--pubkey", "--reason", "--line", "--previous"},
            {"--json"});
  if (args.help() || (argc > 1 && std::string(argv[1]) == "--help")) {
    std::fputs(kHelp, stdout);
    return kExitOk;
  }
  if (argc < 2) return Usage(kCmd, "expected publish, revoke or show");
  if (!args.ok()) return Usage(kCmd, args.error());
  const std::string sub = argv[1];
  if (sub == "publish") return Publish(args);
  if (sub == "revoke") return Revoke(args);
  if (sub == "show") return Show(args);
  return Usage(kCmd, "unknown subcommand '" + sub + "' (publish, revoke or show)");
}

}  // namespace cryptex::cli
