// `cryptex feed publish|revoke|show` as a vendor runs it (docs/FEED.md): the
// real binary, images and patches made with `cryptex build` and `mkpatch`,
// keys with `cryptex keygen`.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <nlohmann/json.hpp>
#include <string>

#include "exit_codes.h"
#include "test_util.h"

namespace cryptex {
namespace {

using namespace cli;  // kExit*
using Json = nlohmann::json;
using namespace test;  // TempDir, RunCryptex, Contains, ...

std::string Q(const std::string& s) { return test::ShellQuote(s); }

class FeedCliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(access(test::CryptexBin().c_str(), X_OK), 0) << test::CryptexBin();
    feed_ = work_.Join("feed");
    trust_ = work_.Join("trust");
    ASSERT_EQ(mkdir(feed_.c_str(), 0755), 0);
    ASSERT_EQ(mkdir(trust_.c_str(), 0700), 0);
    ASSERT_EQ(mkdir((feed_ + "/patches").c_str(), 0755), 0);
    for (const char* k : {"patch", "index-old", "index-new"}) Keygen(k);
    Must(test::RunCommand("cp " + Q(Key("patch") + ".pub") + " " + Q(trust_ + "/patch.pub")), "cp");
    for (int v = 0; v <= 1; ++v) {
      ASSERT_EQ(mkdir(work_.Join("v" + std::to_string(v)).c_str(), 0755), 0);
      test::WriteFile(work_.Join("v" + std::to_string(v) + "/hello.txt"),
                      "hello " + std::to_string(v) + "\n");
    }
    Must(RunCryptex("build " + Q(work_.Join("v0")) + " -o " + Q(feed_ + "/app.cryptex") +
                    " --key " + Q(Key("patch")) + " --name app --version 1.0 -q"),
         "build");
    Must(RunCryptex("mkpatch --from " + Q(feed_ + "/app.cryptex") + " --to " + Q(work_.Join("v1")) +
                    " -o " + Q(feed_ + "/patches/p1.cxpatch") + " --key " + Q(Key("patch")) +
                    " --id p1 --class relaunch --severity critical --cve CVE-2027-0001 "
                    "--cve CVE-2027-0002 --release-counter 2 --released-at 1800000000 --trust " +
                    Q(trust_) + " -q"),
         "mkpatch");
  }

  void Keygen(const std::string& name) {
    Must(RunCryptex("keygen -o " + Q(Key(name))), "keygen " + name);
  }
  std::string Key(const std::string& name) const { return work_.path() + "/" + name + ".key"; }
  std::string Pub(const std::string& name) const { return Key(name) + ".pub"; }
  std::string Index() const { return feed_ + "/index.cxfeed"; }

  static void Must(const CommandResult& r, const std::string& what) {
    ASSERT_EQ(r.exit_code, 0) << what << ": " << r.out << r.err;
  }

  CommandResult Publish(const std::string& extra = "") {
    return RunCryptex("feed publish " + Q(feed_) + " --key " + Q(Key("index-old")) + " --trust " +
                      Q(trust_) + " " + extra);
  }

  // `feed show --json` of the index, trusting `pub`; fails the test unless
  // it verifies.
  Json Show(const std::string& pub, const std::string& extra = "") {
    CommandResult r = test::RunCommandCapture(test::CryptexBin() + " feed show " + Q(feed_) +
                                              " --pubkey " + Q(pub) + " --json " + extra);
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return r.exit_code == 0 ? Json::parse(r.out) : Json();
  }

  TempDir work_{test::TmpfsDir()};
  std::string feed_, trust_;
};

