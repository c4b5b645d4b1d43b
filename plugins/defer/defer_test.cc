// The defer plugin (defer.c), loaded from its built .so and called directly.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "plugin_test_util.h"

namespace cryptex::plugintest {
namespace {

const int64_t kReleased = Utc("2026-11-20 00:00");
const int64_t kDay = 86400;

struct Case : NamedCase {
  Options options;
  std::string severity;
  int64_t released_at;
  int64_t now;
  PatchState state;
  int32_t verdict;
  int64_t until;
  std::vector<std::string> reason_parts;
};

class DeferDecide : public testing::TestWithParam<Case> {};

TEST_P(DeferDecide, VerdictUntilAndReason) {
  const Case& c = GetParam();
  PatchFacts patch;
  patch.id = "p1";
  patch.severity = c.severity;
  patch.released_at = c.released_at;
  patch.state = c.state;
  DeviceFacts device;
  device.now = c.now;
  Result r = Plugin().Decide(patch, device, c.options);
  ExpectDecided(r, c.verdict, c.until, c.reason_parts);
}

const Options kSeven = {{"days", "7"}};
const Options kFull = {
    {"days", "7"}, {"days_low", "30"}, {"immediate", "critical, high"}, {"deadline_days", "14"}};
const auto kAvail = PatchState::kAvailable;

INSTANTIATE_TEST_SUITE_P(
    Table, DeferDecide,
    testing::Values(Case{"HeldWithDaysPassed",
                         kSeven,
                         "medium",
                         kReleased,
                         kReleased + 2 * kDay + 5,
                         kAvail,
                         CX_VERDICT_DEFER,
                         kReleased + 7 * kDay,
                         {"defer: released 2026-11-20 00:00 UTC", "2 of 7 days", "days=7",
                          "due 2026-11-27 00:00 UTC"}},
                    Case{"SecondBeforeDue",
                         kSeven,
                         "",
                         kReleased,
                         kReleased + 7 * kDay - 1,
                         kAvail,
                         CX_VERDICT_DEFER,
                         kReleased + 7 * kDay,
                         {"6 of 7 days", "due 2026-11-27 00:00 UTC"}},
                    Case{"ExactlyAtDue",
                         kSeven,
                         "",
                         kReleased,
                         kReleased + 7 * kDay,
                         kAvail,
                         CX_VERDICT_INSTALL,
                         0,
                         {"install: released 2026-11-20 00:00 UTC", "7-day hold",
                          "ended 2026-11-27 00:00 UTC"}},
                    Case{"ZeroDaysInstallsAtRelease",
                         {{"days", "0"}},
                         "",
                         kReleased,
                         kReleased,
                         kAvail,
                         CX_VERDICT_INSTALL,
                         0,
                         {"0-day hold"}},
                    Case{"ReleasedInTheFutureWaits",
                         kSeven,
                         "",
                         kReleased,
                         kReleased - 3 * kDay,
                         kAvail,
                         CX_VERDICT_DEFER,
                         kReleased + 7 * kDay,
                         {"0 of 7 days"}},
                    Case{"ImmediateSeverity",
                         kFull,
                         "critical",
                         kReleased,
                         kReleased,
                         kAvail,
                         CX_VERDICT_INSTALL,
                         0,
                         {"severity critical installs at once", "immediate=high,critical"}},
                    Case{"ImmediateIgnoresUnknownRelease",
                         kFull,
                         "high",
                         0,
                         kReleased,
                         kAvail,
                         CX_VERDICT_INSTALL,
                         0,
                         {"severity high installs at once"}},
                    Case{"UnspecifiedSeverityUsesDays",
                         kFull,
                         "",
                         kReleased,
                         kReleased + kDay,
                         kAvail,
                         CX_VERDICT_DEFER,
                         kReleased + 7 * kDay,
                         {"days=7"}},
                    Case{"UnknownSeverityNameUsesDays",
                         kFull,
                         "urgent",
                         kReleased,
                         kReleased + kDay,
                         kAvail,
                         CX_VERDICT_DEFER,
                         kReleased + 7 * kDay,
                         {"days=7"}},
                    Case{"SeverityDaysCappedByDeadline",
                         kFull,
                         "low",
                         kReleased,
                         kReleased + 3 * kDay,
                         kAvail,
                         CX_VERDICT_DEFER,
                         kReleased + 14 * kDay,
                         {"3 of 14 days", "days_low=30 capped by deadline_days=14",
                          "due 2026-12-04 00:00 UTC"}},
                    Case{"SecondBeforeDeadline",
                         kFull,
                         "low",
                         kReleased,
                         kReleased + 14 * kDay - 1,
                         kAvail,
                         CX_VERDICT_DEFER,
                         kReleased + 14 * kDay,
                         {"13 of 14 days"}},
                    Case{"ExactlyAtDeadline",
                         kFull,
                         "low",
                         kReleased,
                         kReleased + 14 * kDay,
                         kAvail,
                         CX_VERDICT_INSTALL,
                         0,
                         {"install: deadline: released 2026-11-20 00:00 UTC",
                          "deadline_days=14 reached 2026-12-04 00:00 UTC",
                          "days_low=30 would hold until 2026-12-20 00:00 UTC"}},
                    Case{"DeadlineAtOrAboveHoldChangesNothing",
                         {{"days", "7"}, {"deadline_days", "7"}},
                         "",
                         kReleased,
                         kReleased + 7 * kDay,
                         kAvail,
                         CX_VERDICT_INSTALL,
                         0,
                         {"7-day hold"}},
                    Case{"UnknownReleaseHeld",
                         kSeven,
                         "medium",
                         0,
                         kReleased,
                         kAvail,
                         CX_VERDICT_DEFER,
                         0,
                         {"release time unknown", "unknown_release=hold", "next run"}},
                    Case{"UnknownReleaseInstallOption",
                         {{"days", "7"}, {"unknown_release", "install"}},
                         "",
                         0,
                         kReleased,
                         kAvail,
                         CX_VERDICT_INSTALL,
                         0,
                         {"unknown_release=install"}},
                    Case{"InstalledNotActiveIsHeld",
                         kSeven,
                         "",
                         kReleased,
                         kReleased,
                         PatchState::kInstalled,
                         CX_VERDICT_DEFER,
                         kReleased + 7 * kDay,
                         {"defer"}},
                    Case{"ActiveIsKept",
                         kSeven,
                         "",
                         kReleased,
                         kReleased,
                         PatchState::kActive,
                         CX_VERDICT_INSTALL,
                         0,
                         {"already active"}},
                    Case{"HugeHoldSaturates",
                         {{"days", "3650"}},
                         "",
                         INT64_MAX - 5,
                         INT64_MAX - 4,
                         kAvail,
                         CX_VERDICT_DEFER,
                         INT64_MAX,
                         {"defer"}}),
    CaseName());

class DeferRefuses : public testing::TestWithParam<BadOptions> {};

TEST_P(DeferRefuses, NamingTheKeyAndForm) {
  // decide() with the same options fails rather than guessing.
  PatchFacts patch;
  patch.released_at = kReleased;
  DeviceFacts device;
  device.now = kReleased;
  ExpectRefused(GetParam(), patch, device);
}

INSTANTIATE_TEST_SUITE_P(
    Table, DeferRefuses,
    testing::Values(
        BadOptions{"Missing", {}, {"days: missing", "days = N"}},
        BadOptions{
            "Unknown", {{"days", "7"}, {"dayz", "3"}}, {"unknown key \"dayz\"", "accepted: days,"}},
        BadOptions{"NotANumber", {{"days", "seven"}}, {"days: \"seven\"", "days = N", "0 to 3650"}},
        BadOptions{"Negative", {{"days", "-1"}}, {"days: \"-1\""}},
        BadOptions{"Empty", {{"days", ""}}, {"days: \"\"", "days = N"}},
        BadOptions{"TooMany", {{"days", "3651"}}, {"days: \"3651\""}},
        BadOptions{"Huge", {{"days", std::string(5000, '9')}}, {"days: \"999", "...", "days = N"}},
        BadOptions{"Repeated", {{"days", "7"}, {"days", "8"}}, {"days: given more than once"}},
        BadOptions{"UnknownSeverity",
                   {{"days", "7"}, {"immediate", "critical,urgent"}},
                   {"immediate: unknown severity \"urgent\"", "low, medium, high, critical"}},
        BadOptions{"EmptySeverityItem",
                   {{"days", "7"}, {"immediate", "critical,"}},
                   {"immediate: unknown severity \"\""}},
        BadOptions{"DeadlineBelowDays",
                   {{"days", "7"}, {"deadline_days", "3"}},
                   {"deadline_days: 3 is below days = 7"}},
        BadOptions{"ImmediateAndDays",
                   {{"days", "7"}, {"immediate", "low"}, {"days_low", "1"}},
                   {"days_low: severity low is also immediate"}},
        BadOptions{"BadSeverityDays", {{"days", "7"}, {"days_high", "x"}}, {"days_high: \"x\""}},
        BadOptions{"BadUnknownRelease",
                   {{"days", "7"}, {"unknown_release", "yes"}},
                   {"unknown_release: \"yes\"", "hold|install"}},
        BadOptions{"BinaryKey",
                   {{"days", "7"}, {std::string("a\xff\n", 3), "1"}},
                   {"unknown key \"a??\""}}),
    CaseName());

TEST(DeferOptions, AcceptedFormsPass) {
  EXPECT_EQ(Plugin().CheckOptions(kSeven).rc, 0);
  EXPECT_EQ(Plugin().CheckOptions(kFull).rc, 0);
  EXPECT_EQ(Plugin().CheckOptions({{"days", " 3650 "}, {"immediate", "LOW"}}).rc, 0);
}

TEST(DeferReason, TruncatedToTheHostsCapAtACharacterBoundary) {
  PatchFacts patch;
  patch.released_at = kReleased;
  DeviceFacts device;
  device.now = kReleased;
  Result r = Plugin().Decide(patch, device, kSeven, 10);
  EXPECT_EQ(r.rc, 0);
  EXPECT_EQ(r.reason, "defer: rel");
  Result none = Plugin().Decide(patch, device, kSeven, 0);
  EXPECT_EQ(none.verdict, CX_VERDICT_DEFER);
  EXPECT_EQ(none.reason, "");
}

}  // namespace
}  // namespace cryptex::plugintest
