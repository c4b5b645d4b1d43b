// Pusher against a real sealed image with a recording store: after a read
// of one small file it stores exactly the other files decoded in the same
// frame, byte for byte, each frame once, and nothing for files that are not
// packed. The kernel side (FUSE_NOTIFY_STORE) is covered by mount_test.
#include "push.h"

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

class PushTest : public ::testing::Test {
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

    auto trust = test::SealForTest(src, dir_.Join("img.cryptex"), 14, "push");
    ASSERT_TRUE(trust.ok()) << trust.status().ToString();
    trust_ = std::move(*trust);
    ImageOptions io;
    io.trust = trust_.get();
    auto img = Image::Open(dir_.Join("img.cryptex"), io);
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

TEST_F(PushTest, StoresExactlyTheFrameMatesWithTheirBytes) {
  std::map<uint64_t, std::string> stored;
  Pusher pusher(*image_, [&](uint64_t ino, uint64_t, std::span<const uint8_t> bytes) {
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

TEST_F(PushTest, NothingForFilesThatAreNotPacked) {
  size_t calls = 0;
  Pusher pusher(*image_, [&](uint64_t, uint64_t, std::span<const uint8_t>) {
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

TEST_F(PushTest, RefusedStoresAreNotCounted) {
  // The kernel answers ENOENT for inodes it does not have.
  size_t calls = 0;
  Pusher pusher(*image_, [&](uint64_t, uint64_t, std::span<const uint8_t>) {
    ++calls;
    return -ENOENT;
  });
  EXPECT_EQ(pusher.PushMates(Ino("s20")), 0u);
  EXPECT_GT(calls, 0u);
  EXPECT_EQ(pusher.pushed(), 0u);
}

TEST_F(PushTest, BackgroundThreadStoresAfterFileReadAndStopsCleanly) {
  std::mutex mu;
  std::map<uint64_t, std::string> stored;
  Pusher pusher(*image_, [&](uint64_t ino, uint64_t, std::span<const uint8_t> bytes) {
    std::lock_guard<std::mutex> lock(mu);
    stored[ino].assign(reinterpret_cast<const char*>(bytes.data()), bytes.size());
    return 0;
  });
  pusher.FileRead(Ino("s30"));
  pusher.WaitIdle();
  EXPECT_GT(pusher.pushed(), 0u);
  pusher.Stop();
  EXPECT_FALSE(pusher.running());
  const uint64_t pushed = pusher.pushed();
  pusher.FileRead(Ino("s00"));  // after Stop: ignored, no thread restarts
  pusher.ReachedEnd(Ino("s01"));
  pusher.ReachedEnd(Ino("s02"));
  EXPECT_EQ(pusher.queued(), 0u);
  EXPECT_FALSE(pusher.running());
  EXPECT_EQ(pusher.pushed(), pushed);
  std::lock_guard<std::mutex> lock(mu);
  ASSERT_FALSE(stored.empty());
  for (const auto& [ino, content] : stored) EXPECT_EQ(content, files_[NameOf(ino)]);
}

// Run-ahead: records (ino, offset, bytes) pieces and rebuilds each file.
struct Recorder {
  std::map<uint64_t, std::string> files;
  int Store(uint64_t ino, uint64_t offset, std::span<const uint8_t> bytes) {
    std::string& f = files[ino];
    if (f.size() != offset) return -EINVAL;  // pieces arrive in order
    f.append(reinterpret_cast<const char*>(bytes.data()), bytes.size());
    return 0;
  }
};

TEST_F(PushTest, RunAheadStoresTheNextFilesUpToItsBudget) {
  Recorder rec;
  Pusher pusher(*image_, [&](uint64_t ino, uint64_t off, std::span<const uint8_t> b) {
    return rec.Store(ino, off, b);
  });
  // s00..s39 are consecutive inodes (one directory, name order).
  const uint64_t from = Ino("s10");
  // s11..s39, t_copy, t_large: ~145 KB, all under the budget and in range.
  EXPECT_EQ(pusher.RunAhead(from), 31u);
  ASSERT_EQ(rec.files.size(), 31u);
  for (const auto& [name, content] : files_) {
    const uint64_t ino = Ino(name);
    if (ino <= from) {
      EXPECT_EQ(rec.files.count(ino), 0u) << name << " is behind the walk";
    } else {
      EXPECT_EQ(rec.files[ino], content) << name;
    }
  }
  rec.files.clear();
  EXPECT_EQ(pusher.RunAhead(Ino("s20")), 0u) << "files already visited are not stored again";
  EXPECT_TRUE(rec.files.empty());
}

TEST_F(PushTest, RunAheadStoresWholePagesOfAFileLargerThanItsBudget) {
  // A tree of one 3 MiB file after a small one: the budget (1 MiB) covers
  // its first 256 pages exactly.
  const std::string src = dir_.Join("src2");
  ASSERT_EQ(mkdir(src.c_str(), 0755), 0);
  const std::string big = test::RandomBytes(3u << 20, 7);
  test::WriteFile(src + "/a", "first");
  test::WriteFile(src + "/b", big);
  auto trust = test::SealForTest(src, dir_.Join("img2.cryptex"), 17, "push2");
  ASSERT_TRUE(trust.ok()) << trust.status().ToString();
  ImageOptions io;
  io.trust = trust->get();
  auto img = Image::Open(dir_.Join("img2.cryptex"), io);
  ASSERT_TRUE(img.ok()) << img.status().ToString();

  Recorder rec;
  Pusher pusher(**img, [&](uint64_t ino, uint64_t off, std::span<const uint8_t> b) {
    return rec.Store(ino, off, b);
  });
  const uint64_t a = (*img)->Resolve("a")->ino, b = (*img)->Resolve("b")->ino;
  EXPECT_EQ(pusher.RunAhead(a), 1u);
  ASSERT_EQ(rec.files.count(b), 1u);
  EXPECT_EQ(rec.files[b].size(), Pusher::kAheadBytes);
  EXPECT_EQ(rec.files[b], big.substr(0, Pusher::kAheadBytes));
}

TEST_F(PushTest, RunAheadStopsWhereTheKernelHasNoInode) {
  size_t calls = 0;
  Pusher pusher(*image_, [&](uint64_t, uint64_t, std::span<const uint8_t>) {
    ++calls;
    return -ENOENT;
  });
  EXPECT_EQ(pusher.RunAhead(Ino("s00")), 0u);
  EXPECT_EQ(calls, 1u);
}

TEST_F(PushTest, OnlyAWalkTriggersRunAhead) {
  std::mutex mu;
  std::map<uint64_t, int> stores;
  Pusher pusher(*image_, [&](uint64_t ino, uint64_t, std::span<const uint8_t>) {
    std::lock_guard<std::mutex> lock(mu);
    ++stores[ino];
    return 0;
  });
  // The first file read to its end, with files after it: no walk yet (the
  // first end of all must not count as the second of a pair).
  ASSERT_LT(Ino("s03"), Pusher::kScanInodes);
  pusher.ReachedEnd(Ino("s03"));
  // Then one backwards: still no walk.
  pusher.ReachedEnd(Ino("s01"));
  pusher.WaitIdle();
  EXPECT_EQ(pusher.pushed(), 0u);
  {
    std::lock_guard<std::mutex> lock(mu);
    EXPECT_TRUE(stores.empty());
  }
  // Two in order and close together: the files after the second are stored.
  pusher.ReachedEnd(Ino("s02"));
  pusher.WaitIdle();
  pusher.Stop();
  std::lock_guard<std::mutex> lock(mu);
  EXPECT_EQ(stores.count(Ino("s03")), 1u);
  EXPECT_EQ(stores.count(Ino("s04")), 1u);
  EXPECT_EQ(stores.count(Ino("s01")), 0u);
}

}  // namespace
}  // namespace cryptex::cxfs
