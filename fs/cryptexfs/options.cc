#include "options.h"

#include <cstdlib>
#include <cstring>

#include "status_channel.h"

namespace cryptex::cxfs {
namespace {

enum Key : int {
  kKeyTrust = 1,
  kKeyPubkey,
  kKeyCacheSize,
  kKeyDrop,
  kKeyOpenHandles,
  kKeyNoPush,
  kKeyReadahead,
  kKeyPatch,
  kKeyStore,
  kKeyLevel,
};

const fuse_opt kDriverOpts[] = {
    FUSE_OPT_KEY("trust=", kKeyTrust),
    FUSE_OPT_KEY("pubkey=", kKeyPubkey),
    FUSE_OPT_KEY("cache_size=", kKeyCacheSize),
    FUSE_OPT_KEY("open_handles", kKeyOpenHandles),
    FUSE_OPT_KEY("no_push", kKeyNoPush),
    FUSE_OPT_KEY("readahead=", kKeyReadahead),
    FUSE_OPT_KEY("patch=", kKeyPatch),
    FUSE_OPT_KEY("store=", kKeyStore),
    FUSE_OPT_KEY("level=", kKeyLevel),
    FUSE_OPT_KEY("ro", kKeyDrop),
    FUSE_OPT_KEY("rw", kKeyDrop),
    FUSE_OPT_KEY("nofail", kKeyDrop),
    FUSE_OPT_KEY("noauto", kKeyDrop),
    FUSE_OPT_KEY("auto", kKeyDrop),
    FUSE_OPT_KEY("_netdev", kKeyDrop),
    FUSE_OPT_KEY("defaults", kKeyDrop),
    FUSE_OPT_KEY("user", kKeyDrop),
    FUSE_OPT_KEY("users", kKeyDrop),
    FUSE_OPT_KEY("nouser", kKeyDrop),
    FUSE_OPT_END,
};

struct ParseState {
  DriverConfig* cfg;
  int nonopts = 0;
  std::string error;  // first error, if any
};

// Value of "key=value" after the '='.
const char* ValueOf(const char* arg) {
  const char* eq = std::strchr(arg, '=');
  return eq ? eq + 1 : "";
}

int ProcessArg(void* data, const char* arg, int key, fuse_args* /*outargs*/) {
  auto* st = static_cast<ParseState*>(data);
  auto fail = [st](std::string msg) {
    if (st->error.empty()) st->error = std::move(msg);
    return -1;
  };
  switch (key) {
    case kKeyTrust:
      st->cfg->trust_dir = ValueOf(arg);
      st->cfg->trust_given = true;
      if (st->cfg->trust_dir.empty()) return fail("trust= needs a directory");
      return 0;
    case kKeyPubkey:
      st->cfg->pubkey = ValueOf(arg);
      if (st->cfg->pubkey.empty()) return fail("pubkey= needs a file");
      return 0;
    case kKeyCacheSize:
      if (!ParseSize(ValueOf(arg), &st->cfg->cache_bytes)) {
        return fail(std::string("bad cache_size '") + ValueOf(arg) +
                    "' (expected BYTES with an optional K, M or G suffix)");
      }
      return 0;
    case kKeyReadahead: {
      uint64_t bytes = 0;
      if (!ParseSize(ValueOf(arg), &bytes) || bytes > (64ull << 20)) {
        return fail(std::string("bad readahead '") + ValueOf(arg) +
                    "' (expected BYTES up to 64M, K/M suffixes; 0 keeps the kernel's)");
      }
      st->cfg->readahead_bytes = bytes;
      return 0;
    }
    case kKeyPatch:
      if (*ValueOf(arg) == '\0') return fail("patch= needs a file");
      st->cfg->patches.emplace_back(ValueOf(arg));
      return 0;
    case kKeyStore:
      st->cfg->store_dir = ValueOf(arg);
      if (st->cfg->store_dir.empty()) return fail("store= needs a directory");
      return 0;
    case kKeyLevel:
      st->cfg->level = ValueOf(arg);
      if (st->cfg->level.empty()) return fail("level= needs base or a patch id");
      return 0;
    case kKeyOpenHandles:
      st->cfg->open_handles = true;
      return 0;
    case kKeyNoPush:
      st->cfg->push = false;
      return 0;
    case kKeyDrop:
      return 0;
    case FUSE_OPT_KEY_OPT:
      // fstab-only options that must not reach the kernel.
      if (std::strncmp(arg, "x-", 2) == 0 || std::strncmp(arg, "comment=", 8) == 0) return 0;
      return 1;
    case FUSE_OPT_KEY_NONOPT:
      ++st->nonopts;
      if (st->nonopts == 1) {
        st->cfg->image = arg;
        return 0;
      }
      if (st->nonopts == 2) return 1;  // the mountpoint, for fuse_parse_cmdline
      return fail(std::string("unexpected argument '") + arg + "'");
    default:
      return 1;
  }
}

}  // namespace

Status ParseDriverArgs(fuse_args* args, DriverConfig* cfg) {
  ParseState st{cfg, 0, {}};
  if (fuse_opt_parse(args, &st, kDriverOpts, ProcessArg) != 0) {
    return Status::InvalidArgument(st.error.empty() ? "cannot parse the command line" : st.error);
  }
  if (!cfg->level.empty() && cfg->store_dir.empty()) {
    return Status::InvalidArgument("level= needs store= (it pins a store line)");
  }
  if (!cfg->store_dir.empty() && !cfg->patches.empty()) {
    return Status::InvalidArgument("patch= and store= exclude each other (a line has its patches)");
  }
  return CheckTrustSource(cfg->trust_given, !cfg->pubkey.empty());
}

Status AddImpliedOptions(fuse_args* args, const std::string& fsname) {
  char* opts = nullptr;
  bool ok = fuse_opt_add_opt(&opts, "ro") == 0 &&
            fuse_opt_add_opt(&opts, "default_permissions") == 0 &&
            fuse_opt_add_opt(&opts, (std::string("subtype=") + kSubtype).c_str()) == 0 &&
            fuse_opt_add_opt_escaped(&opts, ("fsname=" + fsname).c_str()) == 0 &&
            fuse_opt_add_arg(args, "-o") == 0 && fuse_opt_add_arg(args, opts) == 0;
  std::free(opts);
  if (!ok) return Status::Internal("out of memory building mount options");
  return Status::Ok();
}

}  // namespace cryptex::cxfs
