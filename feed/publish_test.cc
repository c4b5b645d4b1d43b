// Publishing a feed directory (publish.h) with images sealed by the library.
#include "publish.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include "builder.h"
#include "durable.h"
#include "format.h"
#include "image.h"
#include "test_util.h"

namespace cryptex::feed {
namespace {

using test::Contains;
using test::ReadFile;
using test::TempDir;
using test::WriteFile;

constexpr int64_t kNow = 1800000000;

class PublishTest : public ::testing::Test {
 protected:
  void SetUp() override {
    feed_ = keys_.Join("feed");
    ASSERT_EQ(mkdir(feed_.c_str(), 0755), 0);
    image_key_ = Key(keys_.Join("image.key"));
    index_key_ = Key(keys_.Join("index.key"));
    auto t = TrustStore::LoadFile(keys_.Join("image.key.pub"));
    ASSERT_TRUE(t.ok()) << t.status().ToString();
    image_trust_ = std::make_unique<TrustStore>(std::move(t).value());
    WriteFile(src_.Join("f"), "contents");
  }

  static PrivateKey Key(const std::string& path) {
    auto k = PrivateKey::Generate();
    EXPECT_TRUE(k.ok());
    EXPECT_TRUE(k->SavePair(path).ok());
    return std::move(k).value();
  }

  // Seals src_ into `rel` under the feed: a base image of `line`, or with a
  // patch id a patch image (kind patch, the manifest fields a feed lists) in
  // the compact layout mkpatch writes (4736 bytes here: one block and the
  // trailer).
  Digest Seal(const std::string& rel, const std::string& line, const std::string& patch_id = "",
              const PrivateKey* key = nullptr) {
    auto tree = ScanDirectory(src_.path());
    EXPECT_TRUE(tree.ok());
    BuildOptions opts;
    opts.output_path = feed_ + "/" + rel;
    opts.key = key != nullptr ? key : &image_key_;
    opts.manifest.name = line;
    opts.manifest.version = "1.0";
    opts.manifest.release_counter = 3;
    opts.threads = 1;
    if (!patch_id.empty()) {
      opts.kind = format::kKindPatch;
      opts.compact = true;
      opts.manifest.patch_id = patch_id;
      opts.manifest.base_root_digest = Digest{};
      opts.manifest.base_root_digest->fill(0x42);
      opts.manifest.severity = "high";
      opts.manifest.cves = {"CVE-2026-1111"};
      opts.manifest.activation = "relaunch";
      opts.manifest.released_at = 1799999999;
    }
    auto st = WriteImage(*tree, opts);
    EXPECT_TRUE(st.ok()) << st.status().ToString();
    ImageOptions io;
    io.trust = image_trust_.get();
    auto img = Image::Open(opts.output_path, io);
    return img.ok() ? (*img)->superblock().root_hash : Digest{};
  }

  PublishOptions Opts() {
    PublishOptions o;
    o.dir = feed_;
    o.keys = {&index_key_};
    o.now = kNow;
    o.expires_in = 3600;
    o.image_trust = image_trust_.get();
    return o;
  }

  std::string IndexPath() const { return feed_ + "/" + kIndexFile; }

  Index ReadBack() {
    auto bytes = ReadIndexFile(IndexPath());
    EXPECT_TRUE(bytes.ok()) << bytes.status().ToString();
    auto trust = TrustStore::LoadFile(keys_.Join("index.key.pub"));
    EXPECT_TRUE(trust.ok());
    auto v = VerifyIndex(bytes.ok() ? *bytes : "", *trust, {}, IndexPath());
    EXPECT_TRUE(v.ok()) << v.status().ToString();
    return v.ok() ? v->index : Index{};
  }

