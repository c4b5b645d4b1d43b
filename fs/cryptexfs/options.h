// Command line of cryptexfs: `cryptexfs IMAGE MOUNTPOINT [-o OPTIONS]`.
//
// The driver's own options (trust=, pubkey=, cache_size=) and the first
// non-option argument (IMAGE) are taken out of the argument vector; what is
// left (the mountpoint and every standard FUSE option) goes to
// fuse_parse_cmdline / fuse_session_new.
#pragma once

#include <fuse_opt.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "keys.h"
#include "parse_size.h"  // ParseSize, for the size options
#include "status.h"

namespace cryptex::cxfs {

inline constexpr uint64_t kDefaultCacheBytes = 64ull << 20;
inline constexpr uint64_t kDefaultReadaheadBytes = 1ull << 20;

struct DriverConfig {
  std::string image;                         // IMAGE as given on the command line
  std::string trust_dir = kDefaultTrustDir;  // trust=DIR
  bool trust_given = false;
  std::string pubkey;     // pubkey=FILE; replaces the trust directory
  std::string store_dir;  // store=DIR: IMAGE names a line of this store (live activation)
  std::string level;      // level=base|ID with store=: pinned at that level, never reloaded
  std::vector<std::string> patches;  // patch=FILE, repeatable: layers over IMAGE, bottom first
  uint64_t cache_bytes = kDefaultCacheBytes;  // cache_size=BYTES
  // readahead=BYTES: the mount's read_ahead_kb (sysfs bdi); 0 keeps the
  // kernel's 128K. Larger readahead gives larger READs, decoded in parallel.
  uint64_t readahead_bytes = kDefaultReadaheadBytes;
  bool open_handles = false;  // open_handles: answer OPEN instead of no_open (old kernels)
  bool push = true;           // no_push: store nothing ahead of reads (push.h)
};

// Takes IMAGE and the driver's options out of *args (fuse_opt_parse) and drops
// the fstab-only options that mount(8) or mount.fuse3 may pass through
// (nofail, noauto, auto, _netdev, defaults, user, users, nouser, x-*,
// comment=*), and rw/ro (the mount is always read-only, see
// AddImpliedOptions). kInvalidArgument with a message on bad input.
Status ParseDriverArgs(fuse_args* args, DriverConfig* cfg);

// Appends "-o ro,default_permissions,subtype=cryptexfs,fsname=FSNAME"
// (fsname escaped) after every user option, so the kernel mount is read-only
// and the kernel enforces the owners and modes recorded in the image (for
// every user, allow_other or not) whatever was asked. No option turns either
// off: the driver itself checks no permissions.
Status AddImpliedOptions(fuse_args* args, const std::string& fsname);

}  // namespace cryptex::cxfs
