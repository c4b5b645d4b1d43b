// Watching a store's committed state (docs/STORE.md, "Mounting a line"): a
// mount of a store line follows every commit on its own, also one whose
// command was killed before it asked the mounts to reload.
//
// The state file is only ever replaced by rename (its commit point), so the
// watcher asks inotify for IN_MOVED_TO (and, for a state restored in place,
// IN_CLOSE_WRITE) of that name in the store directory: a commit is seen at
// once. The directory itself may be replaced (a store restored from a copy):
// inotify reports its removal only once nothing keeps it, and the mount's
// open images do, so the watcher also compares the path's identity (device,
// inode) every kIdentityInterval when idle (one stat(2)), and re-establishes
// the watch by path (every kRewatchInterval until it exists again); a change
// is reported once it is watched again, and after an overflow of the inotify
// queue. A report may be spurious (the caller's reload is idempotent); a
// commit is reported within about kIdentityInterval at worst.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "status.h"

namespace cryptex::cxfs {

inline constexpr std::chrono::milliseconds kRewatchInterval{250};
inline constexpr std::chrono::milliseconds kIdentityInterval{1000};

class StateWatcher final {
 public:
  // Watches DIR for FILE being replaced; calls `on_change` from the
  // watcher's own thread, one call at a time. kIOError if inotify is not
  // available; kNotFound if DIR does not exist now.
  static Result<std::unique_ptr<StateWatcher>> Start(const std::string& dir,
                                                     const std::string& file,
                                                     std::function<void()> on_change);
  // Stops and joins the thread (waits for a running `on_change`).
  // Stop(timeout) returns false, not joined, if the thread has not finished
  // within `timeout` (an `on_change` blocked in the kernel, e.g. a cache
  // invalidation waiting on a request nobody serves any more after the loop
  // ended): the caller unblocks it (aborts the connection), then Stop()s.
  bool Stop(std::chrono::milliseconds timeout);
  ~StateWatcher();
  StateWatcher(const StateWatcher&) = delete;
  StateWatcher& operator=(const StateWatcher&) = delete;
  void Stop();

 private:
  StateWatcher(std::string dir, std::string file, std::function<void()> on_change, int inotify_fd,
               int stop_fd);
  void Run();
  // (Re)establishes the watch on dir_; true if watched now.
  bool Watch();
  void Unwatch();
  // Whether dir_ still names the directory watched.
  bool SameDirectory() const;
  // Reads pending events; true if one says the state may have changed.
  bool Drain();

  const std::string dir_, file_;
  const std::function<void()> on_change_;
  const int inotify_fd_;
  const int stop_fd_;  // eventfd: Stop() writes it
  // The watch and the identity of the directory it is on; -1 while the
  // directory is not watched. Only the thread touches them once started.
  int wd_ = -1;
  dev_t dev_ = 0;
  ino_t ino_ = 0;
  std::mutex mu_;
  std::condition_variable finished_cv_;
  bool finished_ = false;  // GUARDED_BY(mu_): Run() has returned
  std::thread thread_;
};

}  // namespace cryptex::cxfs
