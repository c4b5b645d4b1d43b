// The plugin host against real plugins in real child processes: the shipped
// auto plugin, the example, and fixtures (testdata/*.c) that each fail in
// one way. Every test also checks that the test process is left with the
// descriptors it had and no child (zombie or running).
#include "plugin_host.h"

#include <dirent.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <set>
#include <thread>

#include "test_util.h"

namespace cryptex::policy {
namespace {

using test::Contains;
using test::TempDir;

std::string BuildDir() {
  const char* env = std::getenv("CRYPTEX_BUILD_DIR");
  return env != nullptr && *env != '\0' ? env : CRYPTEX_DEFAULT_BUILD_DIR;
}
// The fixtures (built into BUILD/policy/testdata) and the shipped auto.so,
// copied once per test process into a fresh 0755 directory as root-owned
// 0644 files: the loader's checks then pass whatever the build tree's owner
// and umask were.
const std::string& PluginCopies() {
  static TempDir dir;
  static const bool copied = [] {
    namespace fs = std::filesystem;
    EXPECT_EQ(chmod(dir.path().c_str(), 0755), 0);
    std::vector<fs::path> files = {fs::path(BuildDir()) / "plugins/lib/auto.so"};
    for (const auto& e : fs::directory_iterator(BuildDir() + "/policy/testdata")) {
      if (e.path().extension() == ".so") files.push_back(e.path());
    }
    for (const auto& f : files) {
      const std::string to = dir.Join(f.filename().string());
      fs::copy_file(f, to);
      EXPECT_EQ(chown(to.c_str(), 0, 0), 0) << to;
      EXPECT_EQ(chmod(to.c_str(), 0644), 0) << to;
    }
    return true;
  }();
  (void)copied;
  return dir.path();
}
std::string FixtureDir() { return PluginCopies(); }
std::string ShippedDir() { return PluginCopies(); }

std::set<std::string> OpenFds() {
  std::set<std::string> fds;
  DIR* d = opendir("/proc/self/fd");
  if (d == nullptr) return fds;
  const std::string self = std::to_string(dirfd(d));
  while (dirent* e = readdir(d)) {
    const std::string n = e->d_name;
    if (n != "." && n != ".." && n != self) fds.insert(n);
  }
  closedir(d);
  return fds;
}

// Every test: no descriptor leaked, no child left (running or zombie).
class PluginHostTest : public ::testing::Test {
 protected:
  void SetUp() override { fds_before_ = OpenFds(); }
  void TearDown() override {
    EXPECT_EQ(OpenFds(), fds_before_) << "a descriptor leaked";
    errno = 0;
    EXPECT_EQ(waitpid(-1, nullptr, WNOHANG), -1) << "a child process was left behind";
    EXPECT_EQ(errno, ECHILD);
  }

  static HostLimits Limits(int timeout_ms = 5000) {
    HostLimits l;
    l.timeout = std::chrono::milliseconds(timeout_ms);
    return l;
  }

  // Loads a fixture (must succeed) and asks it about a default patch.
  static Vote DecideFixture(const std::string& name, const Options& options = {},
                            int timeout_ms = 5000) {
    auto p = Plugin::Load(FixtureDir(), name, options, Limits(timeout_ms));
    if (!p.ok()) {
      ADD_FAILURE() << p.status().ToString();
      return Vote{};
    }
    return p->Decide(PatchFacts{}, DeviceFacts{});
  }

  static void ExpectFailedVote(const Vote& v, const std::string& plugin_path,
                               const std::string& cause) {
    EXPECT_TRUE(v.failed) << v.reason;
    EXPECT_EQ(v.verdict, Verdict::kDefer);
    EXPECT_EQ(v.until, 0);
    EXPECT_TRUE(Contains(v.reason, plugin_path)) << v.reason;
    EXPECT_TRUE(Contains(v.reason, cause)) << v.reason << " (expected: " << cause << ")";
  }

