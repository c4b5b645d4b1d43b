// Status and Result<T>: the one error vocabulary of the image library.
//
// Codes keep "corrupt" apart from "missing" apart from "I/O error": a caller
// (the FUSE edge, the CLI) maps them to errno / exit codes in exactly one
// place (fs/cryptexfs/errno_map.cc, cli/exit_codes.h).
#pragma once

#include <cassert>
#include <string>
#include <utility>
#include <variant>

namespace cryptex {

enum class Code {
  kOk = 0,
  kNotFound,         // path or key does not exist
  kCorruption,       // image bytes fail verification or are inconsistent
  kIOError,          // the OS failed a read/write
  kInvalidArgument,  // bad user input (flags, paths, names)
  kBadSource,        // a source tree the format cannot hold (too deep, a name too long...)
  kSignature,        // signature missing, wrong, or from an untrusted key
  kUnsupported,      // unknown incompat feature, format version, algorithm
  kExists,           // destination already exists
  kPermission,       // permission denied by the OS or a policy
  kNotDirectory,
  kIsDirectory,
  kInternal,
};

const char* CodeName(Code c);

class [[nodiscard]] Status {
 public:
  Status() = default;
  static Status Ok() { return Status(); }
  static Status NotFound(std::string m) { return Status(Code::kNotFound, std::move(m)); }
  static Status Corruption(std::string m) { return Status(Code::kCorruption, std::move(m)); }
  static Status IOError(std::string m) { return Status(Code::kIOError, std::move(m)); }
  // IOError with strerror(err) appended.
  static Status FromErrno(int err, std::string m);
  static Status InvalidArgument(std::string m) {
    return Status(Code::kInvalidArgument, std::move(m));
  }
  static Status BadSource(std::string m) { return Status(Code::kBadSource, std::move(m)); }
  static Status Signature(std::string m) { return Status(Code::kSignature, std::move(m)); }
  static Status Unsupported(std::string m) { return Status(Code::kUnsupported, std::move(m)); }
  static Status Exists(std::string m) { return Status(Code::kExists, std::move(m)); }
  static Status Permission(std::string m) { return Status(Code::kPermission, std::move(m)); }
  static Status NotDirectory(std::string m) { return Status(Code::kNotDirectory, std::move(m)); }
  static Status IsDirectory(std::string m) { return Status(Code::kIsDirectory, std::move(m)); }
  static Status Internal(std::string m) { return Status(Code::kInternal, std::move(m)); }

  Status(Code code, std::string msg) : code_(code), msg_(std::move(msg)) {}

  bool ok() const { return code_ == Code::kOk; }
  Code code() const { return code_; }
  const std::string& message() const { return msg_; }
  // "corruption: <message>"
  std::string ToString() const;
  // Returns a copy with "prefix: " prepended to the message.
  Status Prefixed(const std::string& prefix) const { return Status(code_, prefix + ": " + msg_); }

 private:
  Code code_ = Code::kOk;
  std::string msg_;
};

template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}  // NOLINT: implicit by design
  Result(Status st) : v_(std::move(st)) {    // NOLINT: implicit by design
    assert(!std::get<Status>(v_).ok());
  }

  bool ok() const { return std::holds_alternative<T>(v_); }
  const Status& status() const {
    static const Status kOkStatus;
    return ok() ? kOkStatus : std::get<Status>(v_);
  }
  T& value() & { return std::get<T>(v_); }
  const T& value() const& { return std::get<T>(v_); }
  T&& value() && { return std::get<T>(std::move(v_)); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }

 private:
  std::variant<T, Status> v_;
};

}  // namespace cryptex

#define CX_CONCAT_INNER(a, b) a##b
#define CX_CONCAT(a, b) CX_CONCAT_INNER(a, b)

// Returns from the enclosing function if `expr` (a Status) is not ok.
#define CX_RETURN_IF_ERROR(expr)       \
  do {                                 \
    ::cryptex::Status _cx_st = (expr); \
    if (!_cx_st.ok()) return _cx_st;   \
  } while (0)

// `lhs` = value of `rexpr` (a Result<T>), or returns its Status.
#define CX_ASSIGN_OR_RETURN(lhs, rexpr) \
  CX_ASSIGN_OR_RETURN_IMPL(CX_CONCAT(_cx_res_, __LINE__), lhs, rexpr)
#define CX_ASSIGN_OR_RETURN_IMPL(tmp, lhs, rexpr) \
  auto tmp = (rexpr);                             \
  if (!tmp.ok()) return tmp.status();             \
  lhs = std::move(tmp).value()
