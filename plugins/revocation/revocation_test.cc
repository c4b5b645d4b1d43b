// The revocation plugin (revocation.c), loaded from its built .so and called
// directly.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "plugin_test_util.h"

namespace cryptex::plugintest {
namespace {

struct Case : NamedCase {
  bool revoked;
  std::string reason;
  PatchState state;
  int32_t verdict;
  std::vector<std::string> reason_parts;
};

class RevocationDecide : public testing::TestWithParam<Case> {};

TEST_P(RevocationDecide, VerdictAndReason) {
  const Case& c = GetParam();
  PatchFacts patch;
  patch.id = "p1";
  patch.revoked = c.revoked;
  patch.revoked_reason = c.reason;
  patch.state = c.state;
  DeviceFacts device;
  Result r = Plugin().Decide(patch, device, {});
  ExpectDecided(r, c.verdict, 0, c.reason_parts);
}

const auto Av = PatchState::kAvailable;
const auto In = PatchState::kInstalled;
const auto Ac = PatchState::kActive;

INSTANTIATE_TEST_SUITE_P(
    Table, RevocationDecide,
    testing::Values(Case{"NotRevoked", false, "", Av, CX_VERDICT_INSTALL, {"install: not revoked"}},
                    Case{"NotRevokedActive", false, "", Ac, CX_VERDICT_INSTALL, {"not revoked"}},
                    Case{"RevokedAvailable",
                         true,
                         "breaks TLS renegotiation",
                         Av,
                         CX_VERDICT_REJECT,
                         {"reject: revoked by the vendor: breaks TLS renegotiation"}},
                    Case{"RevokedInstalled", true, "x", In, CX_VERDICT_REJECT, {"reject"}},
                    Case{"RevokedActive",
                         true,
                         "superseded by p2",
                         Ac,
                         CX_VERDICT_REVERT,
                         {"revert: revoked by the vendor: superseded by p2"}},
                    Case{"NoReasonGiven", true, "  ", Av, CX_VERDICT_REJECT, {"(no reason given)"}},
                    Case{"UnicodeReasonKept",
                         true,
                         "défaut — ошибка",
                         Av,
                         CX_VERDICT_REJECT,
                         {"défaut — ошибка"}},
                    Case{"HostileReasonSanitised",
                         true,
                         std::string("a\nb\x1b[2J\xc3", 9),
                         Av,
                         CX_VERDICT_REJECT,
                         {"a?b?[2J?"}},
                    Case{"HugeReasonCut",
                         true,
                         std::string(100000, 'r'),
                         Ac,
                         CX_VERDICT_REVERT,
                         {"rrrr...", "revert: revoked by the vendor: "}}),
    CaseName());

TEST(RevocationOptions, TakesNone) {
  EXPECT_EQ(Plugin().CheckOptions({}).rc, 0);
  Check check = Plugin().CheckOptions({{"strict", "yes"}});
  EXPECT_NE(check.rc, 0);
  EXPECT_NE(
      check.message.find("unknown key \"strict\" (accepted: none: this plugin takes no options)"),
      std::string::npos)
      << check.message;
  PatchFacts patch;
  DeviceFacts device;
  EXPECT_NE(Plugin().Decide(patch, device, {{"strict", "yes"}}).rc, 0);
}

TEST(RevocationReason, MultibyteReasonCutAtACharacterBoundary) {
  PatchFacts patch;
  patch.revoked = true;
  patch.revoked_reason = "ééééééééééééééééééééééééééééééééééééééééé";
  DeviceFacts device;
  // "reject: revoked by the vendor: " is 31 bytes; a cap of 34 falls inside
  // the second 2-byte character.
  Result r = Plugin().Decide(patch, device, {}, 34);
  EXPECT_EQ(r.reason, "reject: revoked by the vendor: é");
}

}  // namespace
}  // namespace cryptex::plugintest
