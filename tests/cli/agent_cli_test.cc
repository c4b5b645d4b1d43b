// The policy agent as administrators run it (docs/POLICY.md): the real
// `cryptex` binary, real stores, real plugins (plugins/ and the fixtures of
// policy/testdata) in a root-owned plugin directory, real cryptexfs mounts
// of a store line.
//
// Trees: v0 (the base), v1 (patch p1, relaunch class), v2 (patch p2 on p1).
// Each test gets a fresh store holding the base, a patch directory offering
// what it copies there, and its own cryptex.conf.
//
// Needs root, /dev/fuse and the build's cryptex, cryptexfs and plugins;
// skips otherwise, and FAILS instead of skipping when $CI is set.
#include <dirent.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "exit_codes.h"
#include "mount_harness.h"
#include "test_util.h"

#ifndef CRYPTEXFS_BIN
#error "CRYPTEXFS_BIN must name the cryptexfs binary"
#endif

namespace cryptex {
namespace {

using namespace cli;  // kExit*
using Json = nlohmann::json;
using namespace test;  // TempDir, RunCryptex, MountedType, ...

std::string Q(const std::string& s) { return test::ShellQuote(s); }

constexpr char kLine[] = "app";
constexpr int64_t kReleased = 1800000000;  // 2027-01-15: p1's release time

class AgentCliTest : public StoreSuite {
 protected:
  static void SetUpTestSuite() {
    const std::string key = SetUpStoreSuite("root-owned plugin directory, mounts", kLine);
    if (!skip_.empty()) return;
    auto mkpatch = [&](const std::string& id, int v, int counter, const std::string& on) {
      const std::string out = work_->Join(id + ".cxpatch");
      Must(RunCryptex("mkpatch --from " + Q(base_) + (on.empty() ? "" : " --on " + Q(on)) +
                      " --to " + Q(V(v)) + " -o " + Q(out) + " --key " + Q(key) + " --id " + id +
                      " --class relaunch --severity high --cve CVE-2027-100" + std::to_string(v) +
                      " --release-counter " + std::to_string(counter) + " --released-at " +
                      std::to_string(kReleased) + " --trust " + Q(trust_)),
           "mkpatch " + id);
      return out;
    };
    p1_ = mkpatch("p1", 1, 2, "");
    p2_ = mkpatch("p2", 2, 3, p1_);
    // A reboot-class p1.
    pr_ = work_->Join("pr.cxpatch");
    Must(
        RunCryptex("mkpatch --from " + Q(base_) + " --to " + Q(V(1)) + " -o " + Q(pr_) + " --key " +
                   Q(key) + " --id pr --class reboot --release-counter 2 --trust " + Q(trust_)),
        "mkpatch pr");
    // A patch of line app for another base (1.1): the store refuses it.
    const std::string other = work_->Join("other.cryptex");
    Must(RunCryptex("build " + Q(V(1)) + " -o " + Q(other) + " --key " + Q(key) + " --name " +
                    kLine + " --version 1.1"),
         "build other");
    px_ = work_->Join("px.cxpatch");
    Must(
        RunCryptex("mkpatch --from " + Q(other) + " --to " + Q(V(2)) + " -o " + Q(px_) + " --key " +
                   Q(key) + " --id px --class relaunch --release-counter 5 --trust " + Q(trust_)),
        "mkpatch px");
    // The plugin directory: root-owned, 0755, the shipped plugins and the
    // host's fault fixtures.
    plugins_ = work_->Join("plugins");
    mkdir(plugins_.c_str(), 0755);
    const std::string build = BuildDir();
    for (const char* p : {"auto", "defer", "health", "revocation", "approve"}) {
      CopyPlugin(build + "/plugins/lib/" + p + ".so");
    }
    for (const char* p : {"fixed", "segv", "loop"}) {
      CopyPlugin(build + "/policy/testdata/" + p + ".so");
    }
  }
  static void TearDownTestSuite() { TearDownStoreSuite(); }
  // A plugin missing from the build fails the tests that use it (their
  // votes are failed deferrals), not the others.
  static void CopyPlugin(const std::string& so) {
    if (access(so.c_str(), R_OK) != 0) return;
    InstallPlugin(so, plugins_, &error_);
  }

