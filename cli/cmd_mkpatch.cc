// cryptex mkpatch --from BASE [--on P ...] --to NEW -o OUT --key K --id ID [...]
#include <sys/stat.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <string>
#include <vector>

#include "cli.h"
#include "format.h"
#include "parse_size.h"
#include "patch_builder.h"
#include "view.h"

namespace cryptex::cli {

namespace {

const char kHelp[] =
    "usage: cryptex mkpatch --from BASE [--on PATCH]... --to NEW -o PATCH_OUT --key KEY\n"
    "                       --id ID [--severity S] [--cve CVE]... [--class C]\n"
    "                       [--release-counter N] [--released-at SECONDS] [--epoch SECONDS]\n"
    "                       [--name NAME] [--version VERSION] [--description TEXT]\n"
    "                       [--level L] [--chunk-size SIZE] [--threads N] [--no-delta]\n"
    "                       [--trust DIR | --pubkey FILE] [--quiet]\n\n"
    "Makes a signed patch image that brings the lower state (the base image BASE\n"
    "with the patches --on stacked on it, in order) to NEW, a directory or a base\n"
    "image. The patch holds only what changed: changed and added paths with their\n"
    "directories, whiteouts for removed paths. A file whose bytes the lower state\n"
    "already has (metadata change, move, copy) ships no bytes; a changed file ships\n"
    "a delta against its lower version when that is smaller than its data.\n\n"
    "  --from BASE            the base image of the lower state\n"
    "  --on PATCH             a patch of the lower state (repeat, bottom first); the\n"
    "                         new patch requires exactly these\n"
    "  --to NEW               the target: a directory or a .cryptex base image\n"
    "  -o PATCH_OUT           output file; must not exist (written atomically)\n"
    "  --key KEY              Ed25519 private key that signs the patch\n"
    "  --id ID                patch id (no '/' or whitespace), unique in a stack\n"
    "  --severity S           low, medium, high or critical\n"
    "  --cve CVE              a CVE the patch fixes, CVE-YYYY-NNNN (repeat)\n"
    "  --class C              activation: relaunch (restart the component) or\n"
    "                         reboot (default)\n"
    "  --release-counter N    anti-rollback counter (default 0)\n"
    "  --released-at SECONDS  release time recorded in the manifest (default: none)\n"
    "  --epoch SECONDS        creation time (default: $SOURCE_DATE_EPOCH, else now);\n"
    "                         fix it for reproducible patches\n"
    "  --name NAME            component name (default: the base's)\n"
    "  --version VERSION      version string (default: the base's)\n"
    "  --description TEXT     free text\n"
    "  --level L              zstd level 1..22 (default 9)\n"
    "  --chunk-size SIZE      chunk size, power of two 4K..1M (default 128K)\n"
    "  --threads N            compression and delta threads (default: the CPUs it may use)\n"
    "  --no-delta             ship changed files whole, never as deltas\n"
    "  --trust DIR            trusted keys for BASE, the --on patches and an image\n"
    "                         NEW (default /etc/cryptex/keys)\n"
    "  --pubkey FILE          trust exactly this public key instead\n"
    "  -q, --quiet            no progress and no summary\n"
    "A progress line is shown when stderr is a terminal.\n";

// Options taking a value; --on and --cve may be repeated.
const std::vector<std::string> kWithValue = {
    "--from",       "--to",       "-o",        "--output",          "--key",
    "--id",         "--severity", "--class",   "--release-counter", "--released-at",
    "--epoch",      "--name",     "--version", "--description",     "--level",
    "--chunk-size", "--threads",  "--trust",   "--pubkey",          "--on",
    "--cve"};
const std::vector<std::string> kFlags = {"--quiet", "-q", "--no-delta"};

// CVE-YYYY-NNNN with four or more digits in the sequence number.
bool ValidCve(const std::string& s) {
  if (s.size() < 13 || s.rfind("CVE-", 0) != 0 || s[8] != '-') return false;
  for (size_t i = 4; i < s.size(); ++i) {
    if (i != 8 && !std::isdigit(static_cast<unsigned char>(s[i]))) return false;
  }
  return true;
}

bool ValidId(const std::string& id) {
  if (id.empty()) return false;
  for (unsigned char c : id) {
    if (c == '/' || std::isspace(c) || c < 0x20 || c == 0x7f) return false;
  }
  return true;
}

const char* HowName(Shipped how) {
  switch (how) {
    case Shipped::kDelta:
      return "delta";
    case Shipped::kLowerContent:
      return "lower content";
    case Shipped::kData:
      break;
  }
  return "data";
}

}  // namespace

int CmdMkpatch(int argc, char** argv) {
  Args args(argc, argv, kWithValue, kFlags);
  if (args.help()) {
    std::fputs(kHelp, stdout);
    return kExitOk;
  }
  if (!args.ok()) return Usage("mkpatch", args.error());
  if (!args.positional().empty()) {
    return Usage("mkpatch", "unexpected argument " + args.positional()[0]);
  }
  const auto from = args.Get("--from");
  const auto to = args.Get("--to");
  const auto out = args.Get("-o") ? args.Get("-o") : args.Get("--output");
  const auto key_path = args.Get("--key");
  const auto id = args.Get("--id");
  if (!from) return Usage("mkpatch", "missing --from BASE");
  if (!to) return Usage("mkpatch", "missing --to NEW");
  if (!out) return Usage("mkpatch", "missing -o PATCH_OUT");
  if (!key_path) return Usage("mkpatch", "missing --key KEY");
  if (!id) return Usage("mkpatch", "missing --id ID");
  if (!ValidId(*id)) {
    return Usage("mkpatch", "--id must be non-empty, without '/', whitespace or control bytes");
  }

  PatchOptions opts;
  opts.output_path = *out;
  Manifest& m = opts.manifest;
  m.patch_id = *id;
  m.name = args.Get("--name").value_or("");
  m.version = args.Get("--version").value_or("");
  m.description = args.Get("--description").value_or("");
  if (auto s = args.Get("--severity")) {
    if (*s != "low" && *s != "medium" && *s != "high" && *s != "critical") {
      return Usage("mkpatch", "--severity must be low, medium, high or critical");
    }
    m.severity = *s;
  }
  for (const auto& cve : args.GetAll("--cve")) {
    if (!ValidCve(cve)) {
      return Usage("mkpatch", "--cve " + cve + ": not a CVE id (CVE-YYYY-NNNN)");
    }
    m.cves.push_back(cve);
  }
  m.activation = args.Get("--class").value_or("reboot");
  if (m.activation != "relaunch" && m.activation != "reboot") {
    return Usage("mkpatch", "--class must be relaunch or reboot");
  }
  if (auto rc = args.Get("--release-counter")) {
    auto v = ParseDecimal(*rc);
    if (!v) return Usage("mkpatch", "--release-counter must be a non-negative integer");
    m.release_counter = *v;
  }
  if (auto t = args.Get("--released-at")) {
    auto v = ParseDecimal(*t);
    if (!v) return Usage("mkpatch", "--released-at must be seconds since 1970");
    m.released_at = *v;
  }
  std::optional<std::string> epoch = args.Get("--epoch");
  if (!epoch) {
    if (const char* sde = std::getenv("SOURCE_DATE_EPOCH")) epoch = sde;
  }
  if (epoch) {
    auto v = ParseDecimal(*epoch);
    if (!v) return Usage("mkpatch", "--epoch must be seconds since 1970");
    m.created_at = *v;
  } else {
    m.created_at = static_cast<uint64_t>(std::time(nullptr));
  }
  if (auto l = args.Get("--level")) {
    auto v = ParseDecimal(*l);
    if (!v || *v < 1 || *v > 22) return Usage("mkpatch", "--level must be 1..22");
    opts.zstd_level = static_cast<int>(*v);
  }
  if (auto c = args.Get("--chunk-size")) {
    uint64_t v = 0;
    if (!ParseSize(*c, &v) || (v & (v - 1)) != 0 || v < 4096 || v > (1u << 20)) {
      return Usage("mkpatch", "--chunk-size must be a power of two from 4K to 1M");
    }
    opts.chunk_log2 = static_cast<uint32_t>(__builtin_ctzll(v));
  }
  if (auto t = args.Get("--threads")) {
    auto v = ParseDecimal(*t);
    if (!v || *v < 1 || *v > 256) return Usage("mkpatch", "--threads must be 1..256");
    opts.threads = static_cast<int>(*v);
  }
  opts.use_deltas = !args.Has("--no-delta");
  const std::vector<std::string> on = args.GetAll("--on");
  if (Status st = CheckTrustSource(args.Has("--trust"), args.Has("--pubkey")); !st.ok()) {
    return Fail("mkpatch", st);
  }
  // The manifest as far as known (name and version may come from the base)
  // against the limits every reader enforces, before any work.
  {
    Manifest probe = m;
    // A std::string, not the literal: assigning "-" makes GCC 12 at -O3
    // report a false -Wrestrict (GCC bug 105329).
    if (probe.name.empty()) probe.name = std::string("-");
    probe.base_root_digest = Digest{};
    probe.requires_patches = on;
    if (Status st = probe.Validate(); !st.ok()) return Fail("mkpatch", st);
  }
  if (struct stat st; lstat(out->c_str(), &st) == 0) {
    return Fail("mkpatch", Status::Exists(*out + ": already exists"));
  }
  auto key = PrivateKey::LoadPem(*key_path);
  if (!key.ok()) return Fail("mkpatch", key.status());
  opts.key = &key.value();

  auto trust = LoadTrust(args);
  if (!trust.ok()) {
    return Fail(
        "mkpatch",
        Status::Signature(*from + ": cannot check the signature: " + trust.status().message()));
  }
  ImageOptions io;
  io.trust = &*trust;
  // mkpatch reads each file of the lower state (and of an image target) at
  // most once, front to back: caches beyond a few frames and the hash-tree
  // path of the current block would only add resident memory.
  io.frame_cache_bytes = 2u << 20;
  io.block_cache_bytes = 2u << 20;
  auto lower = OpenStack(*from, on, io);
  if (!lower.ok()) return Fail("mkpatch", lower.status());
  auto identity = LowerIdentityOf(**lower);
  if (!identity.ok()) return Fail("mkpatch", identity.status());

  std::unique_ptr<View> target_view;
  Result<PatchTarget> target = Status::Internal("no target");
  struct stat tst;
  if (stat(to->c_str(), &tst) == 0 && S_ISDIR(tst.st_mode)) {
    target = ScanPatchTarget(*to);
  } else {
    auto img = Image::Open(*to, io);
    if (!img.ok()) return Fail("mkpatch", img.status());
    auto v = OpenImageView(std::move(*img));
    if (!v.ok()) return Fail("mkpatch", v.status());
    target_view = std::move(*v);
    target = PatchTargetFromView(*target_view);
  }
  if (!target.ok()) return Fail("mkpatch", target.status());

  const bool quiet = args.Has("--quiet") || args.Has("-q");
  const bool tty = isatty(STDERR_FILENO) && !quiet;
  if (tty) std::fprintf(stderr, "comparing %s with the lower state...", to->c_str());
  opts.progress = [tty](const BuildProgress& p) {
    if (!tty) return;
    std::fprintf(stderr, "\rsealing: %llu/%llu files, %s/%s   ",
                 static_cast<unsigned long long>(p.files_done),
                 static_cast<unsigned long long>(p.files_total), HumanBytes(p.bytes_done).c_str(),
                 HumanBytes(p.bytes_total).c_str());
    std::fflush(stderr);
  };
  auto stats = MakePatch(**lower, *identity, *target, opts);
  if (tty) std::fprintf(stderr, "\n");
  if (!stats.ok()) return Fail("mkpatch", stats.status());
  if (!quiet) {
    const PatchStats& s = *stats;
    uint64_t n[3] = {0, 0, 0}, bytes[3] = {0, 0, 0};
    for (const auto& f : s.files) {
      const auto k = static_cast<size_t>(f.how);
      ++n[k];
      bytes[k] += f.stored;
    }
    std::printf(
        "patch %s -> %s\n"
        "  %llu changed (%llu metadata only), %llu added, %llu removed, %llu opaque "
        "directories\n"
        "  files: %llu data (%s), %llu %s (%s), %llu %s\n"
        "  patch %s (%llu bytes), root hash %s\n",
        m.patch_id.c_str(), out->c_str(), static_cast<unsigned long long>(s.changed),
        static_cast<unsigned long long>(s.metadata_only), static_cast<unsigned long long>(s.added),
        static_cast<unsigned long long>(s.removed), static_cast<unsigned long long>(s.opaque_dirs),
        static_cast<unsigned long long>(n[static_cast<size_t>(Shipped::kData)]),
        HumanBytes(bytes[static_cast<size_t>(Shipped::kData)]).c_str(),
        static_cast<unsigned long long>(n[static_cast<size_t>(Shipped::kDelta)]),
        HowName(Shipped::kDelta), HumanBytes(bytes[static_cast<size_t>(Shipped::kDelta)]).c_str(),
        static_cast<unsigned long long>(n[static_cast<size_t>(Shipped::kLowerContent)]),
        HowName(Shipped::kLowerContent), HumanBytes(s.build.image_size).c_str(),
        static_cast<unsigned long long>(s.build.image_size), HexEncode(s.build.root_hash).c_str());
  }
  return kExitOk;
}

}  // namespace cryptex::cli
