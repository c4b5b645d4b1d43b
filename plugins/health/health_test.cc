// The health plugin (health.c), loaded from its built .so and called directly.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "plugin_test_util.h"

namespace cryptex::plugintest {
namespace {

using policy::HealthResult;

const int64_t kActivated = Utc("2026-11-20 10:00");
const int64_t kNow = Utc("2026-11-20 12:00");

struct Case : NamedCase {
  Options options;
  std::vector<HealthResult> health;
  int32_t verdict;
  std::vector<std::string> reason_parts;
  PatchState state = PatchState::kActive;
  int64_t activated_at = kActivated;
};

class HealthDecide : public testing::TestWithParam<Case> {};

TEST_P(HealthDecide, VerdictAndReason) {
  const Case& c = GetParam();
  PatchFacts patch;
  patch.id = "p1";
  patch.state = c.state;
  patch.activated_at = c.state == PatchState::kActive ? c.activated_at : 0;
  DeviceFacts device;
  device.now = kNow;
  device.health = c.health;
  Result r = Plugin().Decide(patch, device, c.options);
  ExpectDecided(r, c.verdict, 0, c.reason_parts);
}

HealthResult Fail(const std::string& check, int64_t at) { return {check, at, false}; }
HealthResult Pass(const std::string& check, int64_t at) { return {check, at, true}; }

const Options kTwo = {{"failures", "2"}, {"checks", "http, disk"}};
const auto I = CX_VERDICT_INSTALL;
const auto Rv = CX_VERDICT_REVERT;

INSTANTIATE_TEST_SUITE_P(
    Table, HealthDecide,
    testing::Values(
        Case{"NoResults",
             {},
             {},
             I,
             {"install: 0 failed health results since activation 2026-11-20 10:00 UTC "
              "(failures=3, checks=all)"}},
        Case{"DefaultThreeFailures",
             {},
             {Fail("a", kActivated + 1), Fail("b", kActivated + 2), Fail("c", kActivated + 3)},
             Rv,
             {"revert: 3 failed health results", "a at 2026-11-20 10:00:01 UTC, b at"}},
        Case{"BelowThreshold",
             kTwo,
             {Fail("http", kActivated + 60), Pass("http", kActivated + 120)},
             I,
             {"install: 1 failed health result since", "failures=2, checks=http, disk",
              ": http at 2026-11-20 10:01 UTC"}},
        Case{"AtThreshold",
             kTwo,
             {Fail("http", kActivated + 60), Fail("disk", kActivated + 120)},
             Rv,
             {"revert: 2 failed health results"}},
        Case{"PassesDoNotCount",
             kTwo,
             {Pass("http", kActivated), Pass("disk", kActivated), Fail("http", kActivated + 1)},
             I,
             {}},
        Case{"OtherChecksIgnored",
             kTwo,
             {Fail("dns", kActivated + 1), Fail("dns", kActivated + 2),
              Fail("http", kActivated + 3)},
             I,
             {"1 failed"}},
        Case{"CheckNamesExact",
             kTwo,
             {Fail("HTTP", kActivated + 1), Fail("http2", kActivated + 2)},
             I,
             {"0 failed"}},
        Case{"SecondBeforeActivationIgnored",
             kTwo,
             {Fail("http", kActivated - 1), Fail("http", kActivated - 1)},
             I,
             {"0 failed"}},
        Case{"AtActivationCounts",
             kTwo,
             {Fail("http", kActivated), Fail("http", kActivated)},
             Rv,
             {"2 failed"}},
        Case{
            "AfterNowIgnored", kTwo, {Fail("http", kNow), Fail("http", kNow + 1)}, I, {"1 failed"}},
        Case{"ActivationUnknownCountsAll",
             kTwo,
             {Fail("http", 5), Fail("disk", 6)},
             Rv,
             {"since activation (time unknown: every result counts)"},
             PatchState::kActive,
             0},
        Case{"ManyFailuresListedBriefly",
             {{"failures", "1"}},
             {Fail("a", kActivated + 1), Fail("b", kActivated + 2), Fail("c", kActivated + 3),
              Fail("d", kActivated + 4)},
             Rv,
             {"4 failed", "c at 2026-11-20 10:00:03 UTC, ..."}},
        Case{"NotActiveInstalls",
             {},
             {Fail("a", 1), Fail("a", 2), Fail("a", 3)},
             I,
             {"install: not active"},
             PatchState::kAvailable},
        Case{"InstalledNotActiveInstalls",
             {},
             {Fail("a", 1), Fail("a", 2), Fail("a", 3)},
             I,
             {"not active"},
             PatchState::kInstalled}),
    CaseName());

TEST(HealthDecide, ManyResults) {
  PatchFacts patch;
  patch.state = PatchState::kActive;
  patch.activated_at = kActivated;
  DeviceFacts device;
  device.now = kNow;
  for (int i = 0; i < 100000; i++) device.health.push_back(Pass("http", kActivated + i % 7200));
  device.health.push_back(Fail("http", kNow));
  Result r = Plugin().Decide(patch, device, {{"failures", "1"}});
  EXPECT_EQ(r.verdict, CX_VERDICT_REVERT) << r.reason;
}

TEST(HealthOptions, RefusedNamingTheKeyAndForm) {
  struct Bad {
    Options options;
    std::string part;
  };
  for (const Bad& b : std::vector<Bad>{
           {{{"failures", "0"}}, "failures: \"0\" is not a count (failures = N, N from 1 to 1000)"},
           {{{"failures", "1001"}}, "failures: \"1001\""},
           {{{"failures", ""}}, "failures: \"\""},
           {{{"failures", "-3"}}, "failures: \"-3\""},
           {{{"failures", std::string(10000, '9')}}, "failures: \"999"},
           {{{"checks", ""}}, "checks: \"\" is not a check name (checks = all, or NAME[,NAME...]"},
           {{{"checks", "http,,disk"}}, "checks: \"\""},
           {{{"checks", "http,all"}}, "checks: \"all\""},
           {{{"checks", "my check"}}, "checks: \"my check\""},
           {{{"checks", "a"}, {"checks", "b"}}, "checks: given more than once"},
           {{{"window", "1h"}}, "unknown key \"window\" (accepted: failures, checks)"}}) {
    Check check = Plugin().CheckOptions(b.options);
    EXPECT_NE(check.rc, 0);
    EXPECT_NE(check.message.find(b.part), std::string::npos) << check.message;
    PatchFacts patch;
    patch.state = PatchState::kActive;
    DeviceFacts device;
    EXPECT_NE(Plugin().Decide(patch, device, b.options).rc, 0);
  }
  EXPECT_EQ(Plugin().CheckOptions({}).rc, 0);
  EXPECT_EQ(Plugin().CheckOptions({{"failures", "1000"}, {"checks", "ALL"}}).rc, 0);
  EXPECT_EQ(Plugin().CheckOptions({{"checks", "http, disk-space"}}).rc, 0);
}

}  // namespace
}  // namespace cryptex::plugintest
