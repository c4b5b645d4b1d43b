// Push: put file bytes into the kernel's page cache before they are asked
// for (FUSE_NOTIFY_STORE), so a reader walking a directory finds them cached
// and makes no request. Two triggers, both from reads the driver serves:
//
//  - Frame-mates. Small files are packed into shared frames in inode order,
//    so a read of one small file decodes a run of its neighbours. Those are
//    stored too: the copy costs little, the frame is already decoded.
//  - Run-ahead. When reads reach the end of two files close together in
//    inode order (a directory walk: find | xargs cat, cp -r, tar, a package
//    scan), the next files in inode order are decoded and stored, up to
//    kAheadBytes per trigger. A directory's files are consecutive inodes.
//
// Without it, each file is one synchronous READ with the reader waiting;
// with it, a background thread decodes and stores while the reader works.
//
// Bounded by design: within kScanInodes of the file read, only inodes the
// kernel already has (the store fails with ENOENT for the others and creates
// nothing), each frame once per recent kRecentFrames, kAheadBytes per
// trigger, and a short queue that drops work instead of growing. The bytes
// come from Image::Read, i.e. they are verified like every read.
//
// Thread safety: FileRead() and ReachedEnd() may be called from any thread.
// Stop() must be called before whatever `store` uses (the FUSE session) goes
// away.
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

class Pusher final {
 public:
  // Puts `bytes` at `offset` of inode `ino` in the page cache. Returns 0 or
  // a negative errno (-ENOENT: the kernel has no inode `ino`).
  using StoreFn = std::function<int(uint64_t ino, uint64_t offset, std::span<const uint8_t> bytes)>;

  // How far from a file read, in inodes, either trigger looks.
  static constexpr uint64_t kScanInodes = 64;
  // Bytes one run-ahead trigger stores at most (whole pages; a file larger
  // than what is left gets its first part).
  static constexpr uint64_t kAheadBytes = 1u << 20;

  Pusher(const Image& image, StoreFn store) : image_(image), store_(std::move(store)) {}
  ~Pusher() { Stop(); }
  Pusher(const Pusher&) = delete;
  Pusher& operator=(const Pusher&) = delete;

  // A read of regular file `ino` at offset 0 was served. Cheap; never waits.
  void FileRead(uint64_t ino);
  // A read of regular file `ino` reached its end. Cheap; never waits.
  void ReachedEnd(uint64_t ino);

  // Drops queued work and waits up to `timeout` for the store in progress to
  // finish; true once the thread is gone (or never ran). A store can block
  // on a page that a READ nobody serves any more holds locked (the session
  // loop ended on a signal): then false, and the caller aborts the
  // connection, which ends that READ, and calls Stop again.
  bool Stop(std::chrono::milliseconds timeout = std::chrono::milliseconds::max());

  // Files (or first parts of files) stored into the page cache so far.
  uint64_t pushed() const { return pushed_.load(std::memory_order_relaxed); }

  // For tests: waits until no job is queued or running (or the thread is
  // gone). Deterministic, unlike waiting for a quiet interval.
  void WaitIdle();
  // For tests: jobs queued and not yet started; whether the thread runs.
  size_t queued() const;
  bool running() const;

  // The thread's two jobs, synchronous, for tests. Each returns how many
  // files the store accepted.
  size_t PushMates(uint64_t ino);
  size_t RunAhead(uint64_t ino);

 private:
  struct Job {
    uint64_t ino;
    bool ahead;  // RunAhead, else PushMates
  };
  void Enqueue(Job job);
  void Loop();
  // Reads [0, length) of `ino` and stores it; false if any part failed.
  bool StoreFile(uint64_t ino, uint64_t length);
  // Whether `ino` was stored lately (by either job): not stored again.
  bool RecentlyStored(uint64_t ino) const;

  static constexpr size_t kQueueMax = 64;
  static constexpr size_t kRecentFrames = 16;
  static constexpr uint64_t kStorePiece = 1u << 20;
  static constexpr size_t kRecentFiles = 256;

  const Image& image_;
  const StoreFn store_;
  std::atomic<uint64_t> pushed_{0};
  // Inode of the latest read that reached its end; 0 (no inode has it): none
  // yet, so the first end is never taken for a walk.
  std::atomic<uint64_t> last_end_{0};

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Job> queue_;  // GUARDED_BY(mu_)
  bool stop_ = false;      // GUARDED_BY(mu_)
  bool started_ = false;   // GUARDED_BY(mu_)
  bool running_ = false;   // GUARDED_BY(mu_): the thread is inside Loop()
  bool busy_ = false;      // GUARDED_BY(mu_): a job taken from queue_ is running
  std::thread thread_;

  // Used by the pushing thread only (or a test calling the jobs directly).
  std::array<uint64_t, kRecentFrames> recent_{};  // frame + 1 of frames done; 0: empty
  size_t recent_next_ = 0;
  uint64_t ahead_next_ = 0;                            // first inode run-ahead has not visited
  std::array<uint64_t, kRecentFiles> recent_files_{};  // inodes stored lately; 0: empty
  size_t recent_files_next_ = 0;
  std::vector<uint8_t> buf_;
};

}  // namespace cryptex::cxfs