  TempDir keys_;
  TempDir src_;
  std::string feed_;
  PrivateKey image_key_ = std::move(PrivateKey::Generate()).value();
  PrivateKey index_key_ = std::move(PrivateKey::Generate()).value();
  std::unique_ptr<TrustStore> image_trust_;
};

TEST(ParseExpiryTest, AcceptsUnitsWithinLimits) {
  EXPECT_EQ(*ParseExpiry("7d", "x"), 7 * 86400);
  EXPECT_EQ(*ParseExpiry("12h", "x"), 12 * 3600);
  EXPECT_EQ(*ParseExpiry("30m", "x"), 1800);
  EXPECT_EQ(*ParseExpiry("90s", "x"), 90);
  EXPECT_EQ(*ParseExpiry("3600", "x"), 3600);
  EXPECT_EQ(*ParseExpiry("2w", "x"), 14 * 86400);
  EXPECT_EQ(*ParseExpiry("366d", "x"), kMaxExpirySeconds);
  for (const char* bad : {"", "0", "0d", "d", "7x", "-1d", "367d", "1.5h", "9999999999", " 7d",
                          "7d ", "7D", "500ms", "1500ms", "+7d"}) {
    auto r = ParseExpiry(bad, "--expires");
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_EQ(r.status().code(), Code::kInvalidArgument);
    EXPECT_TRUE(Contains(r.status().message(), "for --expires")) << r.status().message();
  }
}

TEST_F(PublishTest, ListsPatchesAndBasesWithLengthHashAndManifest) {
  const Digest base_root = Seal("app.cryptex", "app");
  ASSERT_EQ(mkdir((feed_ + "/patches").c_str(), 0755), 0);
  const Digest patch_root = Seal("patches/p1.cxpatch", "app", "p1");
  WriteFile(feed_ + "/README.txt", "not an image");      // ignored
  WriteFile(feed_ + "/.hidden.cxpatch", "garbage");      // dot file: skipped
  ASSERT_EQ(mkdir((feed_ + "/.git").c_str(), 0755), 0);  // dot dir: skipped
  WriteFile(feed_ + "/.git/x.cryptex", "garbage");
  auto r = Publish(Opts());
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->path, IndexPath());
  EXPECT_FALSE(r->previous_version);
  Index ix = ReadBack();
  EXPECT_EQ(ix.version, 1u);
  EXPECT_EQ(ix.published, kNow);
  EXPECT_EQ(ix.expires, kNow + 3600);
  ASSERT_EQ(ix.bases.size(), 1u);
  const FeedBase& b = ix.bases[0];
  EXPECT_EQ(b.line, "app");
  EXPECT_EQ(b.file, "app.cryptex");
  EXPECT_EQ(b.root, base_root);
  EXPECT_EQ(b.release_counter, 3u);
  auto bd = store::DigestOfFile(feed_ + "/app.cryptex");
  ASSERT_TRUE(bd.ok());
  EXPECT_EQ(b.length, bd->size);
  EXPECT_EQ(b.sha256, bd->sha256);
  ASSERT_EQ(ix.patches.size(), 1u);
  const FeedPatch& p = ix.patches[0];
  EXPECT_EQ(p.id, "p1");
  EXPECT_EQ(p.line, "app");
  EXPECT_EQ(p.file, "patches/p1.cxpatch");
  EXPECT_EQ(p.root, patch_root);
  Digest want_base;
  want_base.fill(0x42);
  EXPECT_EQ(p.base_root, want_base);
  EXPECT_EQ(p.severity, "high");
  EXPECT_EQ(p.cves, std::vector<std::string>{"CVE-2026-1111"});
  EXPECT_EQ(p.activation, "relaunch");
  EXPECT_EQ(p.released_at, 1799999999);
  auto pd = store::DigestOfFile(feed_ + "/patches/p1.cxpatch");
  ASSERT_TRUE(pd.ok());
  EXPECT_EQ(p.length, pd->size);
  EXPECT_EQ(p.sha256, pd->sha256);
  // Nothing but the index was written (no temp file left behind).
  EXPECT_EQ(test::ListDirNames(feed_),
            (std::vector<std::string>{".git", ".hidden.cxpatch", "README.txt", "app.cryptex",
                                      "index.cxfeed", "patches"}));
}

TEST_F(PublishTest, WithoutTrustTheSameFactsAreRead) {
  Seal("app.cryptex", "app");
  Seal("p1.cxpatch", "app", "p1");
  ASSERT_TRUE(Publish(Opts()).ok());
  Index checked = ReadBack();
  PublishOptions o = Opts();
  o.image_trust = nullptr;
  ASSERT_TRUE(Publish(o).ok());
  Index unchecked = ReadBack();
  unchecked.version = checked.version;
  EXPECT_EQ(EncodePayload(unchecked), EncodePayload(checked));
}

TEST_F(PublishTest, VersionGrowsAndRevocationsSurvive) {
  Seal("p1.cxpatch", "app", "p1");
  ASSERT_TRUE(Publish(Opts()).ok());
  auto second = Publish(Opts());
  ASSERT_TRUE(second.ok());
  EXPECT_EQ(second->index.version, 2u);
  EXPECT_EQ(*second->previous_version, 1u);
  PublishOptions rv = Opts();
  rv.revoke = Revocation{"app", "p1", "breaks login", kNow};
  ASSERT_TRUE(Publish(rv).ok());
  auto fourth = Publish(Opts());
  ASSERT_TRUE(fourth.ok());
  Index ix = ReadBack();
  EXPECT_EQ(ix.version, 4u);
  ASSERT_NE(ix.FindRevocation("app", "p1"), nullptr);
  EXPECT_EQ(ix.FindRevocation("app", "p1")->reason, "breaks login");
  // The revoked patch's file is still listed (devices never install it).
  EXPECT_NE(ix.FindPatch("app", "p1"), nullptr);
  // Revoking it again is refused and changes nothing.
  const std::string before = ReadFile(IndexPath());
  auto again = Publish(rv);
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.status().code(), Code::kExists);
  EXPECT_TRUE(Contains(again.status().message(), "p1 is already revoked on line app"))
      << again.status().message();
  EXPECT_EQ(ReadFile(IndexPath()), before);
}