TEST_F(FeedCliTest, PublishListsEveryFileWithItsManifest) {
  CommandResult r = Publish("--expires 2d --epoch 1000000000");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(Contains(r.out, Index() + ": version 1 (new feed), 1 patches, 1 base images"))
      << r.out;
  Json j = Show(Pub("index-old"));
  EXPECT_EQ(j["version"], 1);
  EXPECT_EQ(j["published"], 1000000000);
  EXPECT_EQ(j["expires"], 1000000000 + 2 * 86400);
  EXPECT_EQ(j["expired"], true);  // published in 2001
  ASSERT_EQ(j["patches"].size(), 1u);
  const Json& p = j["patches"][0];
  EXPECT_EQ(p["id"], "p1");
  EXPECT_EQ(p["line"], "app");
  EXPECT_EQ(p["file"], "patches/p1.cxpatch");
  EXPECT_EQ(p["severity"], "critical");
  EXPECT_EQ(p["cves"], Json::array({"CVE-2027-0001", "CVE-2027-0002"}));
  EXPECT_EQ(p["activation"], "relaunch");
  EXPECT_EQ(p["release_counter"], 2);
  EXPECT_EQ(p["released_at"], 1800000000);
  EXPECT_EQ(p["length"], test::FileSize(feed_ + "/patches/p1.cxpatch"));
  // The patch's base root is the base image's root, as `inspect` shows both.
  CommandResult base =
      RunCryptex("inspect " + Q(feed_ + "/app.cryptex") + " --json --trust " + Q(trust_));
  ASSERT_EQ(base.exit_code, 0);
  EXPECT_EQ(p["base_root"], Json::parse(base.out)["root_hash"]);
  ASSERT_EQ(j["bases"].size(), 1u);
  EXPECT_EQ(j["bases"][0]["root"], Json::parse(base.out)["root_hash"]);
  EXPECT_EQ(j["signed_by"].size(), 1u);
  // The text form names what a vendor checks.
  CommandResult text = RunCryptex("feed show " + Q(Index()) + " --pubkey " + Q(Pub("index-old")));
  ASSERT_EQ(text.exit_code, 0) << text.err;
  for (const char* want :
       {"version:     1", "app/p1", "severity critical", "CVE-2027-0001,CVE-2027-0002", "relaunch",
        "patches/p1.cxpatch", "app.cryptex", "EXPIRED"}) {
    EXPECT_TRUE(Contains(text.out, want)) << want << " in\n" << text.out;
  }
}

TEST_F(FeedCliTest, VersionGrowsAndARevocationSurvivesRepublishing) {
  ASSERT_EQ(Publish().exit_code, 0);
  ASSERT_EQ(Publish().exit_code, 0);
  EXPECT_EQ(Show(Pub("index-old"))["version"], 2);
  CommandResult rv =
      RunCryptex("feed revoke " + Q(feed_) + " p1 --line app --reason " + Q("breaks login") +
                 " --key " + Q(Key("index-old")) + " --trust " + Q(trust_));
  ASSERT_EQ(rv.exit_code, 0) << rv.err;
  EXPECT_TRUE(Contains(rv.out, "revoked p1 on line app")) << rv.out;
  EXPECT_TRUE(Contains(rv.out, "version 3 (was 2)")) << rv.out;
  EXPECT_FALSE(Contains(rv.err, "lists no patch")) << rv.err;
  ASSERT_EQ(Publish().exit_code, 0);
  Json j = Show(Pub("index-old"));
  EXPECT_EQ(j["version"], 4);
  ASSERT_EQ(j["revoked"].size(), 1u);
  EXPECT_EQ(j["revoked"][0]["id"], "p1");
  EXPECT_EQ(j["revoked"][0]["line"], "app");
  EXPECT_EQ(j["revoked"][0]["reason"], "breaks login");
  // Revoking it again: refused (exit 6), the index untouched.
  const std::string before = test::ReadFile(Index());
  CommandResult again = RunCryptex("feed revoke " + Q(feed_) + " p1 --line app --reason x --key " +
                                   Q(Key("index-old")) + " --trust " + Q(trust_));
  EXPECT_EQ(again.exit_code, kExitExists) << again.err;
  EXPECT_TRUE(Contains(again.err, "p1 is already revoked on line app")) << again.err;
  EXPECT_EQ(test::ReadFile(Index()), before);
  // A patch the feed does not list (withdrawn earlier, or a typo): revoked,
  // with a warning.
  CommandResult unlisted = RunCryptex("feed revoke " + Q(feed_) + " p9 --reason gone --key " +
                                      Q(Key("index-old")) + " --trust " + Q(trust_));
  EXPECT_EQ(unlisted.exit_code, 0) << unlisted.err;
  EXPECT_TRUE(Contains(unlisted.err, "warning: the feed lists no patch p9")) << unlisted.err;
  EXPECT_EQ(Show(Pub("index-old"))["revoked"].size(), 2u);
}

