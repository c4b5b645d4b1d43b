// The rollout plugin (rollout.c), loaded from its built .so and called directly.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "plugin_test_util.h"

namespace cryptex::plugintest {
namespace {

const int64_t kReleased = Utc("2026-11-20 00:00");
const int64_t kDay = 86400;
const Options kStages = {{"stages", "0:1, 1:10, 3:100"}};

struct Case : NamedCase {
  Options options;
  uint32_t bucket;
  int64_t released_at;
  int64_t now;
  int32_t verdict;
  int64_t until;
  std::vector<std::string> reason_parts;
  PatchState state = PatchState::kAvailable;
};

class RolloutDecide : public testing::TestWithParam<Case> {};

TEST_P(RolloutDecide, VerdictUntilAndReason) {
  const Case& c = GetParam();
  PatchFacts patch;
  patch.id = "p1";
  patch.released_at = c.released_at;
  patch.state = c.state;
  DeviceFacts device;
  device.now = c.now;
  device.bucket = c.bucket;
  Result r = Plugin().Decide(patch, device, c.options);
  ExpectDecided(r, c.verdict, c.until, c.reason_parts);
}

const auto I = CX_VERDICT_INSTALL;
const auto D = CX_VERDICT_DEFER;

INSTANTIATE_TEST_SUITE_P(
    Table, RolloutDecide,
    testing::Values(
        Case{"CanaryAtRelease",
             kStages,
             0,
             kReleased,
             kReleased,
             I,
             0,
             {"install: bucket 0 is in the rollout since day 0 (stage 0:1, buckets < 1)"}},
        Case{"BucketOneWaitsForDayOne",
             kStages,
             1,
             kReleased,
             kReleased,
             D,
             kReleased + kDay,
             {"defer: bucket 1 enters at day 1 (stage 1:10, buckets < 10)",
              "now day 0 (stage 0:1, buckets < 1)", "due 2026-11-21 00:00 UTC"}},
        Case{"SecondBeforeStage",
             kStages,
             9,
             kReleased,
             kReleased + kDay - 1,
             D,
             kReleased + kDay,
             {}},
        Case{"AtStage",
             kStages,
             9,
             kReleased,
             kReleased + kDay,
             I,
             0,
             {"since day 1", "2026-11-21 00:00 UTC"}},
        Case{"BucketTenWaitsForTheLastStage",
             kStages,
             10,
             kReleased,
             kReleased + kDay,
             D,
             kReleased + 3 * kDay,
             {"enters at day 3 (stage 3:100", "now day 1 (stage 1:10"}},
        Case{"LastBucketSecondBefore",
             kStages,
             99,
             kReleased,
             kReleased + 3 * kDay - 1,
             D,
             kReleased + 3 * kDay,
             {"now day 2"}},
        Case{"LastBucketAtLastStage", kStages, 99, kReleased, kReleased + 3 * kDay, I, 0, {}},
        Case{"NoStageYet",
             {{"stages", "2:50,4:100"}},
             0,
             kReleased,
             kReleased + kDay,
             D,
             kReleased + 2 * kDay,
             {"now day 1 (no stage yet)"}},
        Case{"ReleasedInTheFuture",
             kStages,
             0,
             kReleased,
             kReleased - 10,
             D,
             kReleased,
             {"now day 0 (no stage yet)"}},
        Case{"OneStageEveryone", {{"stages", "0:100"}}, 57, kReleased, kReleased, I, 0, {}},
        Case{"UnknownReleaseDayZeroStage",
             kStages,
             0,
             0,
             kReleased,
             I,
             0,
             {"release time unknown", "day-0 stage"}},
        Case{"UnknownReleaseLaterStage",
             kStages,
             5,
             0,
             kReleased,
             D,
             0,
             {"release time unknown, treated as day 0", "enters at day 1", "next run"}},
        Case{"Saturates",
             {{"stages", "0:1,3650:100"}},
             50,
             INT64_MAX - 10,
             INT64_MAX - 5,
             D,
             INT64_MAX,
             {}},
        Case{"ActiveIsKept",
             kStages,
             99,
             kReleased,
             kReleased,
             I,
             0,
             {"already active"},
             PatchState::kActive}),
    CaseName());

TEST(RolloutDecide, BucketOutOfRangeFails) {
  PatchFacts patch;
  patch.released_at = kReleased;
  DeviceFacts device;
  device.now = kReleased + 100 * kDay;
  device.bucket = 100;
  Result r = Plugin().Decide(patch, device, kStages);
  EXPECT_NE(r.rc, 0);
  EXPECT_EQ(r.verdict, CX_VERDICT_DEFER);
  EXPECT_NE(r.reason.find("bucket 100 is out of range"), std::string::npos) << r.reason;
}

class RolloutRefuses : public testing::TestWithParam<BadOptions> {};

TEST_P(RolloutRefuses, NamingTheKeyAndForm) {
  PatchFacts patch;
  DeviceFacts device;
  ExpectRefused(GetParam(), patch, device);
}

std::string ManyStages(int n) {
  std::string s;
  for (int i = 0; i < n; i++)
    s += (i ? "," : "") + std::to_string(i) + ":" + std::to_string(i + 100 - n + 1);
  return s;
}

INSTANTIATE_TEST_SUITE_P(
    Table, RolloutRefuses,
    testing::Values(
        BadOptions{"Missing", {}, {"stages: missing", "DAY:PERCENT"}},
        BadOptions{"Empty", {{"stages", ""}}, {"stages: \"\" is not a stage"}},
        BadOptions{"NoColon", {{"stages", "0:1,5"}}, {"stages: \"5\" is not a stage"}},
        BadOptions{"PercentOver100", {{"stages", "0:101"}}, {"stages: \"0:101\""}},
        BadOptions{"NegativeDay", {{"stages", "-1:100"}}, {"stages: \"-1:100\""}},
        BadOptions{"DayTooBig", {{"stages", "3651:100"}}, {"stages: \"3651:100\""}},
        BadOptions{"DaysNotIncreasing",
                   {{"stages", "1:10,1:100"}},
                   {"stages: \"1:100\" does not increase"}},
        BadOptions{"PercentNotIncreasing",
                   {{"stages", "0:10,1:10,2:100"}},
                   {"stages: \"1:10\" does not increase"}},
        BadOptions{
            "NotEveryone", {{"stages", "0:1,1:50"}}, {"the last stage reaches 50%, not 100"}},
        BadOptions{"TrailingComma", {{"stages", "0:100,"}}, {"stages: \"\""}},
        BadOptions{"TooManyStages", {{"stages", ManyStages(33)}}, {"stages: more than 32 stages"}},
        BadOptions{"Huge", {{"stages", std::string(1 << 20, '7')}}, {"stages: \"777", "...\""}},
        BadOptions{"Repeated",
                   {{"stages", "0:100"}, {"stages", "1:100"}},
                   {"stages: given more than once"}},
        BadOptions{"UnknownKey",
                   {{"stages", "0:100"}, {"percent", "5"}},
                   {"unknown key \"percent\" (accepted: stages)"}}),
    CaseName());

TEST(RolloutOptions, AcceptedFormsPass) {
  EXPECT_EQ(Plugin().CheckOptions(kStages).rc, 0);
  EXPECT_EQ(Plugin().CheckOptions({{"stages", ManyStages(32)}}).rc, 0);
  EXPECT_EQ(Plugin().CheckOptions({{"stages", "0:0,3650:100"}}).rc, 0);
}

}  // namespace
}  // namespace cryptex::plugintest