// nginx's ETag is the mtime in seconds and the size: two indexes of the same
// size published within one second must still differ in it, or a device
// polling with If-None-Match would be told nothing changed.
TEST_F(PublishTest, EachIndexHasALaterMtimeSecondThanThePrevious) {
  Seal("p1.cxpatch", "app", "p1");
  ASSERT_TRUE(Publish(Opts()).ok());
  struct stat a, b;
  ASSERT_EQ(stat(IndexPath().c_str(), &a), 0);
  const std::string first = ReadFile(IndexPath());
  ASSERT_TRUE(Publish(Opts()).ok());
  ASSERT_EQ(stat(IndexPath().c_str(), &b), 0);
  EXPECT_EQ(ReadFile(IndexPath()).size(), first.size());  // version 1 -> 2: the same size
  EXPECT_GT(b.st_mtim.tv_sec, a.st_mtim.tv_sec);
}

TEST_F(PublishTest, MalformedPreviousIndexIsRefusedUnlessForced) {
  Seal("p1.cxpatch", "app", "p1");
  WriteFile(IndexPath(), "cryptex-feed 1\nnot a signature\n\n{}");
  auto r = Publish(Opts());
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Code::kCorruption);
  EXPECT_TRUE(Contains(r.status().message(), IndexPath() + ": line 2")) << r.status().message();
  EXPECT_TRUE(Contains(r.status().message(), "--force-version")) << r.status().message();
  EXPECT_EQ(ReadFile(IndexPath()), "cryptex-feed 1\nnot a signature\n\n{}");
  PublishOptions forced = Opts();
  forced.force_version = 10;
  ASSERT_TRUE(Publish(forced).ok());
  EXPECT_EQ(ReadBack().version, 10u);
  // Forcing a version that is not above a readable previous one is refused.
  forced.force_version = 10;
  auto low = Publish(forced);
  ASSERT_FALSE(low.ok());
  EXPECT_TRUE(Contains(low.status().message(), "rollback")) << low.status().message();
  forced.force_version = 11;
  ASSERT_TRUE(Publish(forced).ok());
  EXPECT_EQ(ReadBack().version, 11u);
}