  void SetUp() override {
    SetUpStoreTest();
    if (IsSkipped() || HasFatalFailure()) return;
    offered_ = dir_ + "/offered";
    ASSERT_EQ(mkdir(offered_.c_str(), 0755), 0);
  }

  // Offers `patch` in the patch directory.
  void Offer(const std::string& patch) {
    ASSERT_EQ(test::RunCommand("cp " + Q(patch) + " " + Q(offered_ + "/")).exit_code, 0);
  }
  // Writes cryptex.conf: [cryptex] with the test's paths, `plugins`, then `rest`.
  void Conf(const std::string& plugins, const std::string& rest = "") {
    test::WriteFile(conf_, "[cryptex]\nstore = " + store_ + "\ntrust = " + trust_ +
                               "\nplugin_dir = " + plugins_ + "\npatch_dir = " + offered_ +
                               "\ndevice_bucket = 7\nplugin_timeout = 2s\nplugins = " + plugins +
                               "\n" + rest);
  }
  CommandResult Cx(const std::string& args) { return RunCryptex(args + " --config " + Q(conf_)); }
  CommandResult Agent(const std::string& extra = "") { return Cx("agent --once" + extra); }
  Json AgentJson() {
    const CommandResult r = Agent(" --json");
    EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
    return Json::parse(r.out, nullptr, false);
  }
  Json SimulateJson(const std::string& extra = "") {
    const CommandResult r = Cx("policy simulate --json" + extra);
    EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
    return Json::parse(r.out, nullptr, false);
  }
  Json History() {
    const CommandResult r = RunCryptex("history --json --store " + Q(store_));
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return Json::parse(r.out, nullptr, false);
  }
  // The history's records of `action` (e.g. "decide").
  std::vector<Json> Records(const std::string& action) {
    std::vector<Json> out;
    for (const Json& r : History()) {
      if (r.value("action", "") == action) out.push_back(r);
    }
    return out;
  }
  Json Status() {
    const CommandResult r =
        RunCryptex("status --json --store " + Q(store_) + " --trust " + Q(trust_));
    EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
    Json doc = Json::parse(r.out, nullptr, false);
    return doc.is_object() && !doc["lines"].empty() ? doc["lines"][0] : Json();
  }
  std::vector<std::string> Active() { return Status()["active"].get<std::vector<std::string>>(); }

