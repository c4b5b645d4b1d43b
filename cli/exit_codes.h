// Exit codes of `cryptex` and `cryptexfs`, and the one mapping from a Status
// to an exit code (README.md, "Exit codes"). Header-only so that the FUSE
// driver, which does not link the CLI, exits with the same codes.
#pragma once

#include "status.h"

namespace cryptex::cli {

enum Exit : int {
  kExitOk = 0,
  kExitError = 1,        // I/O and other failures
  kExitUsage = 2,        // bad command line
  kExitIntegrity = 3,    // corruption, bad/unknown signature
  kExitUnsupported = 4,  // format version / feature this build does not know
  kExitNotFound = 5,
  kExitExists = 6,
};

inline int ExitCodeFor(const Status& st) {
  switch (st.code()) {
    case Code::kOk:
      return kExitOk;
    case Code::kCorruption:
    case Code::kSignature:
      return kExitIntegrity;
    case Code::kUnsupported:
      return kExitUnsupported;
    case Code::kNotFound:
      return kExitNotFound;
    case Code::kExists:
      return kExitExists;
    case Code::kInvalidArgument:
      return kExitUsage;
    default:
      return kExitError;
  }
}

}  // namespace cryptex::cli
