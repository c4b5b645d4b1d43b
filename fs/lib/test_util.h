// Small helpers shared by the GoogleTest binaries (linked into every
// *_test target, never into the library). Failures are reported with
// ADD_FAILURE(), so callers need not check return values.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace cryptex::test {

// A fresh directory (mkdtemp under $TMPDIR or /tmp), removed recursively when
// the object goes out of scope. Set CRYPTEX_KEEP_TEMP=1 to keep it for
// debugging.
class TempDir final {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::string& path() const { return path_; }
  // path() + "/" + name.
  std::string Join(std::string_view name) const;

 private:
  std::string path_;
};

struct CommandResult {
  int exit_code = -1;  // exit status; 128 + signal if killed; -1 if not run
  std::string out;     // everything the command wrote to stdout
};

// Runs `cmd` with /bin/sh -c; stdout is captured, stderr passes through to
// the test log. Quote arguments with ShellQuote().
CommandResult RunCommand(const std::string& cmd);

// 'arg' with embedded single quotes escaped, safe to paste into a command.
std::string ShellQuote(std::string_view arg);

// Creates or truncates `path` with exactly `bytes`.
void WriteFile(const std::string& path, std::string_view bytes);
// The whole file; "" (and a test failure) if it cannot be read.
std::string ReadFile(const std::string& path);

// `n` pseudo-random bytes, a deterministic function of `seed`.
std::string RandomBytes(size_t n, uint64_t seed);

}  // namespace cryptex::test
