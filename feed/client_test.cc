// The feed client (client.h) against a local directory feed: every refusal
// (unknown key, rollback, a reused version, freeze, a download longer,
// shorter or other than signed), what is recorded and kept, and recovery
// once the feed is fixed.
#include "client.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <string>
#include <vector>

#include "durable.h"
#include "test_util.h"

namespace cryptex::feed {
namespace {

using test::Contains;
using test::ReadFile;
using test::WriteFile;

constexpr int64_t kNow = 1800000000;
constexpr int64_t kDay = 86400;

class FeedClientTest : public ::testing::Test {
 protected:
  void SetUp() override {
    feed_ = dir_.Join("feed");
    trust_ = dir_.Join("trust");
    state_ = dir_.Join("state");
    ASSERT_EQ(mkdir(feed_.c_str(), 0755), 0);
    ASSERT_EQ(mkdir((feed_ + "/patches").c_str(), 0755), 0);
    ASSERT_EQ(mkdir(trust_.c_str(), 0755), 0);
    key_ = Key(trust_ + "/index.key");
    other_ = Key(dir_.Join("other.key"));
    WriteFile(feed_ + "/patches/p1.cxpatch", patch_);
  }

  static std::unique_ptr<PrivateKey> Key(const std::string& path) {
    auto k = PrivateKey::Generate();
    EXPECT_TRUE(k.ok());
    EXPECT_TRUE(k->SavePair(path).ok());
    return std::make_unique<PrivateKey>(std::move(*k));
  }

  FeedPatch Entry(const std::string& id, const std::string& bytes) const {
    FeedPatch p;
    p.id = id;
    p.line = "app";
    p.version = "1.0." + id;
    p.file = "patches/" + id + ".cxpatch";
    p.length = bytes.size();
    p.sha256 = Sha256::Hash(bytes.data(), bytes.size());
    p.root[0] = 1;
    p.base_root[0] = 2;
    p.release_counter = 2;
    p.severity = "high";
    p.activation = "relaunch";
    return p;
  }

  Index MakeIndex(uint64_t version, int64_t expires = kNow + 7 * kDay) const {
    Index idx;
    idx.version = version;
    idx.published = kNow - 60;
    idx.expires = expires;
    idx.patches.push_back(Entry("p1", patch_));
    return idx;
  }

  // Publishes `idx` signed by `keys` as the feed's index.cxfeed, with an
  // mtime of its own (the local transport's validator is size and mtime).
  void Publish(const Index& idx, std::vector<const PrivateKey*> keys = {}) {
    if (keys.empty()) keys = {key_.get()};
    auto file = SignIndex(idx, keys);
    ASSERT_TRUE(file.ok()) << file.status().ToString();
    const std::string path = feed_ + "/" + kIndexFile;
    WriteFile(path, *file);
    const struct timespec t[2] = {{kNow + ++publishes_, 0}, {kNow + publishes_, 0}};
    ASSERT_EQ(utimensat(AT_FDCWD, path.c_str(), t, 0), 0);
  }

  FeedSettings Settings() const {
    FeedSettings s;
    s.url = feed_;
    s.trust = trust_;
    s.state_dir = state_;
    return s;
  }

  FeedClient Open() {
    auto c = FeedClient::Open(Settings());
    EXPECT_TRUE(c.ok()) << c.status().ToString();
    return std::move(*c);
  }

  ClientState State() {
    auto s = ReadClientState(state_);
    EXPECT_TRUE(s.ok()) << s.status().ToString();
    return s.ok() ? *s : ClientState{};
  }

  // The refusal of `r` is recorded in feed.json as the newest one.
  void ExpectRecorded(const Status& st, const std::string& what) {
    const ClientState s = State();
    ASSERT_FALSE(s.refusals.empty());
    EXPECT_EQ(s.refusals.back().what, what);
    EXPECT_EQ(s.refusals.back().reason, st.message());
  }

