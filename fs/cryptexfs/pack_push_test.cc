// PackPusher against a real sealed image with a recording store: after a read
// of one small file it stores exactly the other files decoded in the same
// frame, byte for byte, each frame once, and nothing for files that are not
// packed. The kernel side (FUSE_NOTIFY_STORE) is covered by mount_test.
#include "pack_push.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <cerrno>
#include <chrono>
#include <map>
#include <mutex>
#include <string>
#include <thread>

#include "builder.h"
#include "image.h"
#include "test_util.h"

namespace cryptex::cxfs {
namespace {

class PackPushTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string src = dir_.Join("src");
    ASSERT_EQ(mkdir(src.c_str(), 0755), 0);
    // 16 KiB chunks: the 40 small files below fill several packed frames.
    for (int i = 0; i < 40; ++i) {
      char name[16];
      std::snprintf(name, sizeof name, "s%02d", i);
      std::string content = test::RandomBytes(1000 + static_cast<size_t>(i) * 37, 10 + i);
      test::WriteFile(src + "/" + name, content);
      files_[name] = std::move(content);
    }
    // Not packed: a multi-chunk file, and a copy of s00 (stored once).
    files_["t_large"] = test::RandomBytes(100000, 99);
    test::WriteFile(src + "/t_large", files_["t_large"]);
    files_["t_copy"] = files_["s00"];
    test::WriteFile(src + "/t_copy", files_["t_copy"]);

    auto key = PrivateKey::Generate();
    ASSERT_TRUE(key.ok());
    ASSERT_TRUE(key->SavePair(dir_.Join("k")).ok());
    auto tree = ScanDirectory(src);
    ASSERT_TRUE(tree.ok()) << tree.status().ToString();
    BuildOptions opts;
    opts.output_path = dir_.Join("img.cryptex");
    opts.key = &*key;
    opts.manifest.name = "push";
    opts.chunk_log2 = 14;
    ASSERT_TRUE(WriteImage(*tree, opts).ok());
    auto trust = TrustStore::LoadFile(dir_.Join("k.pub"));
    ASSERT_TRUE(trust.ok()) << trust.status().ToString();
    trust_ = std::make_unique<TrustStore>(std::move(*trust));
    ImageOptions io;
    io.trust = trust_.get();
    auto img = Image::Open(opts.output_path, io);
    ASSERT_TRUE(img.ok()) << img.status().ToString();
    image_ = std::move(*img);
  }

  uint64_t Ino(const std::string& name) {
    auto in = image_->Resolve(name);
    EXPECT_TRUE(in.ok()) << name;
    return in.ok() ? in->ino : 0;
  }
  std::string NameOf(uint64_t ino) {
    for (const auto& [name, content] : files_)
      if (Ino(name) == ino) return name;
    return "?";
  }

  test::TempDir dir_;
  std::map<std::string, std::string> files_;
  std::unique_ptr<TrustStore> trust_;
  std::unique_ptr<Image> image_;
};

TEST_F(PackPushTest, StoresExactlyTheFrameMatesWithTheirBytes) {
  std::map<uint64_t, std::string> stored;
  PackPusher pusher(*image_, [&](uint64_t ino, std::span<const uint8_t> bytes) {
    stored[ino].assign(reinterpret_cast<const char*>(bytes.data()), bytes.size());
    return 0;
  });
  const uint64_t first = Ino("s05");
  auto frame = image_->SingleFrameOf(first);
  ASSERT_TRUE(frame.ok());
  ASSERT_NE(*frame, Image::kNoFrame);

  // Expected: every other file whose bytes sit in the same frame, except the
  // copy of s00: stored once, it points into this frame from far away in
  // inode order, past frames the scan stops at (it is read normally).
  std::map<uint64_t, std::string> want;
  for (const auto& [name, content] : files_) {
    if (name == "t_copy") continue;
    const uint64_t ino = Ino(name);
    auto f = image_->SingleFrameOf(ino);
    ASSERT_TRUE(f.ok());
    if (ino != first && *f == *frame) want[ino] = content;
  }
  ASSERT_GE(want.size(), 3u) << "the tree should pack several files per frame";

  EXPECT_EQ(pusher.PushMates(first), want.size());
  EXPECT_EQ(pusher.pushed(), want.size());
  ASSERT_EQ(stored.size(), want.size());
  for (const auto& [ino, content] : want) {
    ASSERT_TRUE(stored.count(ino)) << NameOf(ino) << " was not stored";
    EXPECT_EQ(stored[ino], content) << NameOf(ino) << " stored wrong bytes";
  }

  // The same frame again (any of its files): already done.
  stored.clear();
  EXPECT_EQ(pusher.PushMates(want.begin()->first), 0u);
  EXPECT_TRUE(stored.empty());
}

TEST_F(PackPushTest, NothingForFilesThatAreNotPacked) {
  size_t calls = 0;
  PackPusher pusher(*image_, [&](uint64_t, std::span<const uint8_t>) {
    ++calls;
    return 0;
  });
  auto large = image_->SingleFrameOf(Ino("t_large"));
  ASSERT_TRUE(large.ok());
  EXPECT_EQ(*large, Image::kNoFrame);
  EXPECT_EQ(pusher.PushMates(Ino("t_large")), 0u);
  EXPECT_EQ(pusher.PushMates(image_->root_ino()), 0u);  // a directory
  EXPECT_EQ(calls, 0u);
}

TEST_F(PackPushTest, RefusedStoresAreNotCounted) {
  // The kernel answers ENOENT for inodes it does not have.
  size_t calls = 0;
  PackPusher pusher(*image_, [&](uint64_t, std::span<const uint8_t>) {
    ++calls;
    return -ENOENT;
  });
  EXPECT_EQ(pusher.PushMates(Ino("s20")), 0u);
  EXPECT_GT(calls, 0u);
  EXPECT_EQ(pusher.pushed(), 0u);
}

TEST_F(PackPushTest, BackgroundThreadStoresAfterFileReadAndStopsCleanly) {
  std::mutex mu;
  std::map<uint64_t, std::string> stored;
  PackPusher pusher(*image_, [&](uint64_t ino, std::span<const uint8_t> bytes) {
    std::lock_guard<std::mutex> lock(mu);
    stored[ino].assign(reinterpret_cast<const char*>(bytes.data()), bytes.size());
    return 0;
  });
  pusher.FileRead(Ino("s30"));
  for (int i = 0; i < 500 && pusher.pushed() == 0; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  pusher.Stop();
  pusher.FileRead(Ino("s00"));  // after Stop: ignored, no thread restarts
  std::lock_guard<std::mutex> lock(mu);
  ASSERT_FALSE(stored.empty());
  for (const auto& [ino, content] : stored) EXPECT_EQ(content, files_[NameOf(ino)]);
}

}  // namespace
}  // namespace cryptex::cxfs