TEST_F(FeedCliTest, TamperedIndexFailsShow) {
  ASSERT_EQ(Publish().exit_code, 0);
  const std::string good = test::ReadFile(Index());
  const size_t payload = good.find("\n\n") + 2;
  // A byte of the payload, of the signature, and of the header.
  for (size_t at : {payload + 20, good.size() - 3, payload - 10, size_t{3}}) {
    std::string bad = good;
    bad[at] = bad[at] == '1' ? '2' : '1';
    test::WriteFile(Index(), bad);
    CommandResult r = RunCryptex("feed show " + Q(feed_) + " --pubkey " + Q(Pub("index-old")));
    EXPECT_EQ(r.exit_code, kExitIntegrity) << "byte " << at << ": " << r.err;
    EXPECT_TRUE(Contains(r.err, "cryptex feed: ")) << r.err;
    EXPECT_TRUE(Contains(r.err, Index())) << r.err;
    EXPECT_TRUE(r.out.empty()) << r.out;
  }
  // Signed by a key the reader does not trust.
  test::WriteFile(Index(), good);
  CommandResult r = RunCryptex("feed show " + Q(feed_) + " --pubkey " + Q(Pub("index-new")));
  EXPECT_EQ(r.exit_code, kExitIntegrity);
  EXPECT_TRUE(Contains(r.err, "signed only by unknown key")) << r.err;
}

TEST_F(FeedCliTest, KeyRotationByAnnouncement) {
  // 1. The rotation index: signed by the old and the new key, announcing
  //    the new one.
  CommandResult rot = RunCryptex("feed publish " + Q(feed_) + " --key " + Q(Key("index-old")) +
                                 " --key " + Q(Key("index-new")) + " --announce " +
                                 Q(Pub("index-new")) + " --trust " + Q(trust_));
  ASSERT_EQ(rot.exit_code, 0) << rot.err;
  Json j = Show(Pub("index-old"));
  ASSERT_EQ(j["keys"].size(), 1u);
  EXPECT_EQ(j["signed_by"].size(), 1u);  // only the old key is trusted here
  Json by_new = Show(Pub("index-new"));
  EXPECT_EQ(by_new["signed_by"], Json::array({j["keys"][0]["id"]}));
  const std::string rotation = work_.Join("rotation.cxfeed");
  ASSERT_EQ(test::RunCommand("cp " + Q(Index()) + " " + Q(rotation)).exit_code, 0);
  // 2. Later indexes: the new key only. A device that trusts the old key
  //    alone refuses it; one that saw the announcement accepts it.
  CommandResult next = RunCryptex("feed publish " + Q(feed_) + " --key " + Q(Key("index-new")) +
                                  " --trust " + Q(trust_));
  ASSERT_EQ(next.exit_code, 0) << next.err;
  CommandResult missed = RunCryptex("feed show " + Q(feed_) + " --pubkey " + Q(Pub("index-old")));
  EXPECT_EQ(missed.exit_code, kExitIntegrity) << missed.out;
  EXPECT_TRUE(Contains(missed.err, "signed only by unknown key")) << missed.err;
  Json seen = Show(Pub("index-old"), "--previous " + Q(rotation));
  EXPECT_EQ(seen["version"], 2);
  EXPECT_EQ(seen["signed_by"], Json::array({j["keys"][0]["id"]}));
  // A --previous index the trust does not verify lends no keys.
  CommandResult bad_prev = RunCryptex("feed show " + Q(feed_) + " --pubkey " + Q(Pub("patch")) +
                                      " --previous " + Q(rotation));
  EXPECT_EQ(bad_prev.exit_code, kExitIntegrity);
  EXPECT_TRUE(Contains(bad_prev.err, "--previous: " + rotation)) << bad_prev.err;
}

