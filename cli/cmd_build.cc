// cryptex build DIR -o IMAGE --key K --name N --version V [...]
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>

#include "builder.h"
#include "cli.h"
#include "format.h"
#include "parse_size.h"

namespace cryptex::cli {

namespace {

const char kHelp[] =
    "usage: cryptex build DIR -o IMAGE --key KEY --name NAME --version VERSION\n"
    "                     [--release-counter N] [--level L] [--chunk-size SIZE]\n"
    "                     [--epoch SECONDS] [--threads N] [--description TEXT]\n\n"
    "Seals the tree DIR into a signed, compressed, read-only image. DIR may be a\n"
    "symlink to a directory; no symlink below it is followed. A file that changes\n"
    "while it is read fails the build.\n\n"
    "  -o IMAGE             output file; must not exist (written atomically)\n"
    "  --key KEY            Ed25519 private key from 'cryptex keygen'\n"
    "  --name NAME          component name (e.g. org.example.browser)\n"
    "  --version VERSION    human version string\n"
    "  --release-counter N  anti-rollback counter of this image line (default 0)\n"
    "  --level L            zstd level 1..22 (default 9)\n"
    "  --chunk-size SIZE    chunk size, power of two 4K..1M (default 128K)\n"
    "  --epoch SECONDS      creation time recorded in the image (default:\n"
    "                       $SOURCE_DATE_EPOCH, else now); fix it for reproducible builds\n"
    "  --threads N          compression threads (default: the CPUs it may use)\n"
    "A progress bar is shown when stderr is a terminal.\n";

class ProgressBar {
 public:
  explicit ProgressBar(bool enabled) : enabled_(enabled), start_(Clock::now()) {}
  void Update(const BuildProgress& p) {
    if (!enabled_) return;
    const double secs = std::chrono::duration<double>(Clock::now() - start_).count();
    const double rate = secs > 0 ? static_cast<double>(p.bytes_done) / secs : 0;
    const double frac =
        p.bytes_total ? static_cast<double>(p.bytes_done) / static_cast<double>(p.bytes_total) : 1;
    const int eta =
        rate > 0 ? static_cast<int>(static_cast<double>(p.bytes_total - p.bytes_done) / rate) : 0;
    char bar[31];
    const int filled = static_cast<int>(frac * 30);
    for (int i = 0; i < 30; ++i) bar[i] = i < filled ? '#' : '.';
    bar[30] = 0;
    std::fprintf(stderr, "\r[%s] %3d%%  %llu/%llu files  %s/%s  %s/s  ETA %d:%02d ", bar,
                 static_cast<int>(frac * 100), static_cast<unsigned long long>(p.files_done),
                 static_cast<unsigned long long>(p.files_total), HumanBytes(p.bytes_done).c_str(),
                 HumanBytes(p.bytes_total).c_str(), HumanBytes(static_cast<uint64_t>(rate)).c_str(),
                 eta / 60, eta % 60);
    std::fflush(stderr);
    drawn_ = true;
  }
  void Finish() {
    if (drawn_) std::fprintf(stderr, "\n");
  }

