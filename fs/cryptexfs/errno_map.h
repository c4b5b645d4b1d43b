// The one place where the image library's error vocabulary (cryptex::Code)
// becomes an errno for the kernel. Every reply cryptexfs sends with an error
// derived from a Status goes through these functions.
#pragma once

#include "status.h"

namespace cryptex::cxfs {

// kCorruption -> EIO, kNotFound -> ENOENT, kIOError -> EIO,
// kNotDirectory -> ENOTDIR, kIsDirectory -> EISDIR, kPermission -> EACCES,
// every other code -> EIO. kOk -> 0.
int ErrnoFromCode(Code code);

// ErrnoFromCode(status.code()).
int ErrnoFromStatus(const Status& status);

// For getxattr/removexattr-style requests: an absent attribute is ENODATA,
// not ENOENT (getxattr(2)); everything else as ErrnoFromStatus.
int XattrErrnoFromStatus(const Status& status);

}  // namespace cryptex::cxfs
