// The real-mount test harness: what the tests that run cryptexfs and the
// `cryptex` binary for real share (fs/cryptexfs/mount_test.cc and
// activation_test.cc, tests/cli/agent_cli_test.cc and feed_agent_test.cc).
// Test code only: compiled into those *_test targets with
// fs/lib/test_util.cc, never into a product. Failures are reported with
// ADD_FAILURE() where a function says so.
#pragma once

#include <gtest/gtest.h>
#include <sys/types.h>

#include <chrono>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "test_util.h"

namespace cryptex::test {

// True when $CI asks for a full run: set, non-empty, and not "false" or "0".
bool InCi();

// A test that cannot run here skips, except in CI, where a skipped test would
// let a broken environment pass the run: there it fails, same message.
#define SKIP_OR_FAIL_IN_CI(msg)                                   \
  do {                                                            \
    if (::cryptex::test::InCi()) {                                \
      FAIL() << (msg) << " (a skip is a failure when CI is set)"; \
    }                                                             \
    GTEST_SKIP() << (msg);                                        \
  } while (0)

// The fstype a cryptexfs mount shows in /proc/self/mountinfo.
inline constexpr char kCryptexfsType[] = "fuse.cryptexfs";

// fstype of the mount at `path` per /proc/self/mountinfo (the last, topmost
// mount wins), or "" when nothing is mounted there. `path` must need no
// \040 unescaping.
std::string MountedType(const std::string& path);

// Polls every 10 ms, for up to 5 s, until `mnt` carries a cryptexfs mount.
bool WaitForCryptexfs(const std::string& mnt);

// A cryptexfs started in the foreground (-f in `argv`; argv[0] is the path of
// the binary), stdout and stderr to `log`. Stop() detaches
// the mount and waits (bounded) for the driver's exit status; the destructor
// stops it too.
class Driver final {
 public:
  Driver(const std::vector<std::string>& argv, std::string mnt, std::string log);
  ~Driver() { (void)Stop(); }
  Driver(const Driver&) = delete;
  Driver& operator=(const Driver&) = delete;

  pid_t pid() const { return pid_; }
  // Everything the driver has written so far.
  std::string log() const;
  // True while running; records the exit status once it has exited.
  bool Alive();
  // Polls every 20 ms, for up to `timeout`, until the mount point carries a
  // cryptexfs mount. False (no failure added) when the driver exited first or
  // the time ran out.
  bool WaitForMount(std::chrono::milliseconds timeout = std::chrono::milliseconds(15000));
  // Detaches the mount (fusermount3 -u -z) and waits up to 30 s for the
  // driver to exit. Returns its exit code; -1 when it was killed by a signal,
  // or did not exit in time: then where each of its threads waits
  // (/proc/PID/task/*/{comm,wchan,stack}) is appended to the log, for the
  // failure message, and it is SIGKILLed.
  int Stop();

 private:
  std::string mnt_, log_;
  pid_t pid_ = -1;
  std::optional<int> status_;
};

// Mounts line `line` of store `store` at `mnt` (created if missing) with
// `cryptexfs LINE MNT -o store=STORE,trust=TRUST`, which daemonizes once
// mounted, and waits for the mount (WaitForCryptexfs). False, with a failure
// added, when /dev/fuse is not usable or cryptexfs fails; false without one
// when the mount does not appear in time (the caller asserts).
bool MountStoreLine(const std::string& line, const std::string& mnt, const std::string& store,
                    const std::string& trust);
// Detaches whatever is mounted at `mnt` (fusermount3 -u -z), quietly.
void UnmountLazily(const std::string& mnt);

// Every regular file under `dir` (recursively), path to bytes: what "changes
// nothing" compares.
std::map<std::string, std::string> FilesUnder(const std::string& dir);

// ---- fixture builders (record the first failure in *error) ----------------------------

// Why a suite that runs `cryptex` as root cannot run here, or "" when it can:
// "needs root (ROOT_WHY)" when not root, else "no cryptex CLI at PATH".
std::string NeedsRootAndCryptex(const std::string& root_why);

// Sets *error to "WHAT failed: OUT ERR" when `r` failed and *error is empty.
void MustSucceed(const CommandResult& r, const std::string& what, std::string* error);
// `cryptex keygen -o KEY`, the public half copied to TRUST_DIR/vendor.pub.
void MakeVendorKey(const std::string& key, const std::string& trust_dir, std::string* error);
// `cryptex build SRC -o OUT --key KEY --name NAME --version VERSION`.
void BuildImage(const std::string& src, const std::string& out, const std::string& key,
                const std::string& name, const std::string& version, std::string* error);
// Three trees (directories created here): v0 holds hello.txt ("hello
// base\n") and keep.txt ("unchanged\n"); v1 is a copy (cp -a) with hello.txt
// "hello p1\n", v2 a copy of v1 with "hello p2\n".
void MakeHelloTrees(const std::string& v0, const std::string& v1, const std::string& v2,
                    std::string* error);
// The build directory of this build's `cryptex` (CryptexBin() less /cli/...).
std::string BuildDir();
// `install -m 0644 SO DIR/` (a root-owned plugin, as the agent demands).
void InstallPlugin(const std::string& so, const std::string& dir, std::string* error);

// ---- a suite of real stores -------------------------------------------------------------

// Base of the suites in which each test gets a fresh store holding one base
// image, made with the real `cryptex` (tests/cli/agent_cli_test.cc,
// feed_agent_test.cc). The derived suite's SetUpTestSuite calls
// SetUpStoreSuite() then adds its own fixtures; its TearDownTestSuite calls
// TearDownStoreSuite(); its SetUp calls SetUpStoreTest() and returns when
// that skipped or failed.
class StoreSuite : public ::testing::Test {
 protected:
  // skip_ set (NeedsRootAndCryptex(root_why)) and nothing else done, or:
  // work_ (a 0755 TempDir on a tmpfs), trust_ (work_/trust) trusting a vendor
  // key (returned: its path), the trees V(0..2) (MakeHelloTrees) and base_,
  // V(0) built as line `line` version 1.0. Failures go to error_.
  static std::string SetUpStoreSuite(const std::string& root_why, const std::string& line);
  static void TearDownStoreSuite();
  // Skips (SKIP_OR_FAIL_IN_CI) or fails on the suite's skip_/error_; else
  // dir_ (work_/TEST_NAME, new), store_ (dir_/store, holding base_) and
  // conf_ (dir_/cryptex.conf, not written).
  void SetUpStoreTest();
  // Detaches every mount Mount() made.
  void TearDown() override;

  static void Must(const CommandResult& r, const std::string& what) {
    MustSucceed(r, what, &error_);
  }
  // work_/vN.
  static std::string V(int n);
  // Mounts the store's line at `mnt` (MountStoreLine); TearDown detaches it.
  bool Mount(const std::string& mnt);

  static inline std::string skip_, error_, trust_, base_, line_;
  static inline TempDir* work_ = nullptr;
  std::string dir_, store_, conf_;
  std::vector<std::string> mounts_;
};

}  // namespace cryptex::test
