#include "pack_push.h"

#include <algorithm>

namespace cryptex::cxfs {

void PackPusher::FileRead(uint64_t ino) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stop_ || queue_.size() >= kQueueMax) return;
    if (!queue_.empty() && queue_.back() == ino) return;
    queue_.push_back(ino);
    // Started on first use, i.e. after fuse_daemonize() has forked.
    if (!started_) {
      started_ = running_ = true;
      thread_ = std::thread([this] { Loop(); });
    }
  }
  cv_.notify_one();
}

bool PackPusher::Stop(std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lock(mu_);
  stop_ = true;
  queue_.clear();
  cv_.notify_all();
  const auto gone = [this] { return !running_; };
  if (timeout == std::chrono::milliseconds::max()) {
    cv_.wait(lock, gone);
  } else if (!cv_.wait_for(lock, timeout, gone)) {
    return false;
  }
  lock.unlock();
  if (thread_.joinable()) thread_.join();
  return true;
}

void PackPusher::Loop() {
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    cv_.wait(lock, [this] { return stop_ || !queue_.empty(); });
    if (stop_) {
      running_ = false;
      cv_.notify_all();
      return;
    }
    const uint64_t ino = queue_.front();
    queue_.pop_front();
    lock.unlock();
    PushMates(ino);
    lock.lock();
  }
}

size_t PackPusher::PushMates(uint64_t ino) {
  Result<uint64_t> frame = image_.SingleFrameOf(ino);
  if (!frame.ok() || *frame == Image::kNoFrame) return 0;
  const uint64_t f = *frame;
  for (uint64_t r : recent_) {
    if (r == f + 1) return 0;
  }
  recent_[recent_next_] = f + 1;
  recent_next_ = (recent_next_ + 1) % kRecentFrames;

  size_t stored = 0;
  const uint64_t count = image_.inode_count();
  for (int dir : {+1, -1}) {
    for (uint64_t k = 1; k <= kScanInodes; ++k) {
      const uint64_t mate = dir > 0 ? ino + k : ino - k;
      if (mate < 1 || mate > count) break;
      Result<uint64_t> mf = image_.SingleFrameOf(mate);
      if (!mf.ok()) break;                   // a corrupt neighbour: its own read reports it
      if (*mf == Image::kNoFrame) continue;  // directory, symlink, large file
      if (*mf != f) {
        // Packs fill frames in inode order, so past this frame's range the
        // frame numbers move away from f; files stored once and shared
        // (dedup) may point back to older frames in between.
        if (dir > 0 ? *mf > f : *mf < f) break;
        continue;
      }
      Result<InodeInfo> in = image_.GetInode(mate);
      if (!in.ok()) break;
      buf_.resize(static_cast<size_t>(in->size));
      Result<size_t> got = image_.Read(mate, 0, buf_);
      if (!got.ok() || *got != in->size) break;  // the reader's own read will fail
      if (store_(mate, buf_) == 0) ++stored;
    }
  }
  pushed_.fetch_add(stored, std::memory_order_relaxed);
  return stored;
}

}  // namespace cryptex::cxfs
