// Pack push: when a read has just decoded a frame of packed small files, hand
// the other files of that frame to the kernel's page cache too, so reading
// them costs no request at all (FUSE_NOTIFY_STORE).
//
// Small files are packed into shared frames in inode order, and a directory's
// files are read together (find | xargs cat, cp -r, a package scan), so the
// frame a read decoded is, most of the time, the frame the next reads need.
// Without the push, each of those files is one synchronous READ round trip
// with the reader waiting; with it, a background thread copies bytes that are
// already decoded and verified while the reader works.
//
// Bounded by design: only files in the same frame as one just read (at most
// a chunk of bytes per frame), only inodes the kernel already has (the store
// fails with ENOENT for the others, and nothing is created), each frame once
// per recent window, and a short queue that drops work instead of growing.
// The bytes come from Image::Read, i.e. they are verified like every read.
//
// Thread safety: FileRead() may be called from any thread. Stop() must be
// called before whatever `store` uses (the FUSE session) goes away.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <span>
#include <thread>
#include <vector>

#include "image.h"

namespace cryptex::cxfs {

class PackPusher final {
 public:
  // Puts `bytes` at offset 0 of inode `ino` in the page cache. Returns 0 or
  // a negative errno (-ENOENT: the kernel has no inode `ino`).
  using StoreFn = std::function<int(uint64_t ino, std::span<const uint8_t> bytes)>;

  // How far on each side of a file the scan for frame-mates looks.
  static constexpr uint64_t kScanInodes = 64;

  PackPusher(const Image& image, StoreFn store) : image_(image), store_(std::move(store)) {}
  ~PackPusher() { Stop(); }
  PackPusher(const PackPusher&) = delete;
  PackPusher& operator=(const PackPusher&) = delete;

  // A read of regular file `ino` was served. Cheap; never waits for a store.
  void FileRead(uint64_t ino);

  // Drops queued work and waits up to `timeout` for the store in progress to
  // finish; true once the thread is gone (or never ran). A store can block
  // on a page that a READ nobody serves any more holds locked (the session
  // loop ended on a signal): then false, and the caller aborts the
  // connection, which ends that READ, and calls Stop again.
  bool Stop(std::chrono::milliseconds timeout = std::chrono::milliseconds::max());

  // Files stored into the page cache so far.
  uint64_t pushed() const { return pushed_.load(std::memory_order_relaxed); }

  // Synchronous core of the thread, for tests: stores every frame-mate of
  // `ino` the kernel accepts. Returns how many were stored.
  size_t PushMates(uint64_t ino);

 private:
  void Loop();

  static constexpr size_t kQueueMax = 64;
  static constexpr size_t kRecentFrames = 16;

  const Image& image_;
  const StoreFn store_;
  std::atomic<uint64_t> pushed_{0};

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<uint64_t> queue_;  // GUARDED_BY(mu_)
  bool stop_ = false;           // GUARDED_BY(mu_)
  bool started_ = false;        // GUARDED_BY(mu_)
  bool running_ = false;        // GUARDED_BY(mu_): the thread is inside Loop()
  std::thread thread_;

  // Used by the pushing thread only (or a test calling PushMates directly).
  std::array<uint64_t, kRecentFrames> recent_{};  // frame + 1 of frames done; 0: empty
  size_t recent_next_ = 0;
  std::vector<uint8_t> buf_;
};

}  // namespace cryptex::cxfs
