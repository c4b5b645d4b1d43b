// cryptex status MOUNTPOINT...   (a mount)
// cryptex status [NAME...] [--store DIR]   (the device store: cmd_store.cc)
//
// Shows what a cryptexfs mount serves and its integrity counters. They come
// from the driver through the status ioctl (fs/cryptexfs/status_channel.h),
// after proving the path is a cryptexfs mount point: nothing in an image and
// no plain directory can fake them.
#include <sys/stat.h>

#include <cstdio>
#include <string>

#include "cli.h"
#include "json.h"
#include "sha256.h"
#include "status_channel.h"
#include "terminal.h"

namespace cryptex::cli {

namespace {

Json ToJson(const std::string& mnt, const cxfs::MountStatus& s) {
  Json j;
  j["mountpoint"] = mnt;
  j["image"] = s.image;
  j["root_hash"] = HexEncode(s.root_hash);
  j["verify_failures"] = s.verify_failures;
  j["blocks_verified"] = s.blocks_verified;
  j["cache_hits"] = s.cache_hits;
  j["cache_misses"] = s.cache_misses;
  j["files_pushed"] = s.files_pushed;
  return j;
}

void PrintText(const std::string& mnt, const cxfs::MountStatus& s) {
  const bool tty = StdoutIsTerminal();
  std::printf(
      "%s\n  image:            %s\n  root hash:        %s\n"
      "  blocks verified:  %llu\n  verify failures:  %llu%s\n"
      "  chunk cache:      %llu hits, %llu misses\n"
      "  files pushed:     %llu (stored into the page cache ahead of their reads)\n",
      ForTerminal(mnt, tty).c_str(), ForTerminal(s.image, tty).c_str(),
      HexEncode(s.root_hash).c_str(), static_cast<unsigned long long>(s.blocks_verified),
      static_cast<unsigned long long>(s.verify_failures),
      s.verify_failures == 0 ? "" : "   <-- corrupt blocks were refused (EIO); see the log",
      static_cast<unsigned long long>(s.cache_hits),
      static_cast<unsigned long long>(s.cache_misses),
      static_cast<unsigned long long>(s.files_pushed));
}

// Store status when --store is given, there is no argument, or every
// argument could be a line name (no '/': line names have none) and is not
// a directory; mount status otherwise (`cryptex status /mnt/app`).
bool IsStoreQuery(const Args& args) {
  if (args.Has("--store") || args.positional().empty()) return true;
  for (const auto& p : args.positional()) {
    struct stat st;
    if (p.find('/') != std::string::npos) return false;
    if (stat(p.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) return false;
  }
  return true;
}

}  // namespace

int CmdStatus(int argc, char** argv) {
  Args args(argc, argv, {"--store", "--trust", "--pubkey"}, {"--json"});
  if (args.help()) {
    std::printf(
        "usage: cryptex status MOUNTPOINT... [--json]\n"
        "       cryptex status [NAME...] [--json] [--store DIR]\n"
        "                      [--trust DIR | --pubkey FILE]\n\n"
        "For each cryptexfs mount point: the image it serves, its root hash, and the\n"
        "integrity counters (blocks verified, verification failures, chunk cache\n"
        "hits and misses, files pushed), as the driver reports them.\n"
        "Exit status 3 if any mount has seen a verification failure, 5 if a path\n"
        "is not a cryptexfs mount point, 1 on other errors.\n\n"
        "With --store, no argument, or NAMEs (no '/') that are not directories: the\n"
        "device store's image lines (default $CRYPTEX_STORE, else /var/lib/cryptex):\n"
        "each base, its installed patches (version, release counter, class,\n"
        "severity, CVEs, active or not) and the highest release counter seen; for\n"
        "each running mount of a line, what it serves and which change is pending\n"
        "until it is remounted (a reboot-class patch activated or reverted). Every\n"
        "stored image is opened (signature, size, root digest), and every patch and\n"
        "persisted hash tree compared with the size and SHA-256 recorded at install:\n"
        "exit status 3 if one is damaged (each damaged file is named), 5 if a NAME\n"
        "is not in the store.\n");
    return kExitOk;
  }
  if (!args.ok()) return Usage("status", args.error());
  if (IsStoreQuery(args)) return StoreStatus(args);
  const bool json = args.Has("--json");
  int rc = kExitOk;
  Json list = Json::array();
  for (const auto& mnt : args.positional()) {
    Result<cxfs::MountStatus> s = cxfs::QueryMountStatus(mnt);
    if (!s.ok()) {
      const int code = Fail("status", s.status());
      if (rc == kExitOk || rc == kExitIntegrity) rc = code;
      continue;
    }
    if (s->verify_failures != 0 && rc == kExitOk) rc = kExitIntegrity;
    if (json) {
      list.push_back(ToJson(mnt, *s));
    } else {
      PrintText(mnt, *s);
    }
  }
  if (json) {
    const int w = PrintJson("status", list);
    if (w != kExitOk) return w;
  }
  return rc;
}

}  // namespace cryptex::cli
