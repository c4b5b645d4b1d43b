// The policy agent pulling from a signed feed (docs/FEED.md, "Pulling
// (device side)"), end to end: the real `cryptex` binary, real stores, real
// plugins, a real cryptexfs mount, nginx (Debian's) serving the feed over
// HTTPS on 127.0.0.1 with a test CA, and a hostile loopback server for what
// nginx will not do. Every attack leaves the store's state file, history and
// patch files byte for byte as they were, is recorded in the feed's state,
// and the agent recovers once the server is fixed.
//
// Trees: v0 (the base), v1 (patch p1), v2 (patch p2 on p1); pr is another
// validly signed patch of the same base (the mix-and-match case). Index
// files are signed in-process with the index key (feed/index.h), the
// patches with the vendor key the store trusts.
//
// Needs root, /dev/fuse, nginx and python3; skips otherwise, and FAILS
// instead of skipping when $CI is set. No address outside 127.0.0.1.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "client.h"
#include "durable.h"
#include "exit_codes.h"
#include "image.h"
#include "index.h"
#include "loopback.h"
#include "mount_harness.h"
#include "store.h"
#include "test_util.h"

#ifndef CRYPTEXFS_BIN
#error "CRYPTEXFS_BIN must name the cryptexfs binary"
#endif

namespace cryptex {
namespace {

using feed::FeedPatch;
using feed::Index;
using feed::testing::HostileServer;
using feed::testing::Nginx;
using feed::testing::TestCa;
using namespace test;  // TempDir, RunCryptex, MountedType, ...
using Json = nlohmann::json;

std::string Q(const std::string& s) { return test::ShellQuote(s); }

constexpr char kLine[] = "app";
constexpr int64_t kReleased = 1800000000;  // 2027-01-15: the patches' release time
constexpr int64_t kDay = 86400;
constexpr int64_t kNow = kReleased + 3600;  // the decision time of most runs

// What a refusal must leave alone: the store's state file, its history and
// every file of its lines (bases, patches, trees), byte for byte.
std::map<std::string, std::string> StoreBytes(const std::string& store) {
  std::map<std::string, std::string> out = FilesUnder(store + "/lines");
  for (const char* f : {"state", "history"}) out[f] = test::ReadFile(store + "/" + f);
  return out;
}

class FeedAgentTest : public StoreSuite {
 protected:
  static void SetUpTestSuite() {
    const std::string key = SetUpStoreSuite("root-owned plugin directory, mounts", kLine);
    if (!skip_.empty()) return;
    feed_trust_ = work_->Join("feed-trust");
    mkdir(feed_trust_.c_str(), 0755);
    index_key_ = LoadKey(work_->Join("index.key"), feed_trust_ + "/index.pub");
    rogue_key_ = LoadKey(work_->Join("rogue.key"), "");
    auto mkpatch = [&](const std::string& id, int v, int counter, const std::string& on,
                       const std::string& cls) {
      const std::string out = work_->Join(id + ".cxpatch");
      Must(RunCryptex("mkpatch --from " + Q(base_) + (on.empty() ? "" : " --on " + Q(on)) +
                      " --to " + Q(V(v)) + " -o " + Q(out) + " --key " + Q(key) + " --id " + id +
                      " --class " + cls + " --severity high --cve CVE-2027-100" +
                      std::to_string(v) + " --release-counter " + std::to_string(counter) +
                      " --released-at " + std::to_string(kReleased) + " --trust " + Q(trust_)),
           "mkpatch " + id);
      return out;
    };
    p1_ = mkpatch("p1", 1, 2, "", "relaunch");
    p2_ = mkpatch("p2", 2, 3, p1_, "relaunch");
    pr_ = mkpatch("pr", 1, 2, "", "reboot");
    // A large patch (3 MiB of new bytes): the progress bar's case.
    mkdir(V(3).c_str(), 0755);
    Must(test::RunCommand("cp -a " + Q(V(0) + "/.") + " " + Q(V(3))), "cp v3");
    test::WriteFile(V(3) + "/big.bin", test::RandomBytes(3 << 20, 3));
    pbig_ = mkpatch("pbig", 3, 2, "", "relaunch");
    plugins_ = work_->Join("plugins");
    mkdir(plugins_.c_str(), 0755);
    const std::string build = BuildDir();
    for (const char* p : {"auto", "revocation", "rollout", "approve"}) {
      InstallPlugin(build + "/plugins/lib/" + p + ".so", plugins_, &error_);
    }
    const std::string ca_dir = work_->Join("ca");
    mkdir(ca_dir.c_str(), 0755);
    auto ca = TestCa::Create(ca_dir);
    if (!ca.ok()) {
      error_ = ca.status().ToString();
      return;
    }
    ca_ = new TestCa(std::move(*ca));
  }
  static void TearDownTestSuite() {
    delete ca_;
    ca_ = nullptr;
    TearDownStoreSuite();
  }

