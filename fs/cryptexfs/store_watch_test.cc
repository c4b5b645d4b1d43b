// StateWatcher (store_watch.h) without FUSE: a commit (rename over the
// watched name) is reported, other names are not, a directory replaced while
// a file in it is held open is watched again, and Stop() returns promptly.
#include "store_watch.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <string>
#include <thread>

#include "test_util.h"

namespace cryptex::cxfs {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

// Writes `name`.tmp in `dir` and renames it over `name` (a store commit).
void Commit(const std::string& dir, const std::string& name, const std::string& bytes) {
  test::WriteFile(dir + "/" + name + ".tmp", bytes);
  ASSERT_EQ(std::rename((dir + "/" + name + ".tmp").c_str(), (dir + "/" + name).c_str()), 0);
}

// Waits (up to `limit`) until *count reaches `want`.
bool Reaches(const std::atomic<int>& count, int want, milliseconds limit = milliseconds(2000)) {
  const auto deadline = Clock::now() + limit;
  while (Clock::now() < deadline) {
    if (count.load() >= want) return true;
    std::this_thread::sleep_for(milliseconds(5));
  }
  return count.load() >= want;
}

TEST(StateWatcher, ReportsARenameOverTheStateFileOnly) {
  test::TempDir tmp;
  const std::string dir = tmp.Join("store");
  ASSERT_EQ(mkdir(dir.c_str(), 0755), 0);
  Commit(dir, "state", "1");
  std::atomic<int> changes{0};
  auto w = StateWatcher::Start(dir, "state", [&] { ++changes; });
  ASSERT_TRUE(w.ok()) << w.status().ToString();
  Commit(dir, "other", "x");  // not the state file
  std::this_thread::sleep_for(milliseconds(200));
  EXPECT_EQ(changes.load(), 0);
  Commit(dir, "state", "2");
  EXPECT_TRUE(Reaches(changes, 1));
  const auto t0 = Clock::now();
  (*w)->Stop();
  EXPECT_LT(Clock::now() - t0, milliseconds(500));
}

// `how`: "rm" (removed, then another directory moved to its path: an open
// file in it pins it, so inotify reports nothing; found by identity) or
// "mv" (renamed away: IN_MOVE_SELF).
class ReplacedDirectory : public ::testing::TestWithParam<const char*> {};

TEST_P(ReplacedDirectory, IsWatchedAgainAndReportedWhileAFileInItIsOpen) {
  test::TempDir tmp;
  const std::string dir = tmp.Join("store");
  ASSERT_EQ(mkdir(dir.c_str(), 0755), 0);
  Commit(dir, "state", "1");
  const int held = open((dir + "/state").c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(held, 0);
  std::atomic<int> changes{0};
  auto w = StateWatcher::Start(dir, "state", [&] { ++changes; });
  ASSERT_TRUE(w.ok()) << w.status().ToString();
  const std::string fresh = tmp.Join("fresh");
  ASSERT_EQ(mkdir(fresh.c_str(), 0755), 0);
  Commit(fresh, "state", "2");
  const std::string old = tmp.Join("old");
  if (std::string(GetParam()) == "rm") {
    ASSERT_EQ(test::RunCommand("rm -rf " + test::ShellQuote(dir)).exit_code, 0);
  } else {
    ASSERT_EQ(std::rename(dir.c_str(), old.c_str()), 0);
  }
  ASSERT_EQ(std::rename(fresh.c_str(), dir.c_str()), 0);
  EXPECT_TRUE(Reaches(changes, 1, kIdentityInterval + milliseconds(1500)));
  std::this_thread::sleep_for(kRewatchInterval);
  const int watched = changes.load();
  Commit(dir, "state", "3");
  EXPECT_TRUE(Reaches(changes, watched + 1));
  if (std::string(GetParam()) == "mv") {  // the old directory is not watched any more
    const int before = changes.load();
    Commit(old, "state", "4");
    std::this_thread::sleep_for(milliseconds(200));
    EXPECT_EQ(changes.load(), before);
  }
  close(held);
}

INSTANTIATE_TEST_SUITE_P(StateWatcher, ReplacedDirectory, ::testing::Values("rm", "mv"));

TEST(StateWatcher, MissingDirectoryIsAnError) {
  test::TempDir tmp;
  auto w = StateWatcher::Start(tmp.Join("none"), "state", [] {});
  EXPECT_FALSE(w.ok());
}

}  // namespace
}  // namespace cryptex::cxfs