 private:
  using Clock = std::chrono::steady_clock;
  bool enabled_;
  bool drawn_ = false;
  Clock::time_point start_;
};

}  // namespace

int CmdBuild(int argc, char** argv) {
  Args args(argc, argv,
            {"-o", "--output", "--key", "--name", "--version", "--release-counter", "--level",
             "--chunk-size", "--epoch", "--threads", "--description"},
            {"--quiet", "-q"});
  if (args.help()) {
    std::fputs(kHelp, stdout);
    return kExitOk;
  }
  if (!args.ok()) return Usage("build", args.error());
  if (args.positional().size() != 1) return Usage("build", "expected exactly one source DIR");
  auto out = args.Get("-o") ? args.Get("-o") : args.Get("--output");
  auto key_path = args.Get("--key");
  auto name = args.Get("--name");
  auto version = args.Get("--version");
  if (!out) return Usage("build", "missing -o IMAGE");
  if (!key_path) return Usage("build", "missing --key KEY");
  if (!name || name->empty()) return Usage("build", "missing --name NAME");
  if (!version || version->empty()) return Usage("build", "missing --version VERSION");

  BuildOptions opts;
  opts.output_path = *out;
  opts.manifest.name = *name;
  opts.manifest.version = *version;
  opts.manifest.description = args.Get("--description").value_or("");
  if (auto rc = args.Get("--release-counter")) {
    auto v = ParseDecimal(*rc);
    if (!v) return Usage("build", "--release-counter must be a non-negative integer");
    opts.manifest.release_counter = *v;
  }
  if (auto l = args.Get("--level")) {
    auto v = ParseDecimal(*l);
    if (!v || *v < 1 || *v > 22) return Usage("build", "--level must be 1..22");
    opts.zstd_level = static_cast<int>(*v);
  }
  if (auto c = args.Get("--chunk-size")) {
    uint64_t v = 0;
    if (!ParseSize(*c, &v) || (v & (v - 1)) != 0 || v < 4096 || v > (1u << 20)) {
      return Usage("build", "--chunk-size must be a power of two from 4K to 1M");
    }
    opts.chunk_log2 = static_cast<uint32_t>(__builtin_ctzll(v));
  }
  if (auto t = args.Get("--threads")) {
    auto v = ParseDecimal(*t);
    if (!v || *v < 1 || *v > 256) return Usage("build", "--threads must be 1..256");
    opts.threads = static_cast<int>(*v);
  }
  std::optional<std::string> epoch = args.Get("--epoch");
  if (!epoch) {
    if (const char* sde = std::getenv("SOURCE_DATE_EPOCH")) epoch = sde;
  }
  if (epoch) {
    auto v = ParseDecimal(*epoch);
    if (!v) return Usage("build", "--epoch must be seconds since 1970");
    opts.manifest.created_at = *v;
  } else {
    opts.manifest.created_at = static_cast<uint64_t>(std::time(nullptr));
  }

  // Arguments are checked before any work: the manifest against the limits
  // every reader enforces, the destination for existence (Create checks
  // again, atomically), the key, then the scan.
  if (Status st = opts.manifest.Validate(); !st.ok()) return Fail("build", st);
  if (struct stat st; lstat(out->c_str(), &st) == 0) {
    return Fail("build", Status::Exists(*out + ": already exists"));
  }

  auto key = PrivateKey::LoadPem(*key_path);
  if (!key.ok()) return Fail("build", key.status());
  opts.key = &key.value();

  const std::string& src = args.positional()[0];
  auto tree = ScanDirectory(src);
  if (!tree.ok()) return Fail("build", tree.status());

  ProgressBar bar(isatty(STDERR_FILENO) && !args.Has("--quiet") && !args.Has("-q"));
  opts.progress = [&bar](const BuildProgress& p) { bar.Update(p); };
  auto t0 = std::chrono::steady_clock::now();
  auto stats = WriteImage(*tree, opts);
  bar.Finish();
  if (!stats.ok()) return Fail("build", stats.status());
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (!args.Has("--quiet") && !args.Has("-q")) {
    const auto& s = *stats;
    std::printf(
        "sealed %s -> %s\n"
        "  %llu files, %llu directories, %llu symlinks, %llu other\n"
        "  content %s, stored %s in %llu frames (%.2fx), %llu deduplicated, %llu holes\n"
        "  image %s, root hash %s\n"
        "  %.2f s, %s/s\n",
        src.c_str(), out->c_str(), static_cast<unsigned long long>(s.files),
        static_cast<unsigned long long>(s.directories), static_cast<unsigned long long>(s.symlinks),
        static_cast<unsigned long long>(s.other), HumanBytes(s.content_bytes).c_str(),
        HumanBytes(s.stored_bytes).c_str(), static_cast<unsigned long long>(s.frames),
        s.stored_bytes ? static_cast<double>(s.content_bytes) / static_cast<double>(s.stored_bytes)
                       : 1.0,
        static_cast<unsigned long long>(s.dedup_hits),
        static_cast<unsigned long long>(s.hole_chunks), HumanBytes(s.image_size).c_str(),
        HexEncode(s.root_hash).c_str(), secs,
        HumanBytes(
            static_cast<uint64_t>(static_cast<double>(s.content_bytes) / (secs > 0 ? secs : 1)))
            .c_str());
  }
  return kExitOk;
}

}  // namespace cryptex::cli