  // A fresh key pair; its public key copied to `pub` (if not "").
  static PrivateKey* LoadKey(const std::string& path, const std::string& pub) {
    auto k = PrivateKey::Generate();
    if (!k.ok() || !k->SavePair(path).ok()) {
      error_ = "key " + path;
      return nullptr;
    }
    if (!pub.empty()) Must(test::RunCommand("cp " + Q(path + ".pub") + " " + Q(pub)), "cp pub");
    return new PrivateKey(std::move(*k));
  }

  void SetUp() override {
    SetUpStoreTest();
    if (IsSkipped() || HasFatalFailure()) return;
    feed_ = dir_ + "/feed";
    ASSERT_EQ(mkdir(feed_.c_str(), 0755), 0);
    ASSERT_EQ(mkdir((feed_ + "/patches").c_str(), 0755), 0);
    for (const std::string& p : {p1_, p2_, pr_}) {
      ASSERT_EQ(test::RunCommand("cp " + Q(p) + " " + Q(feed_ + "/patches/")).exit_code, 0);
    }
  }

  // The index entry of the patch file feed_/patches/ID.cxpatch, from its
  // signed manifest and its bytes.
  FeedPatch Entry(const std::string& id) const {
    return EntryOf(feed_ + "/patches/" + id + ".cxpatch", "patches/" + id + ".cxpatch");
  }
  static FeedPatch EntryOf(const std::string& path, const std::string& rel) {
    FeedPatch p;
    auto trust = TrustStore::LoadDir(trust_);
    EXPECT_TRUE(trust.ok());
    ImageOptions opts;
    opts.trust = &*trust;
    auto img = Image::Open(path, opts);
    EXPECT_TRUE(img.ok()) << img.status().ToString();
    if (!img.ok()) return p;
    const Manifest& m = (*img)->manifest();
    p.id = m.patch_id;
    p.line = m.name;
    p.version = m.version;
    p.file = rel;
    auto d = store::DigestOfFile(path);
    EXPECT_TRUE(d.ok());
    p.length = d->size;
    p.sha256 = d->sha256;
    p.root = (*img)->superblock().root_hash;
    p.base_root = m.base_root_digest.value_or(Digest{});
    p.requires_patches = m.requires_patches;
    p.release_counter = m.release_counter;
    p.severity = m.severity;
    p.cves = m.cves;
    p.activation = m.activation;
    p.released_at = static_cast<int64_t>(m.released_at);
    return p;
  }

  static Index MakeIndex(uint64_t version, std::vector<FeedPatch> patches,
                         int64_t expires = kNow + 7 * kDay) {
    Index idx;
    idx.version = version;
    idx.published = kReleased;
    idx.expires = expires;
    idx.patches = std::move(patches);
    return idx;
  }

  // Writes `idx` signed by `key` (default: the index key) as feed_'s
  // index.cxfeed, atomically (a server never serves half of it).
  void Publish(const Index& idx, const PrivateKey* key = nullptr) {
    auto file = feed::SignIndex(idx, {key == nullptr ? index_key_ : key});
    ASSERT_TRUE(file.ok()) << file.status().ToString();
    const std::string path = feed_ + "/" + feed::kIndexFile;
    ASSERT_TRUE(
        store::ReplaceFile(path, {reinterpret_cast<const uint8_t*>(file->data()), file->size()})
            .ok());
    // Each its own mtime: nginx's validators are the mtime (in seconds) and
    // the size, and two publishes within a second may have the same size.
    const struct timespec t[2] = {{kReleased + ++publishes_, 0}, {kReleased + publishes_, 0}};
    ASSERT_EQ(utimensat(AT_FDCWD, path.c_str(), t, 0), 0);
  }