TEST_F(FeedCliTest, BadInputIsRefusedAndNothingIsWritten) {
  ASSERT_EQ(Publish().exit_code, 0);
  const std::string before = test::ReadFile(Index());
  struct Case {
    std::string args;
    int exit_code;
    std::string message;
  };
  const std::string key = " --key " + Q(Key("index-old"));
  const std::vector<Case> cases = {
      {"feed publish " + Q(feed_), kExitUsage, "an index key is required (--key)"},
      {"feed publish " + Q(feed_) + key + " --expires 7x", kExitUsage, "'7x' is not a duration"},
      {"feed publish " + Q(feed_) + key + " --expires 400d", kExitUsage, "from 1s to 366d"},
      {"feed publish " + Q(feed_) + key + " --epoch soon", kExitUsage, "--epoch must be"},
      {"feed publish " + Q(feed_) + key + " --force-version 0", kExitUsage, "--force-version"},
      {"feed publish " + Q(feed_) + key + " --json", kExitUsage,
       "--json is not an option of 'cryptex feed publish'"},
      {"feed publish " + Q(feed_) + key + " --announce " + Q(Key("index-new")), kExitUsage,
       "--announce"},
      {"feed publish " + Q(feed_ + "/nope") + key, kExitNotFound, feed_ + "/nope"},
      {"feed publish " + Q(feed_) + " --key " + Q(work_.Join("none.key")), kExitNotFound,
       work_.Join("none.key")},
      {"feed publish " + Q(feed_) + key + " --pubkey " + Q(Pub("index-new")), kExitIntegrity,
       feed_ + "/app.cryptex"},
      {"feed revoke " + Q(feed_) + " p1" + key, kExitUsage, "revoke needs --reason"},
      {"feed revoke " + Q(feed_) + key + " --reason x", kExitUsage, "expects DIR and a patch ID"},
      {"feed show " + Q(feed_) + key, kExitUsage, "--key is not an option of 'cryptex feed show'"},
      {"feed show " + Q(work_.Join("missing.cxfeed")) + " --pubkey " + Q(Pub("index-old")),
       kExitNotFound, work_.Join("missing.cxfeed")},
      {"feed frobnicate", kExitUsage, "unknown subcommand 'frobnicate'"},
      {"feed", kExitUsage, "expected publish, revoke or show"},
  };
  for (const auto& c : cases) {
    CommandResult r = RunCryptex(c.args);
    EXPECT_EQ(r.exit_code, c.exit_code) << c.args << ": " << r.err;
    EXPECT_TRUE(Contains(r.err, c.message)) << c.args << ": " << r.err;
    EXPECT_EQ(test::ReadFile(Index()), before) << c.args;
  }
  // A file that is not an image, named .cxpatch: refused naming it (exit 3).
  test::WriteFile(feed_ + "/patches/broken.cxpatch", std::string(50000, 'z'));
  CommandResult r = Publish();
  EXPECT_EQ(r.exit_code, kExitIntegrity) << r.err;
  EXPECT_TRUE(Contains(r.err, feed_ + "/patches/broken.cxpatch: not a cryptex image")) << r.err;
  EXPECT_EQ(test::ReadFile(Index()), before);
  EXPECT_EQ(access((Index() + ".tmp").c_str(), F_OK), -1);
}

TEST_F(FeedCliTest, HelpNamesEverySubcommand) {
  CommandResult r = RunCryptex("feed --help");
  ASSERT_EQ(r.exit_code, 0);
  for (const char* want :
       {"cryptex feed publish DIR", "cryptex feed revoke DIR ID", "cryptex feed show DIR|INDEX"}) {
    EXPECT_TRUE(Contains(r.out, want)) << r.out;
  }
  EXPECT_EQ(RunCryptex("feed publish --help").out, r.out);
  EXPECT_TRUE(Contains(RunCryptex("--help").out, "  feed ")) << "cryptex --help lists feed";
}

}  // namespace
}  // namespace cryptex
