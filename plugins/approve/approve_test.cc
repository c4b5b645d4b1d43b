// The approve plugin (approve.c), loaded from its built .so and called directly.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "plugin_test_util.h"

namespace cryptex::plugintest {
namespace {

struct Case : NamedCase {
  Options options;
  std::string severity;
  bool approved;
  int64_t approved_at;
  PatchState state;
  int32_t verdict;
  std::vector<std::string> reason_parts;
};

class ApproveDecide : public testing::TestWithParam<Case> {};

TEST_P(ApproveDecide, VerdictAndReason) {
  const Case& c = GetParam();
  PatchFacts patch;
  patch.id = "web-2026.11.3";
  patch.severity = c.severity;
  patch.approved = c.approved;
  patch.approved_at = c.approved_at;
  patch.state = c.state;
  DeviceFacts device;
  device.now = Utc("2026-11-30 00:00");
  Result r = Plugin().Decide(patch, device, c.options);
  ExpectDecided(r, c.verdict, 0, c.reason_parts);
}

const Options kAuto = {{"auto_severity", "critical"}};
const auto Av = PatchState::kAvailable;

INSTANTIATE_TEST_SUITE_P(
    Table, ApproveDecide,
    testing::Values(
        Case{"Unapproved",
             {},
             "high",
             false,
             0,
             Av,
             CX_VERDICT_DEFER,
             {"defer: waiting for approval: cryptex approve web-2026.11.3"}},
        Case{"UnapprovedInstalledNotActive",
             {},
             "",
             false,
             0,
             PatchState::kInstalled,
             CX_VERDICT_DEFER,
             {"waiting for approval"}},
        Case{"Approved",
             {},
             "",
             true,
             Utc("2026-11-29 08:15"),
             Av,
             CX_VERDICT_INSTALL,
             {"install: approved at 2026-11-29 08:15 UTC"}},
        Case{"ApprovedTimeUnknown", {}, "", true, 0, Av, CX_VERDICT_INSTALL, {"install: approved"}},
        Case{"AutoSeverity",
             kAuto,
             "critical",
             false,
             0,
             Av,
             CX_VERDICT_INSTALL,
             {"install: severity critical needs no approval (auto_severity)"}},
        Case{"OtherSeverityStillWaits",
             kAuto,
             "high",
             false,
             0,
             Av,
             CX_VERDICT_DEFER,
             {"waiting for approval"}},
        Case{"UnspecifiedSeverityWaits",
             {{"auto_severity", "low,medium,high,critical"}},
             "",
             false,
             0,
             Av,
             CX_VERDICT_DEFER,
             {"waiting for approval"}},
        Case{"UnknownSeverityWaits",
             {{"auto_severity", "low,medium,high,critical"}},
             "urgent",
             false,
             0,
             Av,
             CX_VERDICT_DEFER,
             {"waiting for approval"}},
        Case{"ActiveIsKept",
             {},
             "",
             false,
             0,
             PatchState::kActive,
             CX_VERDICT_INSTALL,
             {"already active"}}),
    CaseName());

TEST(ApproveOptions, RefusedNamingTheKeyAndForm) {
  struct Bad {
    Options options;
    std::string part;
  };
  for (const Bad& b : std::vector<Bad>{
           {{{"auto_severity", "critical,urgent"}}, "auto_severity: unknown severity \"urgent\""},
           {{{"auto_severity", ""}},
            "auto_severity: unknown severity \"\" (auto_severity = SEVERITY"},
           {{{"auto_severity", std::string(50000, 'x')}}, "auto_severity: unknown severity \"xxx"},
           {{{"auto_severity", "low"}, {"auto_severity", "high"}},
            "auto_severity: given more than once"},
           {{{"auto", "critical"}}, "unknown key \"auto\" (accepted: auto_severity)"}}) {
    Check check = Plugin().CheckOptions(b.options);
    EXPECT_NE(check.rc, 0);
    EXPECT_NE(check.message.find(b.part), std::string::npos) << check.message;
    PatchFacts patch;
    DeviceFacts device;
    EXPECT_NE(Plugin().Decide(patch, device, b.options).rc, 0);
  }
  EXPECT_EQ(Plugin().CheckOptions({}).rc, 0);
  EXPECT_EQ(Plugin().CheckOptions({{"auto_severity", "Critical, high"}}).rc, 0);
}

}  // namespace
}  // namespace cryptex::plugintest