  // cryptex.conf for a feed at `url`: chain `plugins`, then `rest`.
  void Conf(const std::string& url, const std::string& plugins = "auto",
            const std::string& rest = "") {
    test::WriteFile(
        conf_,
        "[cryptex]\nstore = " + store_ + "\ntrust = " + trust_ + "\nplugin_dir = " + plugins_ +
            "\ndevice_bucket = 7\nplugin_timeout = 5s\nplugins = " + plugins + "\nfeed = " + url +
            "\nfeed_trust = " + feed_trust_ +
            (url.rfind("https://", 0) == 0 ? "\nfeed_ca = " + ca_->ca_file() : std::string()) +
            "\nfeed_timeout = 2s\nfeed_connect_timeout = 2s\n" + rest);
  }
  CommandResult Agent(int64_t at = kNow, const std::string& extra = "") {
    return RunCryptex("agent --once --at @" + std::to_string(at) + extra + " --config " + Q(conf_));
  }
  feed::ClientState FeedState() {
    auto s = feed::ReadClientState(store_ + "/feed");
    EXPECT_TRUE(s.ok()) << s.status().ToString();
    return s.ok() ? *s : feed::ClientState{};
  }
  std::vector<std::string> Active() {
    auto s = store::Store::Open(store_, nullptr);
    auto st = (*s)->ReadState();
    EXPECT_TRUE(st.ok());
    return st.ok() && st->lines.count(kLine) ? st->lines.at(kLine).active
                                             : std::vector<std::string>{};
  }
  Json History() {
    const CommandResult r = RunCryptex("history --json --store " + Q(store_));
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return Json::parse(r.out, nullptr, false);
  }

  // A run refused by the feed: exit 1, the refusal printed and recorded
  // (its reason holding `why`), the store byte for byte as before.
  void ExpectRefused(const std::string& why, const std::string& what, int64_t at = kNow) {
    const auto before = StoreBytes(store_);
    const size_t refusals = FeedState().refusals.size();
    const CommandResult r = Agent(at);
    EXPECT_EQ(r.exit_code, cli::kExitError) << r.out << r.err;
    EXPECT_TRUE(Contains(r.out, why)) << r.out << r.err;
    EXPECT_TRUE(StoreBytes(store_) == before) << "the store changed: " << r.out;
    const feed::ClientState s = FeedState();
    ASSERT_EQ(s.refusals.size(), refusals + 1) << r.out;
    EXPECT_EQ(s.refusals.back().what, what);
    EXPECT_TRUE(Contains(s.refusals.back().reason, why)) << s.refusals.back().reason;
    EXPECT_EQ(s.refusals.back().at, at);
  }

