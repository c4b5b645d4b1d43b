// cryptex verify IMAGE [--trust DIR | --pubkey FILE]
#include <unistd.h>

#include <cstdio>

#include "cli.h"
#include "sha256.h"
#include "terminal.h"

namespace cryptex::cli {

int CmdVerify(int argc, char** argv) {
  Args args(argc, argv, {"--trust", "--pubkey"}, {"--quiet", "-q"});
  if (args.help()) {
    std::printf(
        "usage: cryptex verify IMAGE [--trust DIR | --pubkey FILE] [-q]\n\n"
        "Checks the signature against the trusted keys (default /etc/cryptex/keys),\n"
        "every block against the hash tree, that every chunk decompresses to its\n"
        "recorded size, every file's content against its fs-verity digest, and the\n"
        "consistency of the metadata. Names the first bad region, file or block.\n"
        "Exit status: 0 good, 3 corrupt, badly signed or no trusted key, 4 unsupported,\n"
        "5 no such image, 1 other errors.\n");
    return kExitOk;
  }
  if (!args.ok()) return Usage("verify", args.error());
  if (args.positional().size() != 1) return Usage("verify", "expected one IMAGE");
  const std::string& path = args.positional()[0];
  auto img = OpenImage(path, args);
  if (!img.ok()) return Fail("verify", img.status());
  const bool tty = isatty(STDERR_FILENO) && !args.Has("-q") && !args.Has("--quiet");
  Status st = (*img)->VerifyAll([tty](uint64_t done, uint64_t total) {
    if (tty)
      std::fprintf(stderr, "\rverifying blocks: %3d%%", static_cast<int>(done * 100 / total));
  });
  if (tty) std::fprintf(stderr, "\r                        \r");
  if (!st.ok()) return Fail("verify", st);
  if (!args.Has("-q") && !args.Has("--quiet")) {
    const auto& sb = (*img)->superblock();
    // The path and manifest strings are escaped on a terminal (terminal.h).
    const bool out_tty = StdoutIsTerminal();
    std::printf("%s: OK (%s %s, signed by key %s, root hash %s)\n",
                ForTerminal(path, out_tty).c_str(),
                ForTerminal((*img)->manifest().name, out_tty).c_str(),
                ForTerminal((*img)->manifest().version, out_tty).c_str(),
                HexEncode(sb.key_id).substr(0, 16).c_str(), HexEncode(sb.root_hash).c_str());
  }
  return kExitOk;
}

}  // namespace cryptex::cli
