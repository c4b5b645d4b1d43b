#include "push.h"

#include <algorithm>
#include <system_error>

namespace cryptex::cxfs {

void Pusher::FileRead(uint64_t ino) { Enqueue({ino, false}); }

void Pusher::ReachedEnd(uint64_t ino) {
  // Two ends close together and in order: a walk, not a program reading a
  // file it needs.
  // The first end of all (prev == 0) is not a walk.
  const uint64_t prev = last_end_.exchange(ino, std::memory_order_relaxed);
  if (prev != 0 && ino > prev && ino - prev <= kScanInodes) Enqueue({ino, true});
}

void Pusher::Enqueue(Job job) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stop_ || queue_.size() >= kQueueMax) return;
    if (!queue_.empty() && queue_.back().ino == job.ino && queue_.back().ahead == job.ahead) return;
    queue_.push_back(job);
    // Started on first use, i.e. after fuse_daemonize() has forked.
    if (!started_) {
      started_ = running_ = true;
      try {
        thread_ = std::thread([this] { Loop(); });
      } catch (const std::system_error&) {
        // No thread (resource limits): push is an optimisation, go without.
        running_ = false;
        stop_ = true;
        queue_.clear();
        return;
      }
    }
  }
  cv_.notify_all();
}

bool Pusher::Stop(std::chrono::milliseconds timeout) {
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

void Pusher::Loop() {
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    cv_.wait(lock, [this] { return stop_ || !queue_.empty(); });
    if (stop_) {
      running_ = false;
      cv_.notify_all();
      return;
    }
    const Job job = queue_.front();
    queue_.pop_front();
    busy_ = true;
    lock.unlock();
    if (job.ahead) {
      RunAhead(job.ino);
    } else {
      PushMates(job.ino);
    }
    lock.lock();
    busy_ = false;
    cv_.notify_all();
  }
}

void Pusher::WaitIdle() {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait(lock, [this] { return !running_ || (queue_.empty() && !busy_); });
}

size_t Pusher::queued() const {
  std::lock_guard<std::mutex> lock(mu_);
  return queue_.size();
}

bool Pusher::running() const {
  std::lock_guard<std::mutex> lock(mu_);
  return running_;
}

bool Pusher::RecentlyStored(uint64_t ino) const {
  return std::find(recent_files_.begin(), recent_files_.end(), ino) != recent_files_.end();
}

bool Pusher::StoreFile(uint64_t ino, uint64_t length) {
  for (uint64_t off = 0; off < length;) {
    const uint64_t n = std::min(kStorePiece, length - off);
    buf_.resize(static_cast<size_t>(n));
    Result<size_t> got = image_.Read(ino, off, buf_);
    // A bad block: the reader's own read reports it.
    if (!got.ok() || *got != n) return false;
    if (store_(ino, off, buf_) != 0) return false;
    off += n;
  }
  recent_files_[recent_files_next_] = ino;
  recent_files_next_ = (recent_files_next_ + 1) % kRecentFiles;
  return true;
}

size_t Pusher::PushMates(uint64_t ino) {
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
      if (RecentlyStored(mate)) continue;
      Result<InodeInfo> in = image_.GetInode(mate);
      if (!in.ok() || !StoreFile(mate, in->size)) continue;
      ++stored;
    }
  }
  pushed_.fetch_add(stored, std::memory_order_relaxed);
  return stored;
}

size_t Pusher::RunAhead(uint64_t ino) {
  uint64_t budget = kAheadBytes;
  size_t stored = 0;
  const uint64_t count = image_.inode_count();
  // Files an earlier trigger already visited are skipped.
  for (uint64_t y = std::max(ino + 1, ahead_next_); y <= ino + kScanInodes && y <= count; ++y) {
    Result<InodeInfo> in = image_.GetInode(y);
    if (!in.ok()) break;
    if (!in->is_reg() || in->size == 0) {
      ahead_next_ = y + 1;
      continue;
    }
    if (RecentlyStored(y)) {  // e.g. a frame-mate of a file read just before
      ahead_next_ = y + 1;
      continue;
    }
    const uint64_t length = std::min(in->size, budget & ~uint64_t{4095});
    if (length == 0) break;
    // ENOENT: the walk has not reached it (the kernel has no inode yet); a
    // later trigger tries it again.
    if (!StoreFile(y, length)) break;
    ahead_next_ = y + 1;
    ++stored;
    budget -= length;
  }
  pushed_.fetch_add(stored, std::memory_order_relaxed);
  return stored;
}

}  // namespace cryptex::cxfs
