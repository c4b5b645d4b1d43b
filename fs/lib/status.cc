#include "status.h"

#include <cstring>

namespace cryptex {

const char* CodeName(Code c) {
  switch (c) {
    case Code::kOk:
      return "ok";
    case Code::kNotFound:
      return "not found";
    case Code::kCorruption:
      return "corruption";
    case Code::kIOError:
      return "I/O error";
    case Code::kInvalidArgument:
      return "invalid argument";
    case Code::kBadSource:
      return "source not representable";
    case Code::kSignature:
      return "signature";
    case Code::kUnsupported:
      return "unsupported";
    case Code::kExists:
      return "exists";
    case Code::kPermission:
      return "permission denied";
    case Code::kNotDirectory:
      return "not a directory";
    case Code::kIsDirectory:
      return "is a directory";
    case Code::kInternal:
      return "internal error";
  }
  return "unknown";
}

Status Status::FromErrno(int err, std::string m) {
  Code c = Code::kIOError;
  if (err == ENOENT) c = Code::kNotFound;
  if (err == EEXIST) c = Code::kExists;
  if (err == EACCES || err == EPERM) c = Code::kPermission;
  if (err == ENOTDIR) c = Code::kNotDirectory;
  if (err == EISDIR) c = Code::kIsDirectory;
  return Status(c, m + ": " + std::strerror(err));
}

std::string Status::ToString() const {
  if (ok()) return "ok";
  return std::string(CodeName(code_)) + ": " + msg_;
}

}  // namespace cryptex