 private:
  std::set<std::string> fds_before_;
};

TEST_F(PluginHostTest, AutoInstallsAtOnce) {
  auto p = Plugin::Load(ShippedDir(), "auto", {});
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  EXPECT_EQ(p->name(), "auto");
  EXPECT_EQ(p->path(), ShippedDir() + "/auto.so");
  PatchFacts patch;
  patch.id = "p1";
  patch.severity = "low";
  const Vote v = p->Decide(patch, DeviceFacts{});
  EXPECT_FALSE(v.failed) << v.reason;
  EXPECT_EQ(v.plugin, "auto");
  EXPECT_EQ(v.verdict, Verdict::kInstall);
  EXPECT_EQ(v.reason, "install at once");
}

TEST_F(PluginHostTest, AutoRefusesAnyOption) {
  auto p = Plugin::Load(ShippedDir(), "auto", {{"colour", "red"}});
  ASSERT_FALSE(p.ok());
  EXPECT_EQ(p.status().code(), Code::kInvalidArgument);
  EXPECT_TRUE(Contains(p.status().message(), "colour")) << p.status().ToString();
  EXPECT_TRUE(Contains(p.status().message(), ShippedDir() + "/auto.so"));
}

TEST_F(PluginHostTest, CheckOptionsRefusalIsAConfigErrorNamingTheKey) {
  auto p = Plugin::Load(FixtureDir(), "fixed", {{"verdict", "install"}, {"colour", "red"}});
  ASSERT_FALSE(p.ok());
  EXPECT_EQ(p.status().code(), Code::kInvalidArgument);
  EXPECT_TRUE(Contains(p.status().message(), "unknown option colour")) << p.status().ToString();
  EXPECT_TRUE(Contains(p.status().message(), FixtureDir() + "/fixed.so"));
  // A valid set of options loads.
  EXPECT_TRUE(Plugin::Load(FixtureDir(), "fixed", {{"verdict", "reject"}}).ok());
}

// check_options is called only if the table's struct_size covers it.
TEST_F(PluginHostTest, MembersBeyondStructSizeAreNotRead) {
  auto p = Plugin::Load(FixtureDir(), "old_table", {{"any", "thing"}});
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  EXPECT_EQ(p->Decide(PatchFacts{}, DeviceFacts{}).verdict, Verdict::kInstall);
}

TEST_F(PluginHostTest, NamesMustBeBare) {
  for (const std::string& name :
       std::vector<std::string>{"", ".", "..", "a/b", "../testdata/fixed", "/fixed",
                                std::string("fix\0ed", 6), "fix\ned"}) {
    auto p = Plugin::Load(FixtureDir(), name, {});
    ASSERT_FALSE(p.ok()) << "name '" << name << "' was accepted";
    EXPECT_NE(p.status().code(), Code::kInvalidArgument);
    EXPECT_TRUE(Contains(p.status().message(), "bare file name")) << p.status().ToString();
  }
}

TEST_F(PluginHostTest, MissingPluginOrDirectoryIsNotFound) {
  auto p = Plugin::Load(FixtureDir(), "no_such_plugin", {});
  ASSERT_FALSE(p.ok());
  EXPECT_EQ(p.status().code(), Code::kNotFound);
  EXPECT_TRUE(Contains(p.status().message(), FixtureDir() + "/no_such_plugin.so"));
  auto d = Plugin::Load(FixtureDir() + "/nope", "fixed", {});
  ASSERT_FALSE(d.ok());
  EXPECT_EQ(d.status().code(), Code::kNotFound);
  EXPECT_TRUE(Contains(d.status().message(), FixtureDir() + "/nope"));
}

// Plugins that are not usable are refused at load, with the file and the
// reason, never as a config error.
TEST_F(PluginHostTest, BrokenPluginsAreRefusedAtLoad) {
  const struct {
    const char* name;
    const char* cause;
  } cases[] = {
      {"no_entry", "no symbol cryptex_policy_plugin"}, {"null_table", "returned NULL"},
      {"wrong_abi", "ABI major 2, the host speaks 1"}, {"small_struct", "struct_size"},
      {"null_decide", "no decide function"},           {"bad_name", "not printable UTF-8"},
      {"ctor_crash", "killed by signal 11"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    auto p = Plugin::Load(FixtureDir(), c.name, {});
    ASSERT_FALSE(p.ok());
    EXPECT_NE(p.status().code(), Code::kInvalidArgument);
    EXPECT_TRUE(Contains(p.status().message(), FixtureDir() + "/" + c.name + ".so"))
        << p.status().ToString();
    EXPECT_TRUE(Contains(p.status().message(), c.cause)) << p.status().ToString();
  }
}

TEST_F(PluginHostTest, NotAnElfFileIsRefused) {
  TempDir dir;
  test::WriteFile(dir.Join("text.so"), "not a shared object\n");
  chmod(dir.Join("text.so").c_str(), 0644);
  auto p = Plugin::Load(dir.path(), "text", {});
  ASSERT_FALSE(p.ok());
  EXPECT_EQ(p.status().code(), Code::kUnsupported);
  EXPECT_TRUE(Contains(p.status().message(), dir.Join("text.so") + ": cannot load it"))
      << p.status().ToString();
}

TEST_F(PluginHostTest, CrashesInDecideAreFailedDeferrals) {
  const std::string dir = FixtureDir();
  ExpectFailedVote(DecideFixture("segv"), dir + "/segv.so", "killed by signal 11");
  ExpectFailedVote(DecideFixture("abort"), dir + "/abort.so", "killed by signal 6");
  ExpectFailedVote(DecideFixture("exit_early"), dir + "/exit_early.so", "malformed answer");
}

TEST_F(PluginHostTest, HangsTimeOutAndTheChildIsKilled) {
  for (const char* name : {"loop", "close_loop"}) {
    SCOPED_TRACE(name);
    const auto t0 = std::chrono::steady_clock::now();
    const Vote v = DecideFixture(name, {}, 300);
    const auto took = std::chrono::steady_clock::now() - t0;
    ExpectFailedVote(v, FixtureDir() + "/" + name + ".so", "timed out after 300 ms");
    EXPECT_GE(took, std::chrono::milliseconds(300));
    EXPECT_LT(took, std::chrono::milliseconds(3000));
  }
}

TEST_F(PluginHostTest, LoadProbeHasTheTimeLimitToo) {
  // loop's decide is never called at load, so use a constructor-free but
  // slow path: a probe with a 0 ms limit cannot finish.
  auto p = Plugin::Load(FixtureDir(), "fixed", {}, Limits(0));
  ASSERT_FALSE(p.ok());
  EXPECT_TRUE(Contains(p.status().message(), "timed out")) << p.status().ToString();
}

// A grandchild that keeps the answer pipe open is killed with the child's
// process group when the call times out.
TEST_F(PluginHostTest, WhatAPluginForksDiesWithIt) {
  TempDir tmp;
  const std::string pidfile = tmp.Join("pid");
  const Vote v = DecideFixture("daemon", {{"pidfile", pidfile}}, 300);
  ExpectFailedVote(v, FixtureDir() + "/daemon.so", "timed out");
  const std::string text = test::ReadFile(pidfile);
  ASSERT_FALSE(text.empty());
  const pid_t pid = std::atoi(text.c_str());
  ASSERT_GT(pid, 1);
  // Gone, or a zombie waiting for init to reap it.
  bool dead = false;
  for (int i = 0; i < 200 && !dead; ++i) {
    std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
    std::string line;
    if (!std::getline(stat, line)) {
      dead = true;
      break;
    }
    const size_t paren = line.rfind(')');
    dead = paren != std::string::npos && paren + 2 < line.size() && line[paren + 2] == 'Z';
    if (!dead) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_TRUE(dead) << "the plugin's grandchild " << pid << " is still running";
  if (!dead) kill(pid, SIGKILL);
}

TEST_F(PluginHostTest, BadAnswersAreFailedDeferrals) {
  const std::string path = FixtureDir() + "/fixed.so";
  const std::string cap = std::to_string(HostLimits{}.reason_cap);
  const struct {
    Options options;
    std::string cause;
  } cases[] = {
      {{{"rc", "3"}}, "decide returned 3"},
      {{{"rc", "-1"}}, "decide returned -1"},
      {{{"verdict", "4"}}, "verdict 4 (out of range)"},
      {{{"verdict", "-2"}}, "verdict -2 (out of range)"},
      {{{"verdict", "-1"}}, "set no verdict"},
      {{{"reason_len", std::to_string(HostLimits{}.reason_cap + 1)}}, "(the cap is " + cap},
      {{{"reason_len", "18446744073709551615"}}, "(the cap is " + cap},
      {{{"verdict", "defer"}, {"until", "-5"}}, "deferred until -5"},
      {{{"reason_hex", "6f6bff"}}, "not valid UTF-8"},    // invalid byte
      {{{"reason_hex", "c0af"}}, "not valid UTF-8"},      // overlong '/'
      {{{"reason_hex", "e08080"}}, "not valid UTF-8"},    // overlong NUL
      {{{"reason_hex", "eda080"}}, "not valid UTF-8"},    // surrogate U+D800
      {{{"reason_hex", "f4908080"}}, "not valid UTF-8"},  // > U+10FFFF
      {{{"reason_hex", "e282"}}, "not valid UTF-8"},      // truncated
      {{{"reason_hex", "80"}}, "not valid UTF-8"},        // lone continuation
      {{{"reason_hex", "6f6b006f6b"}}, "contains a NUL byte"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.options[0].first + "=" + c.options[0].second);
    ExpectFailedVote(DecideFixture("fixed", c.options), path, c.cause);
  }
}

TEST_F(PluginHostTest, ValidAnswersPassUnchanged) {
  // Multi-byte UTF-8 (2, 3 and 4 bytes), tab and newline are kept as given.
  Vote v = DecideFixture("fixed", {{"reason_hex", "c3a9e282acf09f98800a09"}});
  EXPECT_FALSE(v.failed) << v.reason;
  EXPECT_EQ(v.reason, "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\n\t");
  v = DecideFixture("fixed", {{"verdict", "defer"}, {"until", "1700000000"}, {"reason", "w"}});
  EXPECT_FALSE(v.failed) << v.reason;
  EXPECT_EQ(v.verdict, Verdict::kDefer);
  EXPECT_EQ(v.until, 1700000000);
  EXPECT_EQ(v.reason, "w");
  // `until` means nothing but for a deferral.
  v = DecideFixture("fixed", {{"verdict", "reject"}, {"until", "-5"}});
  EXPECT_FALSE(v.failed) << v.reason;
  EXPECT_EQ(v.verdict, Verdict::kReject);
  EXPECT_EQ(v.until, 0);
  // A reason exactly at the cap is fine.
  v = DecideFixture("fixed", {{"reason", std::string(HostLimits{}.reason_cap, 'x')}});
  EXPECT_FALSE(v.failed) << v.reason.substr(0, 100);
  EXPECT_EQ(v.reason.size(), HostLimits{}.reason_cap);
}

TEST_F(PluginHostTest, DecisionTimeIsTheInputsNow) {
  auto p = Plugin::Load(FixtureDir(), "fixed", {{"echo", "now"}});
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  DeviceFacts device;
  device.now = 1234567890;
  EXPECT_EQ(p->Decide(PatchFacts{}, device).reason, "now=1234567890");
  device.now = -5;
  EXPECT_EQ(p->Decide(PatchFacts{}, device).reason, "now=-5");
}

// The child sees stdin at EOF and only 0, 1, 2, the answer pipe and the
// plugin file: not the caller's other descriptors.
TEST_F(PluginHostTest, ChildInheritsNoDescriptorOfTheCaller) {
  const int extra = open("/dev/null", O_RDONLY);  // no O_CLOEXEC: would be inherited by exec
  ASSERT_GE(extra, 0);
  Vote v = DecideFixture("fixed", {{"echo", "fds"}});
  close(extra);
  EXPECT_FALSE(v.failed) << v.reason;
  EXPECT_EQ(v.reason, "fds=0,1,2,3,4,");
  // Even when the caller's stdin has data.
  int pipe_fds[2];
  ASSERT_EQ(pipe(pipe_fds), 0);
  ASSERT_EQ(write(pipe_fds[1], "x", 1), 1);
  const int saved_stdin = dup(0);
  ASSERT_GE(saved_stdin, 0);
  ASSERT_EQ(dup2(pipe_fds[0], 0), 0);
  v = DecideFixture("fixed", {{"echo", "stdin"}});
  dup2(saved_stdin, 0);
  close(saved_stdin);
  close(pipe_fds[0]);
  close(pipe_fds[1]);
  EXPECT_EQ(v.reason, "stdin=eof");
}

// Set by ChildDoesNotRunTheCallersAtexitHandlers.
pid_t g_main_pid = 0;
char g_atexit_marker[512];

void AtexitMarker() {
  if (getpid() == g_main_pid || g_atexit_marker[0] == '\0') return;
  const int fd = open(g_atexit_marker, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
  if (fd >= 0) close(fd);
}

// The child ends with _exit(): the caller's atexit handlers do not run in it
// (nor is the caller's buffered stdio flushed by it).
TEST_F(PluginHostTest, ChildDoesNotRunTheCallersAtexitHandlers) {
  TempDir tmp;
  const std::string marker = tmp.Join("atexit-ran");
  ASSERT_LT(marker.size(), sizeof(g_atexit_marker));
  std::snprintf(g_atexit_marker, sizeof(g_atexit_marker), "%s", marker.c_str());
  g_main_pid = getpid();
  ASSERT_EQ(std::atexit(AtexitMarker), 0);
  const Vote v = DecideFixture("fixed", {});
  EXPECT_FALSE(v.failed) << v.reason;
  EXPECT_FALSE(std::filesystem::exists(marker)) << "an atexit handler ran in the child";
  g_atexit_marker[0] = '\0';
}

TEST_F(PluginHostTest, ChildAddressSpaceIsLimited) {
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
  GTEST_SKIP() << "RLIMIT_AS is not set under sanitizers";
#endif
  const Vote big = DecideFixture("fixed", {{"alloc_mib", "2048"}});
  ExpectFailedVote(big, FixtureDir() + "/fixed.so", "decide returned 7");
  const Vote small = DecideFixture("fixed", {{"alloc_mib", "16"}});
  EXPECT_FALSE(small.failed) << small.reason;
}

void OnAlarm(int) {}

// Signals arriving at the caller during a call (EINTR on poll, read and
// waitpid) change nothing.
TEST_F(PluginHostTest, RobustToSignalsInTheCaller) {
  // The fixture directory is made (files copied) before the signals start:
  // what is under test is the host's calls, not the test's own copying.
  ASSERT_FALSE(FixtureDir().empty());
  struct sigaction sa {};
  sa.sa_handler = OnAlarm;  // no SA_RESTART
  struct sigaction old {};
  ASSERT_EQ(sigaction(SIGALRM, &sa, &old), 0);
  itimerval every_ms{{0, 1000}, {0, 1000}};
  ASSERT_EQ(setitimer(ITIMER_REAL, &every_ms, nullptr), 0);
  const Vote ok = DecideFixture("fixed", {{"reason", "fine"}});
  const Vote hang = DecideFixture("loop", {}, 300);
  itimerval off{};
  setitimer(ITIMER_REAL, &off, nullptr);
  sigaction(SIGALRM, &old, nullptr);
  EXPECT_FALSE(ok.failed) << ok.reason;
  EXPECT_EQ(ok.reason, "fine");
  ExpectFailedVote(hang, FixtureDir() + "/loop.so", "timed out after 300 ms");
}

int64_t Utc(const char* iso) {
  tm t{};
  EXPECT_NE(strptime(iso, "%Y-%m-%dT%H:%M:%S", &t), nullptr) << iso;
  return static_cast<int64_t>(timegm(&t));
}

// examples/policy-plugin builds with `cc -shared -fPIC` against a directory
// holding nothing but the public header, loads, and decides as documented.
TEST_F(PluginHostTest, ExamplePluginBuildsAgainstTheHeaderAlone) {
  TempDir tmp;
  const std::string inc = tmp.Join("include");
  const std::string plugins = tmp.Join("plugins");
  std::filesystem::create_directories(inc + "/cryptex");
  std::filesystem::create_directories(plugins);
  ASSERT_EQ(chmod(tmp.path().c_str(), 0755), 0);
  ASSERT_EQ(chmod(plugins.c_str(), 0755), 0);
  std::filesystem::copy_file(
      std::string(CRYPTEX_SOURCE_DIR) + "/policy/include/cryptex/policy_plugin.h",
      inc + "/cryptex/policy_plugin.h");
  const std::string src = std::string(CRYPTEX_SOURCE_DIR) + "/examples/policy-plugin/weekend.c";
  const auto cc = test::RunCommandCapture(
      "cc -std=c99 -shared -fPIC -O2 -Wall -Wextra -Werror -I " + test::ShellQuote(inc) + " -o " +
      test::ShellQuote(plugins + "/weekend.so") + " " + test::ShellQuote(src));
  ASSERT_EQ(cc.exit_code, 0) << cc.err;
  ASSERT_EQ(chmod((plugins + "/weekend.so").c_str(), 0644), 0);

  auto p = Plugin::Load(plugins, "weekend", {});
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  PatchFacts low;
  low.severity = "low";
  PatchFacts critical;
  critical.severity = "critical";
  DeviceFacts device;
  const int64_t monday = Utc("2026-11-30T00:00:00");

  device.now = Utc("2026-11-25T12:00:00");  // a Wednesday
  Vote v = p->Decide(low, device);
  EXPECT_FALSE(v.failed) << v.reason;
  EXPECT_EQ(v.verdict, Verdict::kInstall);
  for (const char* weekend :
       {"2026-11-28T00:00:00", "2026-11-28T10:00:00", "2026-11-29T23:59:59"}) {
    SCOPED_TRACE(weekend);
    device.now = Utc(weekend);
    v = p->Decide(low, device);
    EXPECT_FALSE(v.failed) << v.reason;
    EXPECT_EQ(v.verdict, Verdict::kDefer);
    EXPECT_EQ(v.until, monday);
    EXPECT_EQ(v.reason, "weekend freeze until " + std::to_string(monday) + " (Monday 00:00 UTC)");
    EXPECT_EQ(p->Decide(critical, device).verdict, Verdict::kInstall);
  }
  device.now = monday;
  EXPECT_EQ(p->Decide(low, device).verdict, Verdict::kInstall);

  // allow = high lets high patches through on a weekend; bad options are
  // refused as a config error naming the key.
  auto high = Plugin::Load(plugins, "weekend", {{"allow", "high"}});
  ASSERT_TRUE(high.ok()) << high.status().ToString();
  PatchFacts h;
  h.severity = "high";
  device.now = Utc("2026-11-28T10:00:00");
  EXPECT_EQ(high->Decide(h, device).verdict, Verdict::kInstall);
  EXPECT_EQ(high->Decide(low, device).verdict, Verdict::kDefer);
  auto bad = Plugin::Load(plugins, "weekend", {{"alow", "high"}});
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), Code::kInvalidArgument);
  EXPECT_TRUE(Contains(bad.status().message(), "unknown option \"alow\""))
      << bad.status().ToString();
  bad = Plugin::Load(plugins, "weekend", {{"allow", "urgent"}});
  ASSERT_FALSE(bad.ok());
  EXPECT_TRUE(Contains(bad.status().message(), "allow: \"urgent\"")) << bad.status().ToString();
}

// Calls from several threads at once (each forks its own children) all get
// their own answers.
TEST_F(PluginHostTest, ConcurrentCallersGetTheirOwnAnswers) {
  auto p = Plugin::Load(FixtureDir(), "fixed", {{"echo", "now"}});
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  const Plugin& plugin = *p;
  std::vector<std::thread> threads;
  std::vector<std::string> errors(4);
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&plugin, &errors, t] {
      for (int i = 0; i < 10; ++i) {
        DeviceFacts device;
        device.now = t * 1000 + i;
        const Vote v = plugin.Decide(PatchFacts{}, device);
        if (v.failed || v.reason != "now=" + std::to_string(device.now)) {
          errors[t] = v.reason;
          return;
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  for (const auto& e : errors) EXPECT_EQ(e, "");
}

// ---- The loader's file checks, on copies in a directory the test controls.

class LoaderTest : public PluginHostTest {
 protected:
  void SetUp() override {
    PluginHostTest::SetUp();
    ASSERT_EQ(chmod(dir_.path().c_str(), 0755), 0);
    std::filesystem::copy_file(FixtureDir() + "/fixed.so", dir_.Join("p.so"));
    ASSERT_EQ(chmod(dir_.Join("p.so").c_str(), 0644), 0);
  }
  Result<Plugin> Load() { return Plugin::Load(dir_.path(), "p", {}); }
  void ExpectRefused(const std::string& cause, Code code = Code::kPermission) {
    auto p = Load();
    ASSERT_FALSE(p.ok()) << cause;
    EXPECT_EQ(p.status().code(), code) << p.status().ToString();
    EXPECT_TRUE(Contains(p.status().message(), cause)) << p.status().ToString();
  }
  TempDir dir_;
};

TEST_F(LoaderTest, ACleanCopyLoads) {
  auto p = Load();
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  EXPECT_EQ(p->Decide(PatchFacts{}, DeviceFacts{}).verdict, Verdict::kInstall);
}

TEST_F(LoaderTest, WritableFileIsRefused) {
  for (mode_t mode : {0646, 0664, 0666}) {
    ASSERT_EQ(chmod(dir_.Join("p.so").c_str(), mode), 0);
    ExpectRefused(dir_.Join("p.so") + ": the plugin file is writable by group or others");
  }
}

TEST_F(LoaderTest, WritableDirectoryIsRefused) {
  for (mode_t mode : {0775, 0757, 01777}) {
    ASSERT_EQ(chmod(dir_.path().c_str(), mode), 0);
    ExpectRefused(dir_.path() + ": the plugin directory is writable by group or others");
  }
}

TEST_F(LoaderTest, FileOwnedByAnotherUserIsRefused) {
  ASSERT_EQ(chown(dir_.Join("p.so").c_str(), 65534, 65534), 0);
  ExpectRefused(dir_.Join("p.so") + ": the plugin file is owned by uid 65534, not root");
}

TEST_F(LoaderTest, DirectoryOwnedByAnotherUserIsRefused) {
  ASSERT_EQ(chown(dir_.path().c_str(), 65534, 0), 0);
  ExpectRefused(dir_.path() + ": the plugin directory is owned by uid 65534");
}

TEST_F(LoaderTest, SymlinkedPluginIsRefused) {
  ASSERT_EQ(rename(dir_.Join("p.so").c_str(), dir_.Join("real.so").c_str()), 0);
  ASSERT_EQ(symlink("real.so", dir_.Join("p.so").c_str()), 0);
  ExpectRefused(dir_.Join("p.so") + ": is a symlink");
  // Even when it points to a plugin in the directory that loads.
  EXPECT_TRUE(Plugin::Load(dir_.path(), "real", {}).ok());
}

TEST_F(LoaderTest, SymlinkedDirectoryIsRefused) {
  ASSERT_EQ(symlink(dir_.path().c_str(), dir_.Join("link").c_str()), 0);
  auto p = Plugin::Load(dir_.Join("link"), "p", {});
  ASSERT_FALSE(p.ok());
  EXPECT_EQ(p.status().code(), Code::kNotDirectory);
  EXPECT_TRUE(Contains(p.status().message(), dir_.Join("link"))) << p.status().ToString();
}

TEST_F(LoaderTest, NonRegularFilesAreRefused) {
  ASSERT_EQ(unlink(dir_.Join("p.so").c_str()), 0);
  ASSERT_EQ(mkdir(dir_.Join("p.so").c_str(), 0755), 0);
  ExpectRefused(dir_.Join("p.so") + ": not a regular file");
  ASSERT_EQ(rmdir(dir_.Join("p.so").c_str()), 0);
  ASSERT_EQ(mkfifo(dir_.Join("p.so").c_str(), 0644), 0);  // must not block the open
  ExpectRefused(dir_.Join("p.so") + ": not a regular file");
}

// The handle keeps the checked file: replacing the file on disk afterwards
// changes nothing about what the loaded plugin runs.
TEST_F(LoaderTest, DecideRunsTheFileThatWasChecked) {
  auto p = Load();
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  ASSERT_EQ(unlink(dir_.Join("p.so").c_str()), 0);
  std::filesystem::copy_file(FixtureDir() + "/segv.so", dir_.Join("p.so"));
  const Vote v = p->Decide(PatchFacts{}, DeviceFacts{});
  EXPECT_FALSE(v.failed) << v.reason;
  EXPECT_EQ(v.verdict, Verdict::kInstall);
}

// ---- The chain.

class ChainTest : public PluginHostTest {
 protected:
  static ChainMember Fixed(const std::string& verdict, int64_t until = 0) {
    Options o = {{"verdict", verdict}, {"until", std::to_string(until)}};
    ChainMember m;
    m.name = "fixed";
    m.options = o;
    auto p = Plugin::Load(FixtureDir(), "fixed", o);
    EXPECT_TRUE(p.ok()) << p.status().ToString();
    if (p.ok()) m.plugin = std::make_shared<const Plugin>(std::move(p).value());
    return m;
  }
  static ChainDecision Run(const std::vector<ChainMember>& chain) {
    return DecideChain(chain, PatchFacts{}, DeviceFacts{});
  }
};

TEST_F(ChainTest, EmptyChainDefers) {
  const ChainDecision d = Run({});
  EXPECT_EQ(d.verdict, Verdict::kDefer);
  EXPECT_EQ(d.until, 0);
  EXPECT_TRUE(d.votes.empty());
  EXPECT_EQ(d.reason, "no policy plugin is configured");
}

TEST_F(ChainTest, MostConservativeWins) {
  const struct {
    std::vector<std::string> votes;
    Verdict want;
  } table[] = {
      {{"install"}, Verdict::kInstall},
      {{"install", "install"}, Verdict::kInstall},
      {{"install", "defer"}, Verdict::kDefer},
      {{"defer", "install"}, Verdict::kDefer},
      {{"install", "reject"}, Verdict::kReject},
      {{"reject", "defer"}, Verdict::kReject},
      {{"defer", "revert", "reject"}, Verdict::kRevert},
      {{"revert", "install"}, Verdict::kRevert},
      {{"install", "defer", "reject", "revert"}, Verdict::kRevert},
  };
  for (const auto& row : table) {
    std::vector<ChainMember> chain;
    std::string trace;
    for (const auto& v : row.votes) {
      chain.push_back(Fixed(v));
      trace += v + " ";
    }
    SCOPED_TRACE(trace);
    const ChainDecision d = Run(chain);
    EXPECT_EQ(d.verdict, row.want);
    ASSERT_EQ(d.votes.size(), row.votes.size());
    for (size_t i = 0; i < row.votes.size(); ++i) {
      EXPECT_EQ(VerdictName(d.votes[i].verdict), row.votes[i]);
    }
    // The reason holds exactly the winning votes, in chain order.
    std::string want_reason;
    for (const auto& v : row.votes) {
      if (v != VerdictName(row.want)) continue;
      if (!want_reason.empty()) want_reason += "; ";
      want_reason += "fixed: " + v;
    }
    EXPECT_EQ(d.reason, want_reason);
  }
}

TEST_F(ChainTest, DeferUntilIsTheLatest) {
  ChainDecision d =
      Run({Fixed("defer", 100), Fixed("install"), Fixed("defer", 500), Fixed("defer", 0)});
  EXPECT_EQ(d.verdict, Verdict::kDefer);
  EXPECT_EQ(d.until, 500);
  EXPECT_EQ(d.reason, "fixed: defer; fixed: defer; fixed: defer");
  // A reject wins over the deferral, and `until` is then 0.
  d = Run({Fixed("defer", 100), Fixed("reject", 7)});
  EXPECT_EQ(d.verdict, Verdict::kReject);
  EXPECT_EQ(d.until, 0);
}

TEST_F(ChainTest, FailuresDefer) {
  auto segv = Plugin::Load(FixtureDir(), "segv", {});
  ASSERT_TRUE(segv.ok());
  ChainMember crash;
  crash.name = "segv";
  crash.plugin = std::make_shared<const Plugin>(std::move(segv).value());
  ChainMember missing;
  missing.name = "ghost";
  missing.load_error = Plugin::Load(FixtureDir(), "ghost", {}).status();

  const ChainDecision d = Run({Fixed("install"), crash, missing});
  EXPECT_EQ(d.verdict, Verdict::kDefer);
  EXPECT_EQ(d.until, 0);
  ASSERT_EQ(d.votes.size(), 3u);
  EXPECT_FALSE(d.votes[0].failed);
  EXPECT_TRUE(d.votes[1].failed);
  EXPECT_TRUE(d.votes[2].failed);
  EXPECT_EQ(d.votes[2].plugin, "ghost");
  EXPECT_TRUE(Contains(d.votes[2].reason, "not loaded: " + FixtureDir() + "/ghost.so"))
      << d.votes[2].reason;
  EXPECT_TRUE(Contains(d.reason, "segv: " + FixtureDir() + "/segv.so: decide: killed by signal 11"))
      << d.reason;
  EXPECT_TRUE(Contains(d.reason, "; ghost: not loaded: ")) << d.reason;
  // A failure cannot outvote a reject.
  EXPECT_EQ(Run({crash, Fixed("reject")}).verdict, Verdict::kReject);
}

TEST(VerdictNameTest, Names) {
  EXPECT_EQ(VerdictName(Verdict::kInstall), "install");
  EXPECT_EQ(VerdictName(Verdict::kDefer), "defer");
  EXPECT_EQ(VerdictName(Verdict::kReject), "reject");
  EXPECT_EQ(VerdictName(Verdict::kRevert), "revert");
}

}  // namespace
}  // namespace cryptex::policy
