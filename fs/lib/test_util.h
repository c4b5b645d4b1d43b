// Small helpers shared by the GoogleTest binaries (linked into every
// *_test target, never into the library). Failures are reported with
// ADD_FAILURE(), so callers need not check return values.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "keys.h"
#include "status.h"
#include "superblock.h"

namespace cryptex::test {

// A fresh directory (mkdtemp under $TMPDIR or /tmp), removed recursively when
// the object goes out of scope. Set CRYPTEX_KEEP_TEMP=1 to keep it for
// debugging.
class TempDir final {
 public:
  TempDir();
  // A fresh directory under `parent` (which must exist), e.g. TmpfsDir().
  explicit TempDir(const std::string& parent);
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
  std::string err;     // everything it wrote to stderr (RunCommandCapture only)
};

// Runs `cmd` with /bin/sh -c; stdout is captured, stderr passes through to
// the test log. Quote arguments with ShellQuote().
CommandResult RunCommand(const std::string& cmd);

// Like RunCommand, but stderr is captured into `err` instead of passed through.
CommandResult RunCommandCapture(const std::string& cmd);

// 'arg' with embedded single quotes escaped, safe to paste into a command
// (the library's own quoting, superblock.h).
using cryptex::ShellQuote;

// Creates or truncates `path` with exactly `bytes`.
void WriteFile(const std::string& path, std::string_view bytes);
// The whole file; "" (and a test failure) if it cannot be read.
std::string ReadFile(const std::string& path);

// `n` pseudo-random bytes, a deterministic function of `seed`.
std::string RandomBytes(size_t n, uint64_t seed);

// Size of `path` in bytes (lstat); 0 and a test failure if it does not exist.
uint64_t FileSize(const std::string& path);
// Corrupts one byte in place: the byte at `offset` is XORed with `mask`.
void FlipByte(const std::string& path, uint64_t offset, uint8_t mask = 0xff);
// The superblock of the image at `path`, decoded without a signature check
// (where tamper tests aim: SuperblockInfo::superblock_offset(), regions);
// a default SuperblockInfo and a test failure if it does not decode.
SuperblockInfo ImageSuperblock(const std::string& path);
// Names in `dir` (not "." or ".."), sorted bytewise.
std::vector<std::string> ListDirNames(const std::string& dir);

// A directory on a tmpfs ("/dev/shm"): supports every xattr namespace with
// values up to 64 KiB, device nodes and sockets, and reads holes cheaply.
// Adds a test failure (and returns $TMPDIR or /tmp) if there is none.
std::string TmpfsDir();

// Extended attributes of `path` (not following symlinks), sorted by name.
using XattrList = std::vector<std::pair<std::string, std::string>>;
XattrList GetXattrs(const std::string& path);

// Fills the existing, empty directory `dir` with every kind of entry the image
// format must round-trip: regular files of many sizes (empty, around the
// default 128 KiB chunk, multi-chunk, compressible, duplicated, sparse),
// empty and nested directories, relative/absolute/dangling/4095-byte
// symlinks, hard links (3 names across directories; a hard-linked symlink),
// a fifo, a character and a block device, a unix socket, setuid/setgid/sticky
// and 0000 modes, uid/gid 1234:5678, nanosecond (and one pre-1970) mtimes on
// every entry including directories and symlinks, user/trusted/security
// xattrs (security.capability, a 60 KB value, an empty value), names with
// arbitrary bytes (space, newline, 0xff, UTF-8, 255 bytes), uid/gid above
// 16 bits and a symlink target with a newline and 0xff. `dir` itself gets an
// xattr, mode 0751, owner 4321:8765 and a fixed mtime.
// REQUIRES: root, and `dir` on a tmpfs (see TmpfsDir()).
void MakeEveryKindTree(const std::string& dir);

// Compares two trees entry by entry without following symlinks: the same
// names, and for each entry (the roots included) st_mode, uid, gid, mtime
// (ns), rdev of devices, size of non-directories, symlink target, xattrs,
// st_nlink of directories, the hard-link structure (which names share an
// inode, hence the link count within the tree) and, with `content`, the bytes
// of regular files. Returns the differences (empty when equal), at most 50.
std::vector<std::string> CompareTrees(const std::string& a, const std::string& b,
                                      bool content = true);

// Creates `depth` nested directories named `comp` under `root` (working
// through directory descriptors, so the chain may exceed PATH_MAX) and a file
// "leaf" holding "deep" in the innermost. Returns an O_DIRECTORY descriptor of
// the innermost directory (the caller closes it), or -1 on failure.
int MakeDeepChain(const std::string& root, int depth, const std::string& comp);

// haystack contains needle.
bool Contains(const std::string& haystack, const std::string& needle);

// Seals directory `src` into image `out` (chunks of 2^chunk_log2 bytes,
// manifest name `name`, the compact layout if `compact`) with a fresh key
// saved as out + ".key"/".key.pub", and returns a trust store holding that
// key, to open `out` with.
Result<std::unique_ptr<TrustStore>> SealForTest(const std::string& src, const std::string& out,
                                                uint32_t chunk_log2 = 17,
                                                const std::string& name = "test",
                                                bool compact = false);

// The `cryptex` binary of this build: $CRYPTEX_BUILD_DIR/cli/cryptex (set by
// ctest), else the build directory compiled in as CRYPTEX_DEFAULT_BUILD_DIR.
std::string CryptexBin();
// Runs `cryptex ARGS` (ARGS already shell-quoted), capturing stdout and stderr.
CommandResult RunCryptex(const std::string& args);

}  // namespace cryptex::test