  static inline std::string p1_, p2_, pr_, px_, plugins_;
  std::string offered_;
};

// ---- auto: installs and activates ------------------------------------------------

TEST_F(AgentCliTest, AutoInstallsAndActivatesAndRecordsWhy) {
  Offer(p1_);
  Conf("auto");
  const CommandResult r = Agent();
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  // One journal line per decision.
  EXPECT_TRUE(Contains(r.out, "cryptex-agent: app p1: install -> install+activate (auto: install"))
      << r.out;
  EXPECT_EQ(Active(), std::vector<std::string>{"p1"});
  // decide (with the vote), then the store's install and activate, all by the chain.
  const Json h = History();
  ASSERT_EQ(h.size(), 4u) << h.dump(1);
  EXPECT_EQ(h[1]["action"], "decide");
  EXPECT_EQ(h[1]["patch"], "p1");
  EXPECT_EQ(h[1]["who"], "policy:auto");
  EXPECT_EQ(h[1]["verdict"], "install");
  ASSERT_EQ(h[1]["votes"].size(), 1u);
  EXPECT_EQ(h[1]["votes"][0]["plugin"], "auto");
  EXPECT_EQ(h[1]["votes"][0]["verdict"], "install");
  EXPECT_EQ(h[2]["action"], "install");
  EXPECT_EQ(h[2]["who"], "policy:auto");
  EXPECT_EQ(h[3]["action"], "activate");
  // The next run asks again (p1 is active: install = keep) and records nothing.
  const CommandResult again = Agent();
  ASSERT_EQ(again.exit_code, 0) << again.err;
  EXPECT_TRUE(Contains(again.out, "cryptex-agent: app p1: install (auto:")) << again.out;
  EXPECT_EQ(History().size(), 4u);
  // The history's hash chain holds with the new fields.
  EXPECT_EQ(RunCryptex("history --verify --store " + Q(store_)).exit_code, 0);
}

// ---- defer: why and until when, recorded once ---------------------------------------

TEST_F(AgentCliTest, DeferPluginDefersAndHistorySaysWhyAndWhen) {
  Offer(p1_);
  Conf("auto, defer", "[plugin.defer]\ndays = 3000\n");
  // Released in 2027, held 3000 days: deferred until 2035.
  ASSERT_EQ(Agent().exit_code, 0);
  EXPECT_TRUE(Active().empty());
  std::vector<Json> d = Records("decide");
  ASSERT_EQ(d.size(), 1u);
  EXPECT_EQ(d[0]["verdict"], "defer");
  EXPECT_EQ(d[0]["who"], "policy:auto,defer");
  ASSERT_EQ(d[0]["votes"].size(), 2u);
  EXPECT_EQ(d[0]["votes"][0]["verdict"], "install");
  EXPECT_EQ(d[0]["votes"][1]["plugin"], "defer");
  EXPECT_EQ(d[0]["votes"][1]["verdict"], "defer");
  const Json sim = SimulateJson(" --at @" + std::to_string(kReleased));
  ASSERT_EQ(sim["decisions"].size(), 1u);
  const std::string due_iso = sim["decisions"][0]["until"];
  EXPECT_EQ(d[0]["until"], due_iso);
  EXPECT_TRUE(Contains(d[0]["reason"], "defer")) << d[0].dump();
  // status shows the deferral, its due date and reason.
  const Json st = Status();
  ASSERT_EQ(st["pending"].size(), 1u) << st.dump(1);
  EXPECT_EQ(st["pending"][0]["patch"], "p1");
  EXPECT_EQ(st["pending"][0]["verdict"], "defer");
  EXPECT_EQ(st["pending"][0]["until"], due_iso);
  const CommandResult text = RunCryptex("status --store " + Q(store_) + " --trust " + Q(trust_));
  EXPECT_TRUE(Contains(text.out, "pending p1 (")) << text.out;
  EXPECT_TRUE(Contains(text.out, "defer until " + due_iso)) << text.out;
  // Hourly runs deferring the same patch do not grow the history.
  const size_t n = History().size();
  for (int i = 0; i < 3; ++i) ASSERT_EQ(Agent().exit_code, 0);
  EXPECT_EQ(History().size(), n);
  // A changed decision (another hold: another due time) is recorded.
  Conf("auto, defer", "[plugin.defer]\ndays = 3500\n");
  ASSERT_EQ(Agent().exit_code, 0);
  d = Records("decide");
  ASSERT_EQ(d.size(), 2u);
  EXPECT_NE(d[1]["until"], d[0]["until"]);
}

TEST_F(AgentCliTest, AReasonThatStartsWithItsVerdictSaysTheVerdictOnce) {
  // The shipped plugins start their reasons with their verdict ("install:
  // not revoked"); the summary already names it after the plugin.
  Offer(p1_);
  Conf("auto, fixed", "[plugin.fixed]\nverdict = reject\nreason = reject: not for this fleet\n");
  const CommandResult r = Agent();
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::vector<Json> d = Records("decide");
  ASSERT_EQ(d.size(), 1u);
  EXPECT_TRUE(Contains(d[0]["reason"], "fixed: reject -- not for this fleet")) << d[0].dump();
  EXPECT_FALSE(Contains(d[0]["reason"], "reject -- reject:")) << d[0].dump();
  EXPECT_TRUE(Contains(r.out, "fixed: reject -- not for this fleet")) << r.out;
  // The vote itself keeps the plugin's words.
  EXPECT_EQ(d[0]["votes"][1]["reason"], "reject: not for this fleet");
}

// ---- the chain: the most conservative vote wins; each vote recorded ----------------

TEST_F(AgentCliTest, ChainPrecedenceIsRecordedPerPlugin) {
  Offer(p1_);
  Conf("auto, fixed", "[plugin.fixed]\nverdict = reject\nreason = not for this fleet\n");
  const CommandResult r = Agent();
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(Contains(r.out, "app p1: reject")) << r.out;
  EXPECT_TRUE(Active().empty());
  std::vector<Json> d = Records("decide");
  ASSERT_EQ(d.size(), 1u);
  EXPECT_EQ(d[0]["verdict"], "reject");
  ASSERT_EQ(d[0]["votes"].size(), 2u);
  EXPECT_EQ(d[0]["votes"][0]["plugin"], "auto");
  EXPECT_EQ(d[0]["votes"][0]["verdict"], "install");
  EXPECT_EQ(d[0]["votes"][1]["plugin"], "fixed");
  EXPECT_EQ(d[0]["votes"][1]["verdict"], "reject");
  EXPECT_EQ(d[0]["votes"][1]["reason"], "not for this fleet");
  EXPECT_TRUE(Contains(d[0]["reason"], "fixed: reject -- not for this fleet")) << d[0].dump();
  // A rejection holds: not asked again, not recorded again...
  const CommandResult held = Agent();
  EXPECT_TRUE(Contains(held.out, "app p1: reject (held)")) << held.out;
  EXPECT_EQ(Records("decide").size(), 1u);
  // ... until an administrator approves the patch: then it is asked again.
  const CommandResult a = Cx("approve p1 --reason 'tested in the lab'");
  ASSERT_EQ(a.exit_code, 0) << a.err;
  ASSERT_EQ(Records("approve").size(), 1u);
  EXPECT_EQ(Records("approve")[0]["reason"], "tested in the lab");
  const CommandResult asked = Agent();
  EXPECT_TRUE(Contains(asked.out, "app p1: reject (auto:")) << asked.out;
  EXPECT_FALSE(Contains(asked.out, "(held)")) << asked.out;
  // revert beats reject and install: an active patch is reverted.
  Conf("auto, fixed", "[plugin.fixed]\nverdict = install\n");
  ASSERT_EQ(Agent().exit_code, 0);
  ASSERT_EQ(Active(), std::vector<std::string>{"p1"});
  Conf("auto, fixed", "[plugin.fixed]\nverdict = revert\nreason = bad fix\n");
  const CommandResult rv = Agent();
  ASSERT_EQ(rv.exit_code, 0) << rv.err;
  EXPECT_TRUE(Contains(rv.out, "app p1: revert -> revert")) << rv.out;
  EXPECT_TRUE(Active().empty());
  ASSERT_FALSE(Records("revert").empty());
  EXPECT_EQ(Records("revert").back()["who"], "policy:auto,fixed");
}

// ---- approvals feed patch.approved --------------------------------------------------

TEST_F(AgentCliTest, ApprovePluginInstallsOnlyApprovedPatches) {
  Offer(p1_);
  Conf("approve");
  ASSERT_EQ(Agent().exit_code, 0);
  EXPECT_TRUE(Active().empty());
  EXPECT_EQ(Cx("approve nosuch").exit_code, kExitNotFound);
  ASSERT_EQ(Cx("approve p1").exit_code, 0);
  ASSERT_EQ(Agent().exit_code, 0);
  EXPECT_EQ(Active(), std::vector<std::string>{"p1"});
}

// ---- simulate: what agent --once then does, changing nothing --------------------------

TEST_F(AgentCliTest, SimulateChangesNothingAndAgreesWithTheAgent) {
  Offer(p1_);
  Offer(p2_);  // requires p1: installable once p1 is, in the same run
  Conf("auto, defer", "[plugin.defer]\ndays = 3000\nimmediate = high\n");
  const auto before = FilesUnder(store_);
  const Json sim = SimulateJson();
  const CommandResult text = Cx("policy simulate");
  EXPECT_EQ(text.exit_code, 0) << text.err;
  EXPECT_TRUE(Contains(text.out, "app p1: install -> install+activate")) << text.out;
  EXPECT_EQ(FilesUnder(store_), before) << "simulate changed the store";
  const Json run = AgentJson();
  auto summary = [](const Json& doc) {
    std::vector<std::string> out;
    for (const Json& d : doc["decisions"]) {
      out.push_back(d["line"].get<std::string>() + " " + d["patch"].get<std::string>() + " " +
                    d["verdict"].get<std::string>() + " " + d["action"].get<std::string>());
    }
    return out;
  };
  EXPECT_EQ(summary(sim), (std::vector<std::string>{"app p1 install install+activate",
                                                    "app p2 install install+activate"}));
  EXPECT_EQ(summary(run), summary(sim));
  EXPECT_EQ(Active(), (std::vector<std::string>{"p1", "p2"}));
  // --at: a time before the release defers under a plain hold.
  Conf("auto, defer", "[plugin.defer]\ndays = 10\n");
  const Json early = SimulateJson(" --at 2027-01-15T00:00:00Z");
  ASSERT_EQ(early["decisions"].size(), 2u);
  EXPECT_EQ(early["at"], "2027-01-15T00:00:00Z");
  EXPECT_EQ(Cx("policy simulate --at yesterday").exit_code, kExitUsage);
}

// ---- plugins that fail: the agent survives, defers, records it -----------------------

TEST_F(AgentCliTest, FailingPluginsDeferAndAreRecorded) {
  Offer(p1_);
  for (const std::string bad : {"segv", "loop", "missing"}) {
    SCOPED_TRACE(bad);
    Conf("auto, " + bad);
    const CommandResult r = Agent();
    ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
    EXPECT_TRUE(Contains(r.out, "app p1: defer")) << r.out;
    EXPECT_TRUE(Active().empty());
    const std::vector<Json> d = Records("decide");
    ASSERT_FALSE(d.empty());
    const Json& last = d.back();
    EXPECT_EQ(last["verdict"], "defer");
    ASSERT_EQ(last["votes"].size(), 2u);
    EXPECT_EQ(last["votes"][1]["plugin"], bad);
    EXPECT_EQ(last["votes"][1]["failed"], true) << last.dump();
    EXPECT_FALSE(last["votes"][1]["reason"].get<std::string>().empty());
  }
}

// ---- config errors: file, line, key; nothing changed ----------------------------------

TEST_F(AgentCliTest, ConfigErrorsNameFileLineKeyAndChangeNothing) {
  Offer(p1_);
  const auto before = FilesUnder(store_);
  struct Case {
    std::string rest;
    std::string want;
  };
  const std::vector<Case> cases = {
      {"bogus = 1\n", ":9: [cryptex] bogus: unknown key"},
      {"[plugin.defer]\ndays = forever\n", ":9: [plugin.defer] "},  // refused by the plugin
      {"[health.web]\ntimeout = 1s\n", ":9: [health.web] command: missing"},
      {"[plugins]\n", ":9: [plugins]: unknown section"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.rest);
    Conf("auto, defer", c.rest);
    for (const std::string cmd : {"agent --once", "policy simulate", "approve p1"}) {
      const CommandResult r = Cx(cmd);
      EXPECT_EQ(r.exit_code, kExitUsage) << cmd << ": " << r.out << r.err;
      EXPECT_TRUE(Contains(r.err, conf_)) << r.err;
      EXPECT_TRUE(Contains(r.err, c.want)) << r.err;
    }
    EXPECT_EQ(FilesUnder(store_), before);
  }
  EXPECT_EQ(RunCryptex("agent --once --config " + Q(dir_ + "/none.conf")).exit_code, kExitNotFound);
  EXPECT_EQ(RunCryptex("agent --config " + Q(conf_)).exit_code, kExitUsage);  // no --once
}

// ---- offered files that do not verify ------------------------------------------------

TEST_F(AgentCliTest, UnverifiedOfferedFileIsRefusedOnceAndNeverOffered) {
  Offer(p1_);
  test::FlipByte(offered_ + "/p1.cxpatch", 100);
  Conf("auto");
  const CommandResult r = Agent();
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(Contains(r.out, "cryptex-agent: refused")) << r.out;
  EXPECT_FALSE(Contains(r.out, "install")) << r.out;
  EXPECT_TRUE(Active().empty());
  ASSERT_EQ(Records("refuse").size(), 1u);
  EXPECT_TRUE(Contains(Records("refuse")[0]["reason"], "p1.cxpatch"));
  ASSERT_EQ(Agent().exit_code, 0);
  EXPECT_EQ(Records("refuse").size(), 1u);  // recorded once
}

// ---- a patch the store refuses: recorded once, not retried every run -------------

TEST_F(AgentCliTest, RefusedInstallIsNotRetriedUntilSomethingChanges) {
  Offer(px_);
  Conf("auto");
  const CommandResult r = Agent();
  EXPECT_EQ(r.exit_code, kExitError) << r.out << r.err;
  EXPECT_TRUE(Contains(r.out, "app px: install -> install+activate")) << r.out;
  EXPECT_TRUE(Contains(r.out, "FAILED")) << r.out;
  ASSERT_EQ(Records("refuse").size(), 1u);  // the store's own record of why
  const size_t n = History().size();
  for (int i = 0; i < 2; ++i) {
    const CommandResult again = Agent();
    EXPECT_EQ(again.exit_code, kExitError);
    EXPECT_TRUE(Contains(again.out, "not retried")) << again.out;
  }
  EXPECT_EQ(History().size(), n);
  // A new file (here: the same bytes rewritten) is tried again.
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  ASSERT_EQ(test::RunCommand("touch " + Q(offered_ + "/px.cxpatch")).exit_code, 0);
  EXPECT_EQ(Agent().exit_code, kExitError);
  EXPECT_EQ(Records("refuse").size(), 2u);
}

// ---- reboot-class patches: activated, pending until the next mount -----------------

TEST_F(AgentCliTest, StatusShowsRebootClassPatchPending) {
  Offer(pr_);
  Conf("auto");
  ASSERT_EQ(Agent().exit_code, 0);
  EXPECT_EQ(Active(), std::vector<std::string>{"pr"});
  const Json st = Status();
  ASSERT_EQ(st["reboot_pending"].size(), 1u) << st.dump(1);
  EXPECT_EQ(st["reboot_pending"][0]["patch"], "pr");
  const CommandResult text = RunCryptex("status --store " + Q(store_) + " --trust " + Q(trust_));
  EXPECT_TRUE(Contains(text.out, "reboot pending: pr (reboot class")) << text.out;
}

// ---- the local revocation flag -----------------------------------------------------------

TEST_F(AgentCliTest, LocalRevocationFlagRevertsThroughTheRevocationPlugin) {
  Offer(p1_);
  Conf("auto, revocation");
  ASSERT_EQ(Agent().exit_code, 0);
  ASSERT_EQ(Active(), std::vector<std::string>{"p1"});
  test::WriteFile(offered_ + "/p1.revoked", "breaks logins\n");
  const CommandResult r = Agent();
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(Contains(r.out, "app p1: revert -> revert")) << r.out;
  EXPECT_TRUE(Contains(r.out, "breaks logins")) << r.out;
  EXPECT_TRUE(Active().empty());
}

// ---- end to end on a real mount ------------------------------------------------------------

TEST_F(AgentCliTest, MountedLineServesWhatTheAgentInstallsAndHealthReverts) {
  const std::string mnt = dir_ + "/mnt";
  ASSERT_TRUE(Mount(mnt));
  EXPECT_EQ(test::ReadFile(mnt + "/hello.txt"), "hello base\n");
  Offer(p1_);
  Conf("auto, health", "[plugin.health]\nfailures = 1\n");
  const CommandResult r = Agent();
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_TRUE(Contains(r.out, "app p1: install -> install+activate")) << r.out;
  // The mount serves the patch as soon as the agent returns.
  EXPECT_EQ(test::ReadFile(mnt + "/hello.txt"), "hello p1\n");
  // A failing health check: the health plugin reverts p1, the mount serves the base.
  Conf("auto, health", "[plugin.health]\nfailures = 1\n[health.web]\ncommand = false\n");
  std::this_thread::sleep_for(std::chrono::milliseconds(1100));  // a result after the activation
  const CommandResult h = Agent();
  ASSERT_EQ(h.exit_code, 0) << h.out << h.err;
  EXPECT_TRUE(Contains(h.out, "app p1: revert -> revert (auto: install")) << h.out;
  EXPECT_EQ(test::ReadFile(mnt + "/hello.txt"), "hello base\n");
  EXPECT_TRUE(Active().empty());
  const std::vector<Json> d = Records("decide");
  ASSERT_FALSE(d.empty());
  EXPECT_EQ(d.back()["verdict"], "revert");
  EXPECT_EQ(d.back()["votes"][1]["plugin"], "health");
  // A health check that hangs is killed at its timeout and counts as failed.
  Conf("auto", "[cryptex]\n[health.slow]\ncommand = sleep 30\ntimeout = 200ms\n");
  const auto t0 = std::chrono::steady_clock::now();
  const CommandResult s = Agent(" --json");
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(10));
  ASSERT_EQ(s.exit_code, 0) << s.err;
  const Json doc = Json::parse(s.out, nullptr, false);
  ASSERT_EQ(doc["health"].size(), 1u) << s.out;
  EXPECT_EQ(doc["health"][0]["ok"], false);
}

}  // namespace
}  // namespace cryptex
