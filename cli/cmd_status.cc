// cryptex status MOUNTPOINT...
//
// Shows what a cryptexfs mount serves and its integrity counters, read from
// the virtual user.cryptex.* xattrs of the mount's root (fs/cryptexfs/README.md).
#include <sys/xattr.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <optional>
#include <string>

#include "cli.h"

namespace cryptex::cli {

namespace {

std::optional<std::string> Attr(const std::string& mnt, const char* name) {
  char buf[512];
  ssize_t n = getxattr(mnt.c_str(), name, buf, sizeof buf);
  if (n < 0) return std::nullopt;
  return std::string(buf, static_cast<size_t>(n));
}

}  // namespace

int CmdStatus(int argc, char** argv) {
  Args args(argc, argv, {}, {"--json"});
  if (args.help()) {
    std::printf(
        "usage: cryptex status MOUNTPOINT... [--json]\n\n"
        "For each cryptexfs mount: the image it serves, its root hash, and the\n"
        "integrity counters (blocks verified, verification failures, chunk cache\n"
        "hits and misses). Exit status 3 if any mount has seen a verification\n"
        "failure, 5 if a path is not a cryptexfs mount.\n");
    return kExitOk;
  }
  if (!args.ok()) return Usage("status", args.error());
  if (args.positional().empty()) return Usage("status", "expected MOUNTPOINT");
  int rc = kExitOk;
  const bool json = args.Has("--json");
  if (json) std::printf("[");
  bool first = true;
  for (const auto& mnt : args.positional()) {
    auto image = Attr(mnt, "user.cryptex.image");
    if (!image) {
      std::fprintf(stderr, "cryptex status: %s: not a cryptexfs mount (%s)\n", mnt.c_str(),
                   std::strerror(errno));
      rc = kExitNotFound;
      continue;
    }
    const std::string root = Attr(mnt, "user.cryptex.root_hash").value_or("?");
    const std::string failures = Attr(mnt, "user.cryptex.verify_failures").value_or("?");
    const std::string verified = Attr(mnt, "user.cryptex.blocks_verified").value_or("?");
    const std::string hits = Attr(mnt, "user.cryptex.cache_hits").value_or("?");
    const std::string misses = Attr(mnt, "user.cryptex.cache_misses").value_or("?");
    const std::string pushed = Attr(mnt, "user.cryptex.files_pushed").value_or("?");
    if (failures != "0" && rc == kExitOk) rc = kExitIntegrity;
    if (json) {
      std::printf(
          "%s\n  {\"mountpoint\": %s, \"image\": %s, \"root_hash\": %s, "
          "\"verify_failures\": %s, \"blocks_verified\": %s, \"cache_hits\": %s, "
          "\"cache_misses\": %s, \"files_pushed\": %s}",
          first ? "" : ",", JsonString(mnt).c_str(), JsonString(*image).c_str(),
          JsonString(root).c_str(), failures.c_str(), verified.c_str(), hits.c_str(),
          misses.c_str(), pushed.c_str());
    } else {
      std::printf(
          "%s\n  image:            %s\n  root hash:        %s\n"
          "  blocks verified:  %s\n  verify failures:  %s%s\n"
          "  chunk cache:      %s hits, %s misses\n"
          "  files pushed:     %s (stored into the page cache ahead of their reads)\n",
          mnt.c_str(), image->c_str(), root.c_str(), verified.c_str(), failures.c_str(),
          failures == "0" ? "" : "   <-- corrupt blocks were refused (EIO); see the log",
          hits.c_str(), misses.c_str(), pushed.c_str());
    }
    first = false;
  }
  if (json) std::printf("\n]\n");
  return rc;
}

}  // namespace cryptex::cli
