#include "errno_map.h"

#include <cerrno>

namespace cryptex::cxfs {

int ErrnoFromCode(Code code) {
  switch (code) {
    case Code::kOk:
      return 0;
    case Code::kNotFound:
      return ENOENT;
    case Code::kCorruption:
      return EIO;
    case Code::kIOError:
      return EIO;
    case Code::kNotDirectory:
      return ENOTDIR;
    case Code::kIsDirectory:
      return EISDIR;
    case Code::kPermission:
      return EACCES;
    case Code::kInvalidArgument:
    case Code::kBadSource:
    case Code::kSignature:
    case Code::kUnsupported:
    case Code::kExists:
    case Code::kInternal:
      return EIO;
  }
  return EIO;
}

int ErrnoFromStatus(const Status& status) { return ErrnoFromCode(status.code()); }

int XattrErrnoFromStatus(const Status& status) {
  if (status.code() == Code::kNotFound) return ENODATA;
  return ErrnoFromStatus(status);
}

}  // namespace cryptex::cxfs
