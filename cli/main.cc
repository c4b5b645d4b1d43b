// cryptex: seal, check and read component images. One subcommand per file:
// `cryptex NAME` is implemented in cli/cmd_NAME.cc.
#include <cstdio>
#include <cstring>
#include <string>

#include "cli.h"

using namespace cryptex::cli;

namespace {

struct Command {
  const char* name;
  CommandFn fn;
  const char* summary;
};

constexpr Command kCommands[] = {
    {"keygen", CmdKeygen, "create an Ed25519 signing key pair"},
    {"build", CmdBuild, "seal a directory tree into a signed image"},
    {"mkpatch", CmdMkpatch, "make a signed patch from a base (and patches) to a new tree"},
    {"verify", CmdVerify, "check an image completely (signature, tree, chunks, digests)"},
    {"inspect", CmdInspect, "show an image's manifest, sizes and verity parameters"},
    {"ls", CmdLs, "list a directory of an image"},
    {"cat", CmdCat, "write a file of an image to stdout"},
    {"extract", CmdExtract, "extract an image into a new directory"},
    {"diff", CmdDiff, "list what differs between two images, or what a patch changes"},
    {"mount", CmdMount, "mount an image with cryptexfs"},
    {"umount", CmdUmount, "unmount a cryptexfs mount"},
    {"status", CmdStatus, "show a mount's counters, or the store's lines and patches"},
    {"add", CmdAdd, "register a base image in the device store"},
    {"install", CmdInstall, "check and install a patch into the store"},
    {"activate", CmdActivate, "activate an installed patch"},
    {"revert", CmdRevert, "deactivate a patch, or all patches of a line"},
    {"remove", CmdRemove, "delete an inactive patch from the store"},
    {"history", CmdHistory, "show or verify the store's history"},
    {"agent", CmdAgent, "ask the policy plugins about available patches and act (--once)"},
    {"policy", CmdPolicy, "what the policy plugins would decide (simulate), changing nothing"},
    {"approve", CmdApprove, "record an administrator's approval of a patch"},
    {"feed", CmdFeed, "a signed patch feed: publish its index, revoke a patch, show it"},
};

void PrintUsage(FILE* out) {
  std::fprintf(out,
               "usage: cryptex COMMAND [ARGS...]\n\n"
               "Sealed, verified component images.\n\ncommands:\n");
  for (const auto& c : kCommands) std::fprintf(out, "  %-8s  %s\n", c.name, c.summary);
  std::fprintf(out, "\nRun 'cryptex COMMAND --help' for a command's options.\n");
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    PrintUsage(stderr);
    return kExitUsage;
  }
  std::string cmd = argv[1];
  if (cmd == "--help" || cmd == "-h" || cmd == "help") {
    PrintUsage(stdout);
    return kExitOk;
  }
  if (cmd == "--version") {
    std::printf("cryptex 0.1.0 (image format 1)\n");
    return kExitOk;
  }
  for (const auto& c : kCommands) {
    if (cmd == c.name) {
      try {
        return c.fn(argc - 1, argv + 1);
      } catch (const std::exception& e) {
        std::fprintf(stderr, "cryptex %s: internal error: %s\n", c.name, e.what());
        return kExitError;
      }
    }
  }
  std::fprintf(stderr, "cryptex: unknown command '%s'\n\n", cmd.c_str());
  PrintUsage(stderr);
  return kExitUsage;
}