  test::TempDir dir_;
  std::string feed_, trust_, state_;
  std::unique_ptr<PrivateKey> key_, other_;
  std::string patch_ = test::RandomBytes(200000, 1);
  int publishes_ = 0;
};

TEST_F(FeedClientTest, AcceptsASignedIndexAndKeepsItsState) {
  Publish(MakeIndex(3));
  FeedClient c = Open();
  auto idx = c.Refresh(kNow);
  ASSERT_TRUE(idx.ok()) << idx.status().ToString();
  EXPECT_EQ((*idx)->version, 3u);
  ASSERT_EQ((*idx)->patches.size(), 1u);
  EXPECT_EQ(c.newest_version(), 3u);
  EXPECT_TRUE(c.refusals().empty());
  // The state directory is private; feed.json and the index are kept.
  struct stat st;
  ASSERT_EQ(stat(state_.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u);
  EXPECT_EQ(ReadFile(state_ + "/" + kIndexFile), ReadFile(feed_ + "/" + kIndexFile));
  const ClientState s = State();
  EXPECT_EQ(s.newest_version, 3u);
  EXPECT_EQ(s.expires, kNow + 7 * kDay);
  EXPECT_EQ(s.last_fetch, kNow);
  EXPECT_EQ(s.last_accepted, kNow);
  EXPECT_EQ(s.url, feed_);
  // A second client (the next agent run) starts from that state.
  FeedClient again = Open();
  EXPECT_EQ(again.newest_version(), 3u);
  auto same = again.Refresh(kNow + 60);
  ASSERT_TRUE(same.ok()) << same.status().ToString();
  EXPECT_EQ((*same)->version, 3u);
}

TEST_F(FeedClientTest, RefusesAnIndexByAnUnknownKeyThenRecovers) {
  Publish(MakeIndex(1), {other_.get()});
  FeedClient c = Open();
  auto idx = c.Refresh(kNow);
  ASSERT_FALSE(idx.ok());
  EXPECT_EQ(idx.status().code(), Code::kSignature) << idx.status().ToString();
  EXPECT_TRUE(Contains(idx.status().message(), kIndexFile)) << idx.status().message();
  ExpectRecorded(idx.status(), "index");
  EXPECT_EQ(c.newest_version(), 0u);
  struct stat st;
  EXPECT_NE(lstat((state_ + "/" + kIndexFile).c_str(), &st), 0) << "a refused index was kept";
  // The feed is fixed: the same client accepts it next time.
  Publish(MakeIndex(1));
  auto fixed = c.Refresh(kNow + 1);
  ASSERT_TRUE(fixed.ok()) << fixed.status().ToString();
  EXPECT_EQ(c.newest_version(), 1u);
}

TEST_F(FeedClientTest, RefusesRollbackToAnOlderIndex) {
  Publish(MakeIndex(5));
  FeedClient c = Open();
  ASSERT_TRUE(c.Refresh(kNow).ok());
  const std::string kept = ReadFile(state_ + "/" + kIndexFile);
  Publish(MakeIndex(4));  // validly signed, older
  auto idx = c.Refresh(kNow + 1);
  ASSERT_FALSE(idx.ok());
  EXPECT_EQ(idx.status().code(), Code::kCorruption);
  EXPECT_TRUE(Contains(idx.status().message(), "rollback")) << idx.status().message();
  EXPECT_TRUE(Contains(idx.status().message(), "4")) << idx.status().message();
  ExpectRecorded(idx.status(), "index");
  // Nothing of it is kept, and a new client remembers version 5.
  EXPECT_EQ(ReadFile(state_ + "/" + kIndexFile), kept);
  EXPECT_EQ(Open().newest_version(), 5u);
  EXPECT_FALSE(Open().Refresh(kNow + 2).ok());
  Publish(MakeIndex(6));
  ASSERT_TRUE(c.Refresh(kNow + 3).ok());
  EXPECT_EQ(c.newest_version(), 6u);
}

TEST_F(FeedClientTest, RefusesAReusedVersionWithOtherContent) {
  Publish(MakeIndex(2));
  FeedClient c = Open();
  ASSERT_TRUE(c.Refresh(kNow).ok());
  Index changed = MakeIndex(2);
  changed.patches[0].severity = "critical";
  Publish(changed);
  auto idx = c.Refresh(kNow + 1);
  ASSERT_FALSE(idx.ok());
  EXPECT_EQ(idx.status().code(), Code::kCorruption);
  EXPECT_TRUE(Contains(idx.status().message(), "never reused")) << idx.status().message();
  ExpectRecorded(idx.status(), "index");
  // The same bytes again are fine.
  Publish(MakeIndex(2));
  EXPECT_TRUE(c.Refresh(kNow + 2).ok());
}

TEST_F(FeedClientTest, RefusesAnExpiredIndexAlsoWhenNotModified) {
  // Expired when fetched.
  Publish(MakeIndex(1, kNow - 1));
  FeedClient c = Open();
  auto idx = c.Refresh(kNow);
  ASSERT_FALSE(idx.ok());
  EXPECT_TRUE(Contains(idx.status().message(), "freeze")) << idx.status().message();
  ExpectRecorded(idx.status(), "index");
  // Current when fetched, expired later while the feed answers "not
  // modified" (a frozen mirror): the kept index is checked again.
  Publish(MakeIndex(2, kNow + kDay));
  ASSERT_TRUE(c.Refresh(kNow).ok());
  const uint64_t not_modified = c.stats().not_modified;
  auto frozen = c.Refresh(kNow + kDay);
  ASSERT_FALSE(frozen.ok());
  EXPECT_EQ(c.stats().not_modified, not_modified + 1);  // it was the kept index
  EXPECT_TRUE(Contains(frozen.status().message(), "freeze")) << frozen.status().message();
  ExpectRecorded(frozen.status(), "index");
  // The vendor publishes a fresh index: accepted.
  Publish(MakeIndex(3, kNow + 10 * kDay));
  ASSERT_TRUE(c.Refresh(kNow + kDay).ok());
}

TEST_F(FeedClientTest, IdlePollIsOneConditionalRequestWithoutBody) {
  Publish(MakeIndex(1));
  FeedClient c = Open();
  ASSERT_TRUE(c.Refresh(kNow).ok());
  const TransportStats before = c.stats();
  auto idx = c.Refresh(kNow + 60);
  ASSERT_TRUE(idx.ok()) << idx.status().ToString();
  const TransportStats after = c.stats();
  EXPECT_EQ(after.requests - before.requests, 1u);
  EXPECT_EQ(after.not_modified - before.not_modified, 1u);
  EXPECT_EQ(after.body_bytes, before.body_bytes);
}

TEST_F(FeedClientTest, KeysAnnouncedOnlyByVerifiedIndexes) {
  auto next = Key(dir_.Join("next.key"));
  // An index by an unknown key announcing itself is refused, and its key
  // is not remembered.
  Index selfish = MakeIndex(1);
  selfish.keys.push_back(AnnouncedKey{other_->id(), other_->raw_public()});
  Publish(selfish, {other_.get()});
  FeedClient c = Open();
  ASSERT_FALSE(c.Refresh(kNow).ok());
  EXPECT_TRUE(State().keys.empty());
  // The trusted key announces the next one...
  Index rotate = MakeIndex(2);
  rotate.keys.push_back(AnnouncedKey{next->id(), next->raw_public()});
  Publish(rotate);
  ASSERT_TRUE(c.Refresh(kNow + 1).ok());
  ASSERT_EQ(State().keys.size(), 1u);
  EXPECT_EQ(State().keys[0].id, next->id());
  // ... which then signs alone, also for the next run's client, and keeps
  // being trusted without being announced again (docs/FEED.md, "Keys and
  // rotation").
  Publish(MakeIndex(3), {next.get()});
  FeedClient later = Open();
  auto idx = later.Refresh(kNow + 2);
  ASSERT_TRUE(idx.ok()) << idx.status().ToString();
  EXPECT_EQ((*idx)->version, 3u);
  Publish(MakeIndex(4), {next.get()});
  FeedClient last = Open();  // the index it returns lives as long as the client
  auto idx4 = last.Refresh(kNow + 3);
  ASSERT_TRUE(idx4.ok()) << idx4.status().ToString();
  EXPECT_EQ((*idx4)->version, 4u);
  EXPECT_EQ(State().keys.size(), 1u);
}

TEST_F(FeedClientTest, MissingIndexIsRefusedAndRecorded) {
  FeedClient c = Open();
  auto idx = c.Refresh(kNow);
  ASSERT_FALSE(idx.ok());
  EXPECT_EQ(idx.status().code(), Code::kNotFound) << idx.status().ToString();
  ExpectRecorded(idx.status(), "index");
}

TEST_F(FeedClientTest, DownloadChecksLengthAndHashAndUsesTheCache) {
  Publish(MakeIndex(1));
  FeedClient c = Open();
  auto idx = c.Refresh(kNow);
  ASSERT_TRUE(idx.ok());
  const FeedPatch p = (*idx)->patches[0];
  auto path = c.Download(p, kNow);
  ASSERT_TRUE(path.ok()) << path.status().ToString();
  EXPECT_EQ(*path, state_ + "/cache/" + HexEncode(p.sha256) + ".cxpatch");
  EXPECT_EQ(ReadFile(*path), patch_);
  // Done once: the next call checks the cached file and fetches nothing.
  const uint64_t requests = c.stats().requests;
  auto again = c.Download(p, kNow);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(c.stats().requests, requests);
  // A cached file that no longer checks out is fetched again.
  test::FlipByte(*path, 10);
  auto refetched = c.Download(p, kNow);
  ASSERT_TRUE(refetched.ok());
  EXPECT_EQ(ReadFile(*refetched), patch_);
  EXPECT_TRUE(c.refusals().empty());
}

TEST_F(FeedClientTest, DownloadWithAnotherHashIsRefusedAndDeletedThenRecovers) {
  Publish(MakeIndex(1));
  FeedClient c = Open();
  auto idx = c.Refresh(kNow);
  ASSERT_TRUE(idx.ok());
  const FeedPatch p = (*idx)->patches[0];
  std::string other = patch_;
  other[1000] ^= 1;  // the signed length, other bytes
  WriteFile(feed_ + "/" + p.file, other);
  auto path = c.Download(p, kNow);
  ASSERT_FALSE(path.ok());
  EXPECT_EQ(path.status().code(), Code::kCorruption);
  EXPECT_TRUE(Contains(path.status().message(), "hash differs")) << path.status().message();
  EXPECT_TRUE(Contains(path.status().message(), p.file)) << path.status().message();
  ExpectRecorded(path.status(), "p1");
  EXPECT_TRUE(store::ListDir(state_ + "/cache").empty());
  WriteFile(feed_ + "/" + p.file, patch_);
  auto fixed = c.Download(p, kNow);
  ASSERT_TRUE(fixed.ok()) << fixed.status().ToString();
  EXPECT_EQ(ReadFile(*fixed), patch_);
}

TEST_F(FeedClientTest, DownloadLongerThanSignedIsRefused) {
  Publish(MakeIndex(1));
  FeedClient c = Open();
  auto idx = c.Refresh(kNow);
  ASSERT_TRUE(idx.ok());
  const FeedPatch p = (*idx)->patches[0];
  WriteFile(feed_ + "/" + p.file, patch_ + std::string(4096, 'x'));
  auto path = c.Download(p, kNow);
  ASSERT_FALSE(path.ok());
  EXPECT_TRUE(Contains(path.status().message(), "more than the signed")) << path.status().message();
  ExpectRecorded(path.status(), "p1");
  EXPECT_TRUE(store::ListDir(state_ + "/cache").empty());
}

TEST_F(FeedClientTest, TruncatedDownloadIsKeptAndResumed) {
  Publish(MakeIndex(1));
  FeedClient c = Open();
  auto idx = c.Refresh(kNow);
  ASSERT_TRUE(idx.ok());
  const FeedPatch p = (*idx)->patches[0];
  WriteFile(feed_ + "/" + p.file, patch_.substr(0, 120000));
  auto path = c.Download(p, kNow);
  ASSERT_FALSE(path.ok());
  EXPECT_EQ(path.status().code(), Code::kIOError) << path.status().ToString();
  EXPECT_TRUE(Contains(path.status().message(), "truncated")) << path.status().message();
  ExpectRecorded(path.status(), "p1");
  const std::string part = state_ + "/cache/" + HexEncode(p.sha256) + ".part";
  EXPECT_EQ(test::FileSize(part), 120000u);
  // The whole file appears: only the rest is read.
  WriteFile(feed_ + "/" + p.file, patch_);
  const uint64_t bytes = c.stats().body_bytes;
  auto resumed = c.Download(p, kNow);
  ASSERT_TRUE(resumed.ok()) << resumed.status().ToString();
  EXPECT_EQ(ReadFile(*resumed), patch_);
  EXPECT_EQ(c.stats().body_bytes - bytes, patch_.size() - 120000);
}

TEST_F(FeedClientTest, RefusalsAreBounded) {
  FeedClient c = Open();
  for (size_t i = 0; i < kMaxRefusals + 10; ++i) {
    ASSERT_TRUE(
        c.RecordRefusal(Refusal{kNow + static_cast<int64_t>(i), "p", std::to_string(i)}).ok());
  }
  const ClientState s = State();
  ASSERT_EQ(s.refusals.size(), kMaxRefusals);
  EXPECT_EQ(s.refusals.front().reason, "10");  // the oldest went first
  EXPECT_EQ(s.refusals.back().reason, std::to_string(kMaxRefusals + 9));
}

TEST_F(FeedClientTest, RevocationsOfTheNewestIndexOutliveARefusal) {
  Index idx = MakeIndex(1);
  idx.revoked.push_back(Revocation{"app", "p0", "breaks logins", kNow - 10});
  Publish(idx);
  FeedClient c = Open();
  ASSERT_TRUE(c.Refresh(kNow).ok());
  Publish(MakeIndex(1, kNow - 5));  // now refused (another payload, expired)
  ASSERT_FALSE(c.Refresh(kNow + 1).ok());
  FeedClient next = Open();
  ASSERT_EQ(next.revocations().size(), 1u);
  EXPECT_EQ(next.revocations()[0].id, "p0");
  EXPECT_EQ(next.revocations()[0].reason, "breaks logins");
}

TEST_F(FeedClientTest, DamagedStateIsAnErrorNamingTheFile) {
  ASSERT_EQ(mkdir(state_.c_str(), 0700), 0);
  WriteFile(state_ + "/" + kStateFile, "{\"newest_version\": \"many\"}");
  auto c = FeedClient::Open(Settings());
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), Code::kCorruption);
  EXPECT_TRUE(Contains(c.status().message(), state_ + "/" + kStateFile)) << c.status().message();
  // A missing trust is named too.
  FeedSettings s = Settings();
  s.trust = dir_.Join("nokeys");
  auto t = FeedClient::Open(s);
  ASSERT_FALSE(t.ok());
  EXPECT_TRUE(Contains(t.status().message(), s.trust)) << t.status().message();
}

}  // namespace
}  // namespace cryptex::feed
