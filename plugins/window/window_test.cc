// The window plugin (window.c), loaded from its built .so and called directly.
// Times are written in UTC; the comments give the local time they are.
#include <gtest/gtest.h>

#include <cstdlib>
#include <string>
#include <vector>

#include "plugin_test_util.h"

namespace cryptex::plugintest {
namespace {

struct Case : NamedCase {
  Options options;
  std::string now;  // UTC
  int32_t verdict;
  std::string until;  // UTC, "" for 0
  std::vector<std::string> reason_parts;
  PatchState state = PatchState::kAvailable;
};

class WindowDecide : public testing::TestWithParam<Case> {};

TEST_P(WindowDecide, VerdictUntilAndReason) {
  const Case& c = GetParam();
  PatchFacts patch;
  patch.id = "p1";
  patch.state = c.state;
  DeviceFacts device;
  device.now = Utc(c.now);
  Result r = Plugin().Decide(patch, device, c.options);
  ExpectDecided(r, c.verdict, c.until.empty() ? 0 : Utc(c.until), c.reason_parts);
}

const Options kBerlinWeekdays = {
    {"hours", "02:00-05:00"}, {"days", "mon-fri"}, {"timezone", "Europe/Berlin"}};
const Options kFridayNight = {{"hours", "22:00-02:00"}, {"days", "fri"}};
const Options kBerlinNewYearFreeze = {
    {"hours", "02:00-05:00"}, {"timezone", "Europe/Berlin"}, {"freeze", "2026-12-20..2027-01-05"}};
const Options kBerlinAllDayFreeze = {
    {"hours", "00:00-24:00"}, {"timezone", "Europe/Berlin"}, {"freeze", "2026-12-20..2027-01-05"}};
const Options kBerlinPause = {
    {"hours", "00:00-24:00"}, {"timezone", "Europe/Berlin"}, {"pause_until", "2026-12-01T00:00"}};
const auto I = CX_VERDICT_INSTALL;
const auto D = CX_VERDICT_DEFER;

// 2026-11-30 is a Monday; Berlin is UTC+1 in winter, UTC+2 in summer.
INSTANTIATE_TEST_SUITE_P(
    Table, WindowDecide,
    testing::Values(
        Case{"SecondBeforeWindowStart",
             kBerlinWeekdays,
             "2026-11-30 00:59:59",
             D,
             "2026-11-30 01:00",
             {"defer: outside the windows (hours=02:00-05:00 days=mon,tue,wed,thu,fri "
              "Europe/Berlin)",
              "now 2026-11-30 01:59 CET",
              "next window opens 2026-11-30 02:00 CET (2026-11-30 01:00 UTC)"}},
        Case{"AtWindowStart",
             kBerlinWeekdays,
             "2026-11-30 01:00",
             I,
             "",
             {"install: inside window 02:00-05:00", "now 2026-11-30 02:00 CET"}},
        Case{"SecondBeforeWindowEnd",
             kBerlinWeekdays,
             "2026-11-30 03:59:59",
             I,
             "",
             {"now 2026-11-30 04:59 CET"}},
        Case{"AtWindowEndNextDay",
             kBerlinWeekdays,
             "2026-11-30 04:00",
             D,
             "2026-12-01 01:00",
             {"outside the windows"}},
        Case{"FridayEndToMonday",
             kBerlinWeekdays,
             "2026-12-04 04:00",
             D,
             "2026-12-07 01:00",
             {"next window opens 2026-12-07 02:00 CET"}},
        Case{"SundayNotEnabled", kBerlinWeekdays, "2026-11-29 01:30", D, "2026-11-30 01:00", {}},
        Case{"UtcDefault",
             {{"hours", "02:00-05:00"}},
             "2026-11-30 01:59",
             D,
             "2026-11-30 02:00",
             {"hours=02:00-05:00 UTC",
              "now 2026-11-30 01:59 UTC; next window opens 2026-11-30 02:00 UTC"}},
        // Across midnight: the window belongs to the day it opens on.
        Case{"MidnightSecondBeforeStart",
             kFridayNight,
             "2026-12-04 21:59:59",
             D,
             "2026-12-04 22:00",
             {}},
        Case{"MidnightAtStart", kFridayNight, "2026-12-04 22:00", I, "", {"22:00-02:00"}},
        Case{"MidnightAfterMidnight", kFridayNight, "2026-12-05 01:59:59", I, "", {}},
        Case{"MidnightAtEnd", kFridayNight, "2026-12-05 02:00", D, "2026-12-11 22:00", {}},
        Case{
            "MidnightOtherDayNotOpen", kFridayNight, "2026-12-05 23:00", D, "2026-12-11 22:00", {}},
        Case{"MidnightBeforeEnabledDay",
             kFridayNight,
             "2026-12-04 01:00",
             D,
             "2026-12-04 22:00",
             {}},
        Case{"RangeWraps",
             {{"hours", "10:00-11:00"}, {"days", "sat-mon"}},
             "2026-12-01 10:30",
             D,
             "2026-12-05 10:00",
             {"days=mon,sat,sun"}},
        Case{"SeveralWindows",
             {{"hours", "02:00-03:00, 14:00-15:00"}},
             "2026-12-01 03:00",
             D,
             "2026-12-01 14:00",
             {"hours=02:00-03:00,14:00-15:00"}},
        // Berlin: summer time starts 2026-03-29 02:00 CET -> 03:00 CEST (01:00 UTC).
        Case{"SpringForwardWindowOverGap",
             {{"hours", "02:00-05:00"}, {"days", "sun"}, {"timezone", "Europe/Berlin"}},
             "2026-03-28 12:00",
             D,
             "2026-03-29 01:00",
             {"next window opens 2026-03-29 03:00 CEST (2026-03-29 01:00 UTC)"}},
        Case{"SpringForwardWindowInsideGapSkipped",
             {{"hours", "02:00-02:30"}, {"days", "sun"}, {"timezone", "Europe/Berlin"}},
             "2026-03-28 12:00",
             D,
             "2026-04-05 00:00",
             {"next window opens 2026-04-05 02:00 CEST"}},
        Case{"SpringForwardWindowRightAfterGap",
             {{"hours", "03:00-03:30"}, {"days", "sun"}, {"timezone", "Europe/Berlin"}},
             "2026-03-28 12:00",
             D,
             "2026-03-29 01:00",
             {"next window opens 2026-03-29 03:00 CEST"}},
        Case{"SpringForwardEndInSummerTime",
             {{"hours", "01:00-04:00"}, {"timezone", "Europe/Berlin"}},
             "2026-03-29 01:59:59",
             I,
             "",
             {"now 2026-03-29 03:59 CEST"}},
        Case{"SpringForwardAtEnd",
             {{"hours", "01:00-04:00"}, {"timezone", "Europe/Berlin"}},
             "2026-03-29 02:00",
             D,
             "2026-03-29 23:00",
             {"2026-03-30 01:00 CEST"}},
        // Berlin: summer time ends 2026-10-25 03:00 CEST -> 02:00 CET (01:00 UTC):
        // 02:00-03:00 happens twice, and the window holds both.
        Case{"FallBackFirstHour",
             {{"hours", "02:00-03:00"}, {"days", "sun"}, {"timezone", "Europe/Berlin"}},
             "2026-10-25 00:59:59",
             I,
             "",
             {"02:59 CEST"}},
        Case{"FallBackRepeatedHour",
             {{"hours", "02:00-03:00"}, {"days", "sun"}, {"timezone", "Europe/Berlin"}},
             "2026-10-25 01:00",
             I,
             "",
             {"02:00 CET"}},
        Case{"FallBackAtEnd",
             {{"hours", "02:00-03:00"}, {"days", "sun"}, {"timezone", "Europe/Berlin"}},
             "2026-10-25 02:00",
             D,
             "2026-11-01 01:00",
             {"now 2026-10-25 03:00 CET"}},
        Case{"FallBackSearchFromBefore",
             {{"hours", "02:30-04:00"}, {"days", "sun"}, {"timezone", "Europe/Berlin"}},
             "2026-10-24 12:00",
             D,
             "2026-10-25 00:30",
             {"2026-10-25 02:30 CEST"}},
        // New York: summer time starts 2026-03-08 02:00 EST -> 03:00 EDT (07:00 UTC).
        Case{"NewYorkSpringForward",
             {{"hours", "02:30-03:30"}, {"days", "sun"}, {"timezone", "America/New_York"}},
             "2026-03-08 06:59:59",
             D,
             "2026-03-08 07:00",
             {"now 2026-03-08 01:59 EST", "opens 2026-03-08 03:00 EDT"}},
        Case{"NewYorkFallBack",
             {{"hours", "01:00-02:00"}, {"days", "sun"}, {"timezone", "America/New_York"}},
             "2026-11-01 06:59:59",
             I,
             "",
             {"01:59 EST"}},
        // Freezes: dates of the configured zone, both included; across new year.
        Case{"FrozenAcrossNewYear",
             kBerlinNewYearFreeze,
             "2026-12-21 01:30",
             D,
             "2027-01-06 01:00",
             {"defer: frozen 2026-12-20..2027-01-05 (Europe/Berlin)",
              "next window opens 2027-01-06 02:00 CET"}},
        Case{"SecondBeforeFreeze", kBerlinAllDayFreeze, "2026-12-19 22:59:59", I, "", {}},
        Case{"AtFreezeStart",
             kBerlinAllDayFreeze,
             "2026-12-19 23:00",
             D,
             "2027-01-05 23:00",
             {"frozen", "2027-01-06 00:00 CET"}},
        Case{"SecondBeforeFreezeEnd",
             kBerlinAllDayFreeze,
             "2027-01-05 22:59:59",
             D,
             "2027-01-05 23:00",
             {}},
        Case{"AtFreezeEnd", kBerlinAllDayFreeze, "2027-01-05 23:00", I, "", {}},
        Case{"FreezeEndsInsideAMidnightWindow",
             {{"hours", "22:00-02:00"}, {"freeze", "2027-01-01..2027-01-05"}},
             "2027-01-05 22:30",
             D,
             "2027-01-06 00:00",
             {"frozen 2027-01-01..2027-01-05 (UTC)"}},
        Case{"SeveralFreezeKeys",
             {{"hours", "00:00-24:00"},
              {"freeze", "2026-12-01"},
              {"freeze", "2026-12-02..2026-12-03, 2026-12-05"}},
             "2026-12-01 10:00",
             D,
             "2026-12-04 00:00",
             {"frozen 2026-12-01 (UTC)"}},
        Case{"FrozenForYears",
             {{"hours", "00:00-24:00"}, {"freeze", "2026-01-01..2029-12-31"}},
             "2026-12-01 00:00",
             D,
             "2028-01-05 00:00",
             {"no open window in the 400 days"}},
        // Pause: a local time; it expires by itself.
        Case{"SecondBeforePauseEnds",
             kBerlinPause,
             "2026-11-30 22:59:59",
             D,
             "2026-11-30 23:00",
             {"defer: paused until 2026-12-01T00:00 Europe/Berlin"}},
        Case{"AtPauseEnd", kBerlinPause, "2026-11-30 23:00", I, "", {}},
        Case{"PauseExpired", kBerlinPause, "2027-06-01 12:00", I, "", {}},
        Case{"PauseEndsInsideTheSpringForwardGap",
             {{"hours", "00:00-24:00"},
              {"timezone", "Europe/Berlin"},
              {"pause_until", "2026-03-29T02:30"}},
             "2026-03-29 00:59:59",
             D,
             "2026-03-29 01:00",
             {"opens 2026-03-29 03:00 CEST"}},
        Case{"PauseEndsInTheRepeatedHour",
             {{"hours", "00:00-24:00"},
              {"timezone", "Europe/Berlin"},
              {"pause_until", "2026-10-25T02:30"}},
             "2026-10-24 12:00",
             D,
             "2026-10-25 00:30",
             {"opens 2026-10-25 02:30 CEST"}},
        Case{"PauseThenWindow",
             {{"hours", "02:00-05:00"},
              {"timezone", "Europe/Berlin"},
              {"pause_until", "2026-12-01T00:00"}},
             "2026-11-30 02:00",
             D,
             "2026-12-01 01:00",
             {"paused until", "2026-12-01 02:00 CET"}},
        Case{"PauseThenFreeze",
             {{"hours", "00:00-24:00"},
              {"pause_until", "2026-12-10T12:00"},
              {"freeze", "2026-12-10..2026-12-11"}},
             "2026-12-09 00:00",
             D,
             "2026-12-12 00:00",
             {"paused until 2026-12-10T12:00 UTC"}},
        // Only installs are windowed.
        Case{"ActiveIsKept",
             kBerlinNewYearFreeze,
             "2026-12-21 10:00",
             I,
             "",
             {"already active"},
             PatchState::kActive},
        Case{"InstalledNotActiveIsWindowed",
             kBerlinWeekdays,
             "2026-11-29 10:00",
             D,
             "2026-11-30 01:00",
             {},
             PatchState::kInstalled}),
    CaseName());

class WindowRefuses : public testing::TestWithParam<BadOptions> {};

TEST_P(WindowRefuses, NamingTheKeyAndForm) {
  PatchFacts patch;
  DeviceFacts device;
  device.now = Utc("2026-11-30 01:00");
  ExpectRefused(GetParam(), patch, device);
}

std::string ManyWindows(int n) {
  std::string s;
  // Appends, not "lit" + std::string: GCC 12 at -O3 warns (-Wrestrict) on that.
  for (int i = 0; i < n; i++) {
    if (i) s += ',';
    s += "01:00-02:00";
  }
  return s;
}

INSTANTIATE_TEST_SUITE_P(
    Table, WindowRefuses,
    testing::Values(
        BadOptions{"HoursMissing", {{"days", "mon"}}, {"hours: missing", "HH:MM-HH:MM"}},
        BadOptions{"HoursEmpty", {{"hours", ""}}, {"hours: \"\"", "HH:MM-HH:MM"}},
        BadOptions{"HoursNotClock", {{"hours", "2-5"}}, {"hours: \"2-5\" is not a window"}},
        BadOptions{"HoursOutOfRange", {{"hours", "23:00-24:30"}}, {"hours: \"23:00-24:30\""}},
        BadOptions{"HoursStart24", {{"hours", "24:00-01:00"}}, {"hours: \"24:00-01:00\""}},
        BadOptions{
            "HoursEmptyWindow", {{"hours", "02:00-02:00"}}, {"hours: \"02:00-02:00\" is empty"}},
        BadOptions{"HoursTooMany", {{"hours", ManyWindows(17)}}, {"hours: more than 16 windows"}},
        BadOptions{"HoursHuge",
                   {{"hours", std::string(100000, '1')}},
                   {"hours: \"111", "...\" is not a window"}},
        BadOptions{"HoursRepeated",
                   {{"hours", "01:00-02:00"}, {"hours", "03:00-04:00"}},
                   {"hours: given more than once"}},
        BadOptions{"DayUnknown",
                   {{"hours", "01:00-02:00"}, {"days", "mon,funday"}},
                   {"days: \"funday\" is not a day", "mon-fri"}},
        BadOptions{"DayEmptyItem",
                   {{"hours", "01:00-02:00"}, {"days", "mon,,tue"}},
                   {"days: \"\" is not a day"}},
        BadOptions{"ZoneUnknown",
                   {{"hours", "01:00-02:00"}, {"timezone", "Mars/Olympus"}},
                   {"timezone: \"Mars/Olympus\" is not in the tz database", "Europe/Berlin"}},
        BadOptions{"ZoneDirectory",
                   {{"hours", "01:00-02:00"}, {"timezone", "Europe"}},
                   {"timezone: \"Europe\""}},
        BadOptions{"ZoneEscapes",
                   {{"hours", "01:00-02:00"}, {"timezone", "../../etc/passwd"}},
                   {"timezone: \"../../etc/passwd\" is not a time zone name"}},
        BadOptions{"ZoneAbsolute",
                   {{"hours", "01:00-02:00"}, {"timezone", "/etc/localtime"}},
                   {"timezone: \"/etc/localtime\" is not a time zone name"}},
        BadOptions{"ZonePosixString",
                   {{"hours", "01:00-02:00"}, {"timezone", "CET-1CEST,M3.5.0"}},
                   {"timezone: \"CET-1CEST,M3.5.0\""}},
        BadOptions{"ZoneHuge",
                   {{"hours", "01:00-02:00"}, {"timezone", std::string(4096, 'A')}},
                   {"timezone: \"AAA"}},
        BadOptions{"FreezeBackwards",
                   {{"hours", "01:00-02:00"}, {"freeze", "2027-01-05..2026-12-20"}},
                   {"freeze: \"2027-01-05..2026-12-20\" ends before it starts"}},
        BadOptions{
            "FreezeNoSuchDate",
            {{"hours", "01:00-02:00"}, {"freeze", "2026-02-29..2026-03-01"}},
            {"freeze: \"2026-02-29..2026-03-01\" is not a period", "YYYY-MM-DD..YYYY-MM-DD"}},
        BadOptions{"FreezeOneDot",
                   {{"hours", "01:00-02:00"}, {"freeze", "2026-12-20.2027-01-05"}},
                   {"freeze: \"2026-12-20.2027-01-05\""}},
        BadOptions{"PauseDateOnly",
                   {{"hours", "01:00-02:00"}, {"pause_until", "2026-12-01"}},
                   {"pause_until: \"2026-12-01\"", "YYYY-MM-DDTHH:MM"}},
        BadOptions{"PauseRepeated",
                   {{"hours", "01:00-02:00"},
                    {"pause_until", "2026-12-01T00:00"},
                    {"pause_until", "2026-12-02T00:00"}},
                   {"pause_until: given more than once"}},
        BadOptions{"UnknownKey",
                   {{"hours", "01:00-02:00"}, {"pause_days", "3"}},
                   {"unknown key \"pause_days\"", "hours, days, timezone, freeze, pause_until"}}),
    CaseName());

TEST(WindowOptions, AcceptedFormsPass) {
  EXPECT_EQ(Plugin().CheckOptions(kBerlinWeekdays).rc, 0);
  EXPECT_EQ(Plugin().CheckOptions(kBerlinNewYearFreeze).rc, 0);
  EXPECT_EQ(Plugin()
                .CheckOptions({{"hours", "00:00-24:00"},
                               {"days", "Sat, SUN"},
                               {"timezone", "America/New_York"},
                               {"freeze", "2026-12-24"},
                               {"pause_until", "2026-12-01T23:59"}})
                .rc,
            0);
  EXPECT_EQ(Plugin().CheckOptions({{"hours", ManyWindows(16)}}).rc, 0);
}

TEST(WindowZone, TheCallersTzIsRestored) {
  setenv("TZ", "Asia/Tokyo", 1);
  PatchFacts patch;
  DeviceFacts device;
  device.now = Utc("2026-11-30 01:00");
  Result r = Plugin().Decide(patch, device, kBerlinWeekdays);
  EXPECT_EQ(r.verdict, CX_VERDICT_INSTALL);
  ASSERT_NE(getenv("TZ"), nullptr);
  EXPECT_STREQ(getenv("TZ"), "Asia/Tokyo");
  unsetenv("TZ");
  r = Plugin().Decide(patch, device, kBerlinWeekdays);
  EXPECT_EQ(getenv("TZ"), nullptr);
}

TEST(WindowZone, ALongCallersTzIsRestored) {
  std::string tz = ":" + std::string(1000, 'x');
  setenv("TZ", tz.c_str(), 1);
  PatchFacts patch;
  DeviceFacts device;
  device.now = Utc("2026-11-30 01:00");
  EXPECT_EQ(Plugin().Decide(patch, device, kBerlinWeekdays).verdict, CX_VERDICT_INSTALL);
  ASSERT_NE(getenv("TZ"), nullptr);
  EXPECT_EQ(getenv("TZ"), tz);
  unsetenv("TZ");
}

TEST(WindowZone, TzdirIsHonouredAndAMissingDatabaseRefused) {
  setenv("TZDIR", "/nonexistent", 1);
  Check check = Plugin().CheckOptions(kBerlinWeekdays);
  unsetenv("TZDIR");
  EXPECT_NE(check.rc, 0);
  EXPECT_NE(check.message.find("not in the tz database /nonexistent"), std::string::npos)
      << check.message;
  EXPECT_NE(check.message.find("tzdata"), std::string::npos) << check.message;
}

TEST(WindowTime, OutOfRangeNowFailsCleanly) {
  PatchFacts patch;
  DeviceFacts device;
  device.now = INT64_MAX;
  Result r = Plugin().Decide(patch, device, kBerlinWeekdays);
  EXPECT_NE(r.rc, 0);
  EXPECT_EQ(r.verdict, CX_VERDICT_DEFER);
  EXPECT_NE(r.reason.find("out of range"), std::string::npos) << r.reason;
}

}  // namespace
}  // namespace cryptex::plugintest
