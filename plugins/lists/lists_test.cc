// The lists plugin (lists.c), loaded from its built .so and called directly.
#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

#include "plugin_test_util.h"

namespace cryptex::plugintest {
namespace {

struct Case : NamedCase {
  Options options;
  std::string id;
  std::string line;
  std::vector<std::string> cves;
  uint32_t level;
  PatchState state;
  int32_t verdict;
  std::vector<std::string> reason_parts;
};

class ListsDecide : public testing::TestWithParam<Case> {};

TEST_P(ListsDecide, VerdictAndReason) {
  const Case& c = GetParam();
  PatchFacts patch;
  patch.id = c.id;
  patch.line = c.line;
  patch.cves = c.cves;
  patch.level = c.level;
  patch.state = c.state;
  DeviceFacts device;
  device.now = 1800000000;
  Result r = Plugin().Decide(patch, device, c.options);
  ExpectDecided(r, c.verdict, 0, c.reason_parts);
}

const Options kDeny = {
    {"deny_ids", "bad-1, bad-2"}, {"deny_cves", "CVE-2026-0001"}, {"deny_ids", "bad-3"}};
const Options kAllow = {{"allow_ids", "good-1"}, {"allow_cves", "cve-2026-1234"}};
const Options kAll = {{"deny_ids", "p1"},
                      {"max_level", "3"},
                      {"pin_lines", "db, web"},
                      {"allow_ids", "p2,p3,p4"},
                      {"deny_cves", "CVE-2026-9999"}};
const auto Av = PatchState::kAvailable;
const auto Ac = PatchState::kActive;
const auto In = PatchState::kInstalled;
const auto I = CX_VERDICT_INSTALL;
const auto D = CX_VERDICT_DEFER;
const auto Rj = CX_VERDICT_REJECT;
const auto Rv = CX_VERDICT_REVERT;

INSTANTIATE_TEST_SUITE_P(
    Table, ListsDecide,
    testing::Values(
        Case{"NoOptionsInstalls", {}, "p1", "web", {}, 1, Av, I, {"install: not denied"}},
        Case{"DeniedId",
             kDeny,
             "bad-2",
             "web",
             {},
             1,
             Av,
             Rj,
             {"reject: patch bad-2 is in deny_ids"}},
        Case{"DeniedIdFromRepeatedKey", kDeny, "bad-3", "web", {}, 1, Av, Rj, {"deny_ids"}},
        Case{"DeniedIdInstalledNotActive", kDeny, "bad-1", "web", {}, 1, In, Rj, {"reject"}},
        Case{"DeniedIdActiveReverts",
             kDeny,
             "bad-1",
             "web",
             {},
             1,
             Ac,
             Rv,
             {"revert: patch bad-1 is in deny_ids"}},
        Case{"DeniedCveAnyCase",
             kDeny,
             "p9",
             "web",
             {"CVE-2026-5", "cve-2026-0001"},
             1,
             Av,
             Rj,
             {"reject: it fixes cve-2026-0001, which is in deny_cves"}},
        Case{"DeniedCveActiveReverts", kDeny, "p9", "web", {"CVE-2026-0001"}, 1, Ac, Rv, {}},
        Case{"IdIsExactNotPrefix", kDeny, "bad-10", "web", {}, 1, Av, I, {}},
        Case{"IdIsCaseSensitive", kDeny, "BAD-1", "web", {}, 1, Av, I, {}},
        Case{"AllowedId",
             kAllow,
             "good-1",
             "web",
             {},
             1,
             Av,
             I,
             {"install: patch good-1 is in allow_ids"}},
        Case{"AllowedCve",
             kAllow,
             "p5",
             "web",
             {"CVE-2026-1234"},
             1,
             Av,
             I,
             {"install: it fixes CVE-2026-1234, which is in allow_cves"}},
        Case{"NotAllowedHeld",
             kAllow,
             "p5",
             "web",
             {"CVE-2026-4321"},
             1,
             Av,
             D,
             {"defer: patch p5 is in no allow list (allow_ids, allow_cves)"}},
        Case{"NotAllowedActiveStays", kAllow, "p5", "web", {}, 1, Ac, I, {"an active patch stays"}},
        Case{"PinnedLineHeld",
             kAll,
             "p2",
             "db",
             {},
             1,
             Av,
             D,
             {"defer: line db is pinned (pin_lines)"}},
        Case{"PinnedLineActiveStays", kAll, "p2", "web", {}, 1, Ac, I, {"is pinned"}},
        Case{"LevelAtMax", kAll, "p3", "app", {}, 3, Av, I, {"install: patch p3 is in allow_ids"}},
        Case{"LevelAboveMaxRejected",
             kAll,
             "p3",
             "app",
             {},
             4,
             Av,
             Rj,
             {"reject: level 4 of line app exceeds max_level=3"}},
        Case{"LevelAboveMaxActiveReverts", kAll, "p3", "app", {}, 4, Ac, Rv, {"revert: level 4"}},
        Case{"LevelUnknownHeld", kAll, "p3", "app", {}, 0, Av, D, {"patch level unknown"}},
        Case{"DenyBeatsAllow", kAll, "p4", "app", {"CVE-2026-9999"}, 1, Av, Rj, {"deny_cves"}},
        Case{"DenyBeatsPin", kAll, "p1", "db", {}, 1, Ac, Rv, {"deny_ids"}},
        Case{"MaxLevelBeatsPin", kAll, "p2", "db", {}, 9, Av, Rj, {"max_level"}},
        Case{"LevelWithinMaxReason",
             {{"max_level", "5"}},
             "p1",
             "web",
             {},
             5,
             Av,
             I,
             {"level 5 within max_level=5"}},
        Case{"HostileIdInReason",
             {{"allow_ids", "x"}},
             std::string("p\n\x1b[31m\xff", 8),
             "web",
             {},
             1,
             Av,
             D,
             {"patch p??[31m? is in no allow list"}}),
    CaseName());

TEST(ListsDecide, HugeListsAreWalked) {
  std::string ids;
  for (int i = 0; i < 20000; i++) ids += "id-" + std::to_string(i) + ",";
  ids += "last";
  PatchFacts patch;
  patch.id = "last";
  DeviceFacts device;
  Options options = {{"deny_ids", ids}};
  ASSERT_EQ(Plugin().CheckOptions(options).rc, 0);
  Result r = Plugin().Decide(patch, device, options);
  EXPECT_EQ(r.verdict, CX_VERDICT_REJECT) << r.reason;
  patch.id = "id-19999x";
  EXPECT_EQ(Plugin().Decide(patch, device, options).verdict, CX_VERDICT_INSTALL);
}

class ListsRefuses : public testing::TestWithParam<BadOptions> {};

TEST_P(ListsRefuses, NamingTheKeyAndForm) {
  PatchFacts patch;
  DeviceFacts device;
  ExpectRefused(GetParam(), patch, device);
}

INSTANTIATE_TEST_SUITE_P(
    Table, ListsRefuses,
    testing::Values(
        BadOptions{"EmptyDenyIds",
                   {{"deny_ids", ""}},
                   {"deny_ids: \"\" is not a patch id", "deny_ids = NAME[,NAME...]"}},
        BadOptions{"EmptyItem", {{"allow_ids", "a,,b"}}, {"allow_ids: \"\" is not a patch id"}},
        BadOptions{"IdWithSpace", {{"deny_ids", "a b"}}, {"deny_ids: \"a b\""}},
        BadOptions{"IdDotFirst", {{"deny_ids", ".hidden"}}, {"deny_ids: \".hidden\""}},
        BadOptions{
            "IdTooLong", {{"deny_ids", std::string(129, 'a')}}, {"deny_ids: \"aaa", "...\""}},
        BadOptions{"BadCve",
                   {{"deny_cves", "CVE-26-1"}},
                   {"deny_cves: \"CVE-26-1\" is not a CVE id", "CVE-YYYY-NNNN"}},
        BadOptions{
            "CveShortNumber", {{"allow_cves", "CVE-2026-123"}}, {"allow_cves: \"CVE-2026-123\""}},
        BadOptions{
            "BadLine", {{"pin_lines", "web/../x"}}, {"pin_lines: \"web/../x\" is not a line name"}},
        BadOptions{
            "MaxLevelZero", {{"max_level", "0"}}, {"max_level: \"0\"", "max_level = N, N from 1"}},
        BadOptions{"MaxLevelHuge", {{"max_level", "4294967296"}}, {"max_level: \"4294967296\""}},
        BadOptions{"MaxLevelEmpty", {{"max_level", ""}}, {"max_level: \"\""}},
        BadOptions{"MaxLevelRepeated",
                   {{"max_level", "1"}, {"max_level", "2"}},
                   {"max_level: given more than once"}},
        BadOptions{"PinSingular", {{"pin", "web"}}, {"unknown key \"pin\"", "pin_lines"}}),
    CaseName());

// A host may pass an empty value as {NULL, 0}: still an empty value, refused
// -- never an empty allow list that would hold every patch.
TEST(ListsOptions, NullEmptyValueRefused) {
  for (const char* key : {"deny_ids", "allow_ids", "allow_cves", "pin_lines", "max_level"}) {
    cx_option option{{key, strlen(key)}, {nullptr, 0}};
    char err[256];
    size_t err_len = 0;
    EXPECT_NE(Plugin().table()->check_options(&option, 1, err, sizeof err, &err_len), 0) << key;
    EXPECT_NE(std::string(err, err_len).find(std::string(key) + ": \"\""), std::string::npos)
        << std::string(err, err_len);
  }
}

TEST(ListsOptions, AcceptedFormsPass) {
  EXPECT_EQ(Plugin().CheckOptions(kDeny).rc, 0);
  EXPECT_EQ(Plugin().CheckOptions(kAll).rc, 0);
  EXPECT_EQ(
      Plugin().CheckOptions({{"max_level", "4294967295"}, {"allow_cves", "CVE-2026-1234567"}}).rc,
      0);
}

}  // namespace
}  // namespace cryptex::plugintest