// Every refusal names the file at fault and leaves the previous index as it
// was.
TEST_F(PublishTest, BadFilesAreRefusedNamingThemAndTheIndexIsKept) {
  Seal("good.cxpatch", "app", "good");
  ASSERT_TRUE(Publish(Opts()).ok());
  const std::string before = ReadFile(IndexPath());
  const auto expect_refused = [&](const std::string& rel, Code code, const std::string& why) {
    auto r = Publish(Opts());
    ASSERT_FALSE(r.ok()) << rel;
    EXPECT_EQ(r.status().code(), code) << r.status().ToString();
    EXPECT_TRUE(Contains(r.status().message(), feed_ + "/" + rel)) << r.status().message();
    EXPECT_TRUE(Contains(r.status().message(), why)) << r.status().message();
    EXPECT_EQ(ReadFile(IndexPath()), before) << rel;
    EXPECT_FALSE(test::Contains(ReadFile(IndexPath()), rel));
    ASSERT_EQ(unlink((feed_ + "/" + rel).c_str()), 0) << rel;
  };
  WriteFile(feed_ + "/junk.cxpatch", std::string(20000, 'x'));
  expect_refused("junk.cxpatch", Code::kCorruption, "not a cryptex image");

  PrivateKey stranger = Key(keys_.Join("stranger.key"));
  Seal("foreign.cxpatch", "app", "foreign", &stranger);
  expect_refused("foreign.cxpatch", Code::kSignature, "signed by unknown key");

  Seal("tampered.cryptex", "app");
  // A byte of the signed superblock (in the last block).
  test::FlipByte(feed_ + "/tampered.cryptex", test::FileSize(feed_ + "/tampered.cryptex") - 4000);
  expect_refused("tampered.cryptex", Code::kSignature, "tampered");

  Seal("base-as-patch.cxpatch", "app");
  expect_refused("base-as-patch.cxpatch", Code::kInvalidArgument, "is not a patch image");
  Seal("patch-as-base.cryptex", "app", "pb");
  expect_refused("patch-as-base.cryptex", Code::kInvalidArgument, "is not a base image");

  Seal("zcopy.cxpatch", "app", "good");  // scanned after good.cxpatch
  expect_refused("zcopy.cxpatch", Code::kInvalidArgument,
                 "patch good of line app is already in the feed as good.cxpatch");

  Seal("with space.cxpatch", "app", "ws");
  expect_refused("with space.cxpatch", Code::kInvalidArgument, "cannot be served by a feed");

  ASSERT_EQ(symlink("good.cxpatch", (feed_ + "/link.cxpatch").c_str()), 0);
  expect_refused("link.cxpatch", Code::kInvalidArgument, "not a regular file");

  Seal("ctl.cxpatch", "app\x1b[2J", "ctl");
  expect_refused("ctl.cxpatch", Code::kInvalidArgument, "holds a control character");
}

// The manifest and the hash of a file must come from the same bytes: a file
// replaced or rewritten between the two is refused.
TEST_F(PublishTest, FileChangedWhilePublishingIsRefused) {
  Seal("p1.cxpatch", "app", "p1");
  ASSERT_TRUE(Publish(Opts()).ok());
  const std::string before = ReadFile(IndexPath());
  for (const bool replace : {false, true}) {
    unlink((feed_ + "/p1.cxpatch").c_str());
    unlink((feed_ + "/p1.cxpatch.old").c_str());
    unlink((feed_ + "/other.cryptex").c_str());
    Seal("p1.cxpatch", "app", "p1");
    Seal("other.cryptex", "app");
    PublishOptions o = Opts();
    o.after_read = [&](const std::string& path) {
      if (path != feed_ + "/p1.cxpatch") return;
      if (replace) {  // a new file renamed over it (a new inode)
        ASSERT_EQ(link(path.c_str(), (path + ".old").c_str()), 0);
        ASSERT_EQ(rename((feed_ + "/other.cryptex").c_str(), path.c_str()), 0);
      } else {  // rewritten in place
        test::FlipByte(path, test::FileSize(path) / 2);
      }
    };
    auto r = Publish(o);
    ASSERT_FALSE(r.ok()) << replace;
    EXPECT_TRUE(
        Contains(r.status().message(), feed_ + "/p1.cxpatch: changed while it was being published"))
        << r.status().message();
    EXPECT_EQ(ReadFile(IndexPath()), before);
  }
}

TEST_F(PublishTest, NeedsAKeyAndADirectory) {
  PublishOptions o = Opts();
  o.keys.clear();
  EXPECT_EQ(Publish(o).status().code(), Code::kInvalidArgument);
  o = Opts();
  o.dir = feed_ + "/missing";
  auto r = Publish(o);
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(Contains(r.status().message(), feed_ + "/missing")) << r.status().message();
}

TEST_F(PublishTest, IndexFileLargerThanTheLimitIsRefusedUnread) {
  ASSERT_EQ(truncate(IndexPath().c_str(), 0), -1);  // missing
  EXPECT_EQ(ReadIndexFile(IndexPath()).status().code(), Code::kNotFound);
  WriteFile(IndexPath(), "");
  ASSERT_EQ(truncate(IndexPath().c_str(), static_cast<off_t>(kMaxIndexBytes + 1)), 0);
  auto r = ReadIndexFile(IndexPath());
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Code::kCorruption);
  EXPECT_TRUE(Contains(r.status().message(), "more than the limit")) << r.status().message();
}

}  // namespace
}  // namespace cryptex::feed
