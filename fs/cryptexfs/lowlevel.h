// The libfuse low-level operation table of cryptexfs. Each callback is a thin
// wrapper: it calls the matching Filesystem::DoX() and sends exactly one
// fuse_reply_*; no exception crosses into libfuse (std::bad_alloc -> ENOMEM,
// anything else -> EIO). Every write-side operation answers EROFS.
#pragma once

#include <fuse_lowlevel.h>

namespace cryptex::cxfs {

// REQUIRES: the session's userdata is the Filesystem* serving it.
const fuse_lowlevel_ops& LowLevelOps();

}  // namespace cryptex::cxfs
