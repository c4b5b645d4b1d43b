// cryptex verify IMAGE [--patch P ...] [--trust DIR | --pubkey FILE]
#include <unistd.h>

#include <cstdio>
#include <functional>

#include "cli.h"
#include "sha256.h"
#include "terminal.h"

namespace cryptex::cli {

namespace {

// "PATH: OK (name version, signed by key K, root hash H)" for one image.
void PrintOk(const Image& img, bool tty) {
  const auto& sb = img.superblock();
  std::printf("%s: OK (%s %s, signed by key %s, root hash %s)\n",
              ForTerminal(img.path(), tty).c_str(), ForTerminal(img.manifest().name, tty).c_str(),
              ForTerminal(img.manifest().version, tty).c_str(),
              HexEncode(sb.key_id).substr(0, 16).c_str(), HexEncode(sb.root_hash).c_str());
}

}  // namespace

int CmdVerify(int argc, char** argv) {
  Args args(argc, argv, {"--trust", "--pubkey", "--patch"}, {"--quiet", "-q"});
  if (args.help()) {
    std::printf(
        "usage: cryptex verify IMAGE [--patch PATCH ...]\n"
        "                      [--trust DIR | --pubkey FILE] [-q]\n\n"
        "Checks the signature against the trusted keys (default /etc/cryptex/keys),\n"
        "every block against the hash tree, that every chunk decompresses to its\n"
        "recorded size, every file's content against its fs-verity digest, and the\n"
        "consistency of the metadata. Names the first bad region, file or block.\n"
        "IMAGE may be a patch on its own: its container is checked. With --patch\n"
        "(repeatable, bottom first), IMAGE and every patch are checked, then every\n"
        "file of IMAGE with the patches applied against its digest.\n"
        "Exit status: 0 good, 3 corrupt, badly signed or no trusted key, 4 unsupported,\n"
        "5 no such image, 1 other errors.\n");
    return kExitOk;
  }
  if (!args.ok()) return Usage("verify", args.error());
  if (args.positional().size() != 1) return Usage("verify", "expected one IMAGE");
  const std::string& path = args.positional()[0];
  const std::vector<std::string> patches = args.GetAll("--patch");
  // Without --patch the image is opened on its own (Image, not View), so a
  // patch given as IMAGE has its container checked.
  std::unique_ptr<Image> image;
  std::unique_ptr<View> view;
  if (patches.empty()) {
    auto img = OpenImage(path, args);
    if (!img.ok()) return Fail("verify", img.status());
    image = std::move(*img);
  } else {
    auto v = OpenView(path, patches, args);
    if (!v.ok()) return Fail("verify", v.status());
    view = std::move(*v);
  }
  const bool quiet = args.Has("-q") || args.Has("--quiet");
  const bool tty = isatty(STDERR_FILENO) && !quiet;
  const std::function<void(uint64_t, uint64_t)> progress = [tty](uint64_t done, uint64_t total) {
    if (tty && total != 0)
      std::fprintf(stderr, "\rverifying blocks: %3d%%", static_cast<int>(done * 100 / total));
  };
  Status st = image ? image->VerifyAll(progress) : view->VerifyAll(progress);
  if (tty) std::fprintf(stderr, "\r                        \r");
  if (!st.ok()) return Fail("verify", st);
  if (!quiet) {
    // The paths and manifest strings are escaped on a terminal (terminal.h).
    const bool out_tty = StdoutIsTerminal();
    if (image) {
      PrintOk(*image, out_tty);
    } else {
      for (const Image* layer : view->layers()) PrintOk(*layer, out_tty);
    }
  }
  return kExitOk;
}

}  // namespace cryptex::cli