  static inline std::string feed_trust_, p1_, p2_, pr_, pbig_, plugins_;
  static inline TestCa* ca_ = nullptr;
  static inline PrivateKey *index_key_ = nullptr, *rogue_key_ = nullptr;
  std::string feed_;
  int publishes_ = 0;
};

// ---- the way it should go --------------------------------------------------------------

TEST_F(FeedAgentTest, PullsOverHttpsInstallsAndActivatesUnderAMount) {
  const std::string mnt = dir_ + "/mnt";
  ASSERT_TRUE(Mount(mnt));
  EXPECT_EQ(test::ReadFile(mnt + "/hello.txt"), "hello base\n");
  Publish(MakeIndex(1, {Entry("p1"), Entry("p2")}));
  auto nginx = Nginx::Start(feed_, *ca_);
  ASSERT_TRUE(nginx.ok()) << nginx.status().ToString();
  Conf(nginx->url());
  const CommandResult r = Agent();
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_TRUE(Contains(r.out, "cryptex-agent: feed: index version 1")) << r.out;
  EXPECT_TRUE(Contains(r.out, "app p1: install -> install+activate")) << r.out;
  EXPECT_TRUE(Contains(r.out, "app p2: install -> install+activate")) << r.out;
  EXPECT_EQ(Active(), (std::vector<std::string>{"p1", "p2"}));
  // Live on the mount as soon as the agent returns.
  EXPECT_EQ(test::ReadFile(mnt + "/hello.txt"), "hello p2\n");
  // The facts the plugins saw came from the signed index.
  const Json h = History();
  bool decided = false;
  for (const Json& rec : h) {
    if (rec.value("action", "") == "decide" && rec.value("patch", "") == "p1") {
      decided = true;
      EXPECT_EQ(rec["severity"], "high");
      EXPECT_EQ(rec["cves"], Json::array({"CVE-2027-1001"}));
    }
  }
  EXPECT_TRUE(decided) << h.dump(1);
  // The downloads went to the store; the cache keeps nothing.
  EXPECT_TRUE(store::ListDir(store_ + "/feed/cache").empty());
  const feed::ClientState s = FeedState();
  EXPECT_EQ(s.newest_version, 1u);
  EXPECT_TRUE(s.refusals.empty());
  // An idle poll: one conditional request, answered 304 without a body.
  const size_t before = nginx->requests();
  const CommandResult idle = Agent(kNow + 3600);
  ASSERT_EQ(idle.exit_code, 0) << idle.out << idle.err;
  const std::vector<std::string> log = nginx->WaitForLogLines(before + 1);
  ASSERT_EQ(log.size(), before + 1) << idle.out;
  EXPECT_EQ(log.back().rfind("GET /index.cxfeed 304 0 ", 0), 0u) << log.back();
  // cryptex feed status shows the device's view.
  const CommandResult st = RunCryptex("feed status --json --config " + Q(conf_));
  ASSERT_EQ(st.exit_code, 0) << st.out << st.err;
  const Json doc = Json::parse(st.out, nullptr, false);
  EXPECT_EQ(doc["newest_version"], 1);
  EXPECT_EQ(doc["feed"], nginx->url());
  EXPECT_EQ(doc["refusals"].size(), 0u);
}

// What `cryptex feed publish` writes is what the agent pulls (the vendor's
// entries match the patches' manifests field for field).
TEST_F(FeedAgentTest, FeedPublishedByTheCliIsPulled) {
  const CommandResult pub = RunCryptex("feed publish " + Q(feed_) + " --key " +
                                       Q(work_->Join("index.key")) + " --trust " + Q(trust_));
  ASSERT_EQ(pub.exit_code, 0) << pub.out << pub.err;
  auto nginx = Nginx::Start(feed_, *ca_);
  ASSERT_TRUE(nginx.ok()) << nginx.status().ToString();
  Conf(nginx->url());
  // Real time: the index expires 7 days after its publication, now.
  const CommandResult r = RunCryptex("agent --once --config " + Q(conf_));
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_EQ(Active(), (std::vector<std::string>{"p1", "p2"}));
  // pr (another p1 of the base, reboot class) is offered too: its
  // requirements ([]) are not what is active now ([p1, p2]).
  EXPECT_TRUE(Contains(r.out, "app pr: defer")) << r.out;
}

// A large download draws a progress bar on a terminal (stderr), and only there.
TEST_F(FeedAgentTest, ProgressBarOnATerminalOnly) {
  ASSERT_EQ(test::RunCommand("cp " + Q(pbig_) + " " + Q(feed_ + "/patches/")).exit_code, 0);
  Publish(MakeIndex(1, {Entry("pbig")}));
  auto nginx = Nginx::Start(feed_, *ca_);
  ASSERT_TRUE(nginx.ok()) << nginx.status().ToString();
  Conf(nginx->url());
  // Piped: no bar.
  const CommandResult piped = Agent(kNow, " 2>&1");
  ASSERT_EQ(piped.exit_code, 0) << piped.out;
  EXPECT_FALSE(Contains(piped.out, "downloading")) << piped.out;
  ASSERT_EQ(Active(), std::vector<std::string>{"pbig"});
  // On a terminal (script(1) gives the command a pty): a fresh store pulls
  // the same patch with a bar that reaches 100%.
  ASSERT_EQ(test::RunCommand("rm -rf " + Q(store_)).exit_code, 0);
  ASSERT_EQ(
      RunCryptex("add " + Q(base_) + " --store " + Q(store_) + " --trust " + Q(trust_)).exit_code,
      0);
  const std::string cmd =
      test::CryptexBin() + " agent --once --at @" + std::to_string(kNow) + " --config " + conf_;
  const CommandResult tty = test::RunCommand("script -qec " + Q(cmd) + " /dev/null");
  ASSERT_EQ(tty.exit_code, 0) << tty.out;
  EXPECT_TRUE(Contains(tty.out, "downloading pbig: ")) << tty.out;
  EXPECT_TRUE(Contains(tty.out, "(100%)")) << tty.out;
  EXPECT_EQ(Active(), std::vector<std::string>{"pbig"});
}

// A local feed: a directory, as a path or a file:// URL.
TEST_F(FeedAgentTest, DirectoryFeedIsPulledToo) {
  Publish(MakeIndex(1, {Entry("p1")}));
  Conf("file://" + feed_);
  const CommandResult r = Agent();
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_EQ(Active(), std::vector<std::string>{"p1"});
  Publish(MakeIndex(2, {Entry("p1"), Entry("p2")}));
  Conf(feed_);
  const CommandResult r2 = Agent();
  ASSERT_EQ(r2.exit_code, 0) << r2.out << r2.err;
  EXPECT_EQ(Active(), (std::vector<std::string>{"p1", "p2"}));
}

// TLS verification is on: a server whose certificate the configured CA did
// not sign is refused like any other failure, the store untouched.
TEST_F(FeedAgentTest, ServerNotSignedByTheConfiguredCaIsRefused) {
  Publish(MakeIndex(1, {Entry("p1")}));
  const std::string other_dir = dir_ + "/other-ca";
  ASSERT_EQ(mkdir(other_dir.c_str(), 0755), 0);
  auto other = TestCa::Create(other_dir);
  ASSERT_TRUE(other.ok()) << other.status().ToString();
  auto nginx = Nginx::Start(feed_, *other);
  ASSERT_TRUE(nginx.ok()) << nginx.status().ToString();
  Conf(nginx->url());  // trusts ca_, not `other`
  ExpectRefused("index.cxfeed", "index");
  EXPECT_TRUE(Active().empty());
}

// ---- the index: rollback, freeze, unknown key ----------------------------------------------

TEST_F(FeedAgentTest, RollbackToAnOlderIndexIsRefusedThenRecovers) {
  Publish(MakeIndex(2, {Entry("p1")}));
  auto nginx = Nginx::Start(feed_, *ca_);
  ASSERT_TRUE(nginx.ok()) << nginx.status().ToString();
  Conf(nginx->url());
  ASSERT_EQ(Agent().exit_code, 0);
  ASSERT_EQ(Active(), std::vector<std::string>{"p1"});
  // A mirror serves an older, validly signed index offering p2.
  Publish(MakeIndex(1, {Entry("p1"), Entry("p2")}));
  ExpectRefused("rollback", "index");
  EXPECT_EQ(Active(), std::vector<std::string>{"p1"});
  // Fixed: a newer index.
  Publish(MakeIndex(3, {Entry("p1"), Entry("p2")}));
  const CommandResult r = Agent();
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_EQ(Active(), (std::vector<std::string>{"p1", "p2"}));
}

TEST_F(FeedAgentTest, ExpiredIndexIsRefusedThenRecovers) {
  Publish(MakeIndex(1, {Entry("p1")}, kNow - 1));
  auto nginx = Nginx::Start(feed_, *ca_);
  ASSERT_TRUE(nginx.ok()) << nginx.status().ToString();
  Conf(nginx->url());
  ExpectRefused("freeze", "index");
  EXPECT_TRUE(Active().empty());
  Publish(MakeIndex(2, {Entry("p1")}));
  const CommandResult r = Agent();
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_EQ(Active(), std::vector<std::string>{"p1"});
}

TEST_F(FeedAgentTest, NotModifiedForeverIsAFreeze) {
  // Accepted while current; then the server answers 304 forever (nginx:
  // the file never changes) while time passes its expiry.
  Publish(MakeIndex(1, {Entry("p1")}, kNow + kDay));
  auto nginx = Nginx::Start(feed_, *ca_);
  ASSERT_TRUE(nginx.ok()) << nginx.status().ToString();
  Conf(nginx->url(), "auto");
  ASSERT_EQ(Agent().exit_code, 0);
  ASSERT_EQ(Active(), std::vector<std::string>{"p1"});
  Publish(MakeIndex(2, {Entry("p1"), Entry("p2")}, kNow + kDay));
  ASSERT_EQ(Agent().exit_code, 0);  // accepted: its validators are kept
  ASSERT_EQ(Active(), (std::vector<std::string>{"p1", "p2"}));
  const size_t before = nginx->requests();
  ExpectRefused("freeze", "index", kNow + 2 * kDay);
  EXPECT_EQ(nginx->WaitForLogLines(before + 1).back().rfind("GET /index.cxfeed 304 ", 0), 0u);
  // Still frozen at the next poll; the active patches stay (decided as usual).
  ExpectRefused("freeze", "index", kNow + 3 * kDay);
  EXPECT_EQ(Active(), (std::vector<std::string>{"p1", "p2"}));
}

TEST_F(FeedAgentTest, IndexByAnUnknownKeyIsRefusedThenRecovers) {
  Publish(MakeIndex(1, {Entry("p1")}), rogue_key_);
  auto nginx = Nginx::Start(feed_, *ca_);
  ASSERT_TRUE(nginx.ok()) << nginx.status().ToString();
  Conf(nginx->url());
  ExpectRefused("index", "index");
  EXPECT_EQ(FeedState().newest_version, 0u);
  EXPECT_TRUE(FeedState().keys.empty());
  Publish(MakeIndex(1, {Entry("p1")}));
  ASSERT_EQ(Agent().exit_code, 0);
  EXPECT_EQ(Active(), std::vector<std::string>{"p1"});
}

// ---- the patches: mix-and-match, endless, slow, truncated, other bytes ----------------------

TEST_F(FeedAgentTest, MixAndMatchIsRefusedAndRecorded) {
  // p1's entry, served with another validly signed patch of the same base
  // (its length and hash signed, so only the manifest check can tell).
  FeedPatch p1 = Entry("p1");
  const FeedPatch pr = Entry("pr");
  p1.file = pr.file;
  p1.length = pr.length;
  p1.sha256 = pr.sha256;
  Publish(MakeIndex(1, {p1}));
  auto nginx = Nginx::Start(feed_, *ca_);
  ASSERT_TRUE(nginx.ok()) << nginx.status().ToString();
  Conf(nginx->url());
  ExpectRefused("mix-and-match", "p1");
  EXPECT_TRUE(Active().empty());
  EXPECT_TRUE(store::ListDir(store_ + "/feed/cache").empty());
  Publish(MakeIndex(2, {Entry("p1")}));
  const CommandResult r = Agent();
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_EQ(Active(), std::vector<std::string>{"p1"});
}

// A patch served by a hostile server in `mode` is refused with `why`; then
// nginx serving the same feed is accepted.
class FeedAgentHostileTest : public FeedAgentTest {
 protected:
  // `resumes`: the refused download left a prefix that the fixed server is
  // asked only for the rest of (a Range request).
  void Run(const std::string& mode, const std::string& why, bool resumes = false) {
    Publish(MakeIndex(1, {Entry("p1")}));
    auto bad = HostileServer::Start(mode, feed_, *ca_, {{feed::kIndexFile, "normal"}});
    ASSERT_TRUE(bad.ok()) << bad.status().ToString();
    Conf(bad->url());
    const auto t0 = std::chrono::steady_clock::now();
    ExpectRefused(why, "p1");
    EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(20));
    EXPECT_TRUE(Active().empty());
    // The server is fixed (here: nginx serving the same feed).
    auto nginx = Nginx::Start(feed_, *ca_);
    ASSERT_TRUE(nginx.ok()) << nginx.status().ToString();
    Conf(nginx->url());
    const CommandResult r = Agent();
    ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
    EXPECT_EQ(Active(), std::vector<std::string>{"p1"});
    std::string fetch;
    for (const std::string& line : nginx->WaitForLogLines(2)) {
      if (line.find("/patches/p1.cxpatch") != std::string::npos) fetch = line;
    }
    EXPECT_EQ(Contains(fetch, " 206 ") && Contains(fetch, "range=bytes="), resumes) << fetch;
  }
};

TEST_F(FeedAgentHostileTest, EndlessDataIsCutAtTheSignedLength) {
  Run("endless", "more than the signed");
}
TEST_F(FeedAgentHostileTest, LongerBodyIsCutAtTheSignedLength) {
  Run("longer", "more than the signed");
}
TEST_F(FeedAgentHostileTest, SlowServerTimesOut) { Run("slow", "2000", /*resumes=*/true); }
TEST_F(FeedAgentHostileTest, StalledIndexTimesOut) {
  Publish(MakeIndex(1, {Entry("p1")}));
  auto bad = HostileServer::Start("stall-headers", feed_, *ca_);
  ASSERT_TRUE(bad.ok()) << bad.status().ToString();
  Conf(bad->url());
  ExpectRefused("index.cxfeed", "index");
}
TEST_F(FeedAgentHostileTest, TruncationIsRefusedAndResumedLater) {
  Run("truncate", "truncated", /*resumes=*/true);
}
TEST_F(FeedAgentHostileTest, OtherBytesAreRefusedByHash) { Run("wrong-body", "hash differs"); }

// ---- agent --loop: one run every feed_poll ----------------------------------------------------

TEST_F(FeedAgentTest, LoopPollsEveryFeedPoll) {
  Publish(MakeIndex(1, {Entry("p1")}));
  auto nginx = Nginx::Start(feed_, *ca_);
  ASSERT_TRUE(nginx.ok()) << nginx.status().ToString();
  Conf(nginx->url(), "auto", "feed_poll = 500ms\n");
  const CommandResult r = test::RunCommand("timeout -s TERM 2.2 " + Q(test::CryptexBin()) +
                                           " agent --loop --config " + Q(conf_));
  EXPECT_EQ(r.exit_code, 124) << r.out;  // ended by timeout(1)
  EXPECT_EQ(Active(), std::vector<std::string>{"p1"});
  size_t polls = 0;
  for (const std::string& line : nginx->WaitForLogLines(3))
    polls += Contains(line, "/index.cxfeed");
  EXPECT_GE(polls, 3u);
  EXPECT_LE(polls, 6u);
  EXPECT_EQ(RunCryptex("agent --loop --once --config " + Q(conf_)).exit_code, cli::kExitUsage);
  EXPECT_EQ(RunCryptex("agent --loop --at @1 --config " + Q(conf_)).exit_code, cli::kExitUsage);
}

// ---- without the network: simulate and approve see the kept index ----------------------------

TEST_F(FeedAgentTest, SimulateAndApproveUseTheKeptIndex) {
  Publish(MakeIndex(1, {Entry("p1")}));
  {
    auto nginx = Nginx::Start(feed_, *ca_);
    ASSERT_TRUE(nginx.ok()) << nginx.status().ToString();
    Conf(nginx->url(), "approve");
    const CommandResult r = Agent();
    ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
    EXPECT_TRUE(Active().empty());
  }  // the feed is gone
  const CommandResult a = RunCryptex("approve p1 --config " + Q(conf_));
  ASSERT_EQ(a.exit_code, 0) << a.out << a.err;
  const CommandResult sim =
      RunCryptex("policy simulate --at @" + std::to_string(kNow) + " --config " + Q(conf_));
  ASSERT_EQ(sim.exit_code, 0) << sim.out << sim.err;
  EXPECT_TRUE(Contains(sim.out, "feed: the kept index, version 1")) << sim.out;
  EXPECT_TRUE(Contains(sim.out, "app p1: install -> install+activate")) << sim.out;
  // After its expiry the kept index offers nothing.
  const CommandResult late = RunCryptex("policy simulate --at @" +
                                        std::to_string(kNow + 30 * kDay) + " --config " + Q(conf_));
  ASSERT_EQ(late.exit_code, 0) << late.out << late.err;
  EXPECT_TRUE(Contains(late.out, "freeze")) << late.out;
  EXPECT_FALSE(Contains(late.out, "app p1")) << late.out;
  EXPECT_EQ(RunCryptex("approve p9 --config " + Q(conf_)).exit_code, cli::kExitNotFound);
}

// ---- revocation ------------------------------------------------------------------------------

TEST_F(FeedAgentTest, RevocationInTheFeedRevertsAnActivePatchWithTheFeedsReason) {
  const std::string mnt = dir_ + "/mnt";
  ASSERT_TRUE(Mount(mnt));
  Publish(MakeIndex(1, {Entry("p1")}));
  auto nginx = Nginx::Start(feed_, *ca_);
  ASSERT_TRUE(nginx.ok()) << nginx.status().ToString();
  Conf(nginx->url(), "auto, revocation");
  ASSERT_EQ(Agent().exit_code, 0);
  ASSERT_EQ(test::ReadFile(mnt + "/hello.txt"), "hello p1\n");
  Index revoked = MakeIndex(2, {Entry("p1")});
  revoked.revoked.push_back(feed::Revocation{kLine, "p1", "breaks logins on ARM", kNow});
  Publish(revoked);
  const CommandResult r = Agent();
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_TRUE(Contains(r.out, "app p1: revert -> revert")) << r.out;
  EXPECT_TRUE(Active().empty());
  EXPECT_EQ(test::ReadFile(mnt + "/hello.txt"), "hello base\n");
  bool named = false;
  for (const Json& rec : History()) {
    if (rec.value("action", "") == "revert" && rec.value("patch", "") == "p1") {
      named = Contains(rec.value("reason", ""), "breaks logins on ARM");
    }
  }
  EXPECT_TRUE(named) << History().dump(1);
  // Never installed again, whatever the chain says (auto alone would).
  Conf(nginx->url(), "auto");
  const CommandResult again = Agent();
  ASSERT_EQ(again.exit_code, 0) << again.out << again.err;
  EXPECT_TRUE(Contains(again.out, "app p1: reject")) << again.out;
  EXPECT_TRUE(Active().empty());
}

TEST_F(FeedAgentTest, RevokedPatchIsNeverInstalledNorDownloaded) {
  Index idx = MakeIndex(1, {Entry("p1")});
  idx.revoked.push_back(feed::Revocation{"", "p1", "withdrawn", kNow});
  Publish(idx);
  auto nginx = Nginx::Start(feed_, *ca_);
  ASSERT_TRUE(nginx.ok()) << nginx.status().ToString();
  Conf(nginx->url(), "auto");
  const CommandResult r = Agent();
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_TRUE(Contains(r.out, "app p1: reject")) << r.out;
  EXPECT_TRUE(Contains(r.out, "withdrawn")) << r.out;
  EXPECT_TRUE(Active().empty());
  for (const std::string& line : nginx->log_lines()) {
    EXPECT_EQ(line.find("/patches/"), std::string::npos) << line;
  }
  ASSERT_EQ(Agent().exit_code, 0);  // rejected again (not a held rejection)
  EXPECT_TRUE(Active().empty());
  // The vendor lifts the revocation: the next run installs it.
  Publish(MakeIndex(2, {Entry("p1")}));
  const CommandResult lifted = Agent();
  ASSERT_EQ(lifted.exit_code, 0) << lifted.out << lifted.err;
  EXPECT_TRUE(Contains(lifted.out, "app p1: install -> install+activate")) << lifted.out;
  EXPECT_EQ(Active(), std::vector<std::string>{"p1"});
}

// ---- a fleet ---------------------------------------------------------------------------------

// 50 device stores (buckets 0, 2, ..., 98) with the rollout plugin pull from
// one nginx feed, one agent run per device per simulated day: the number of
// devices having each patch follows the configured stages exactly.
TEST_F(FeedAgentTest, FleetFollowsTheRolloutSchedule) {
  constexpr int kDevices = 50;
  constexpr int kDays = 6;
  const std::vector<std::pair<int, int>> stages = {{0, 10}, {1, 30}, {2, 60}, {4, 100}};
  std::string stage_text;
  for (const auto& [day, pct] : stages) {
    if (!stage_text.empty()) stage_text += ',';  // appends: GCC 12 -O3 -Wrestrict
    stage_text += std::to_string(day);
    stage_text += ':';
    stage_text += std::to_string(pct);
  }
  Publish(MakeIndex(1, {Entry("p1"), Entry("p2")}, kReleased + 30 * kDay));
  auto nginx = Nginx::Start(feed_, *ca_);
  ASSERT_TRUE(nginx.ok()) << nginx.status().ToString();
  struct Device {
    std::string store, conf;
  };
  std::vector<Device> devices;
  for (int i = 0; i < kDevices; ++i) {
    Device d;
    d.store = dir_ + "/dev" + std::to_string(i);
    d.conf = d.store + ".conf";
    ASSERT_EQ(RunCryptex("add " + Q(base_) + " --store " + Q(d.store) + " --trust " + Q(trust_))
                  .exit_code,
              0);
    test::WriteFile(d.conf, "[cryptex]\nstore = " + d.store + "\ntrust = " + trust_ +
                                "\nplugin_dir = " + plugins_ +
                                "\ndevice_bucket = " + std::to_string(2 * i) +
                                "\nplugins = rollout\nfeed = " + nginx->url() +
                                "\nfeed_trust = " + feed_trust_ + "\nfeed_ca = " + ca_->ca_file() +
                                "\n[plugin.rollout]\nstages = " + stage_text + "\n");
    devices.push_back(d);
  }
  // What the stages say: a device of bucket b has the patches from the
  // first stage whose percent is above b.
  auto expected = [&](int day) {
    int n = 0;
    for (int i = 0; i < kDevices; ++i) {
      for (const auto& [sday, pct] : stages) {
        if (2 * i < pct) {
          n += sday <= day;
          break;
        }
      }
    }
    return n;
  };
  std::string table = "day  p1  p2  expected\n";
  for (int day = 0; day < kDays; ++day) {
    const int64_t at = kReleased + day * kDay + 3600;
    std::vector<std::string> failures;
    std::mutex mu;
    std::atomic<int> next{0};
    auto worker = [&] {
      for (int i; (i = next++) < kDevices;) {
        const CommandResult r = RunCryptex("agent --once --at @" + std::to_string(at) +
                                           " --config " + Q(devices[static_cast<size_t>(i)].conf));
        if (r.exit_code != 0) {
          std::lock_guard<std::mutex> l(mu);
          failures.push_back("device " + std::to_string(i) + ": " + r.out + r.err);
        }
      }
    };
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t) threads.emplace_back(worker);
    for (auto& t : threads) t.join();
    ASSERT_TRUE(failures.empty()) << failures.front();
    int has_p1 = 0, has_p2 = 0;
    for (const Device& d : devices) {
      auto s = store::Store::Open(d.store, nullptr);
      ASSERT_TRUE(s.ok());
      auto st = (*s)->ReadState();
      ASSERT_TRUE(st.ok()) << st.status().ToString();
      const auto& act = st->lines.at(kLine).active;
      has_p1 += std::count(act.begin(), act.end(), "p1") > 0;
      has_p2 += std::count(act.begin(), act.end(), "p2") > 0;
    }
    table += std::to_string(day) + "    " + std::to_string(has_p1) + "  " + std::to_string(has_p2) +
             "  " + std::to_string(expected(day)) + "\n";
    EXPECT_EQ(has_p1, expected(day)) << "day " << day;
    EXPECT_EQ(has_p2, expected(day)) << "day " << day;
  }
  std::printf("%s", table.c_str());
  // Each device fetched each patch once.
  size_t downloads = 0;
  for (const std::string& line : nginx->WaitForLogLines(kDevices * kDays + 2 * kDevices)) {
    downloads +=
        line.find("/patches/") != std::string::npos && line.find(" 200 ") != std::string::npos;
  }
  EXPECT_EQ(downloads, 2u * kDevices);
}

}  // namespace
}  // namespace cryptex
