// A small pool that lets one request use more than one core: ParallelFor(n,
// fn) hands fn(0..n-1) to the helper threads and returns when all are done.
// Used to decode the chunks of large reads in parallel. No allocation per
// call; a one-item call runs inline on the caller.
//
// Strictly first come, first served: helpers finish the oldest call before
// they start on a newer one, and callers only wait. With readahead the kernel
// has several READs of one file in flight and the reader needs the oldest
// first; sharing the cores among all of them (each caller decoding its own
// items) finished them all late and together, and the cores then idled while
// the reader copied. In-order completion measured 9% faster on the large
// files of /usr/lib/x86_64-linux-gnu (median 0.66 s vs 0.72 s, 7 runs).
//
// Thread safe; any number of callers may use it at once. Helpers start
// lazily on first use, i.e. after fuse_daemonize() has forked.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <deque>
#include <mutex>
#include <thread>
#include <vector>

namespace cryptex::cxfs {

class ParallelPool final {
 public:
  // helpers: the decoding threads, usually one per core; 0 runs all inline.
  explicit ParallelPool(unsigned helpers) : helpers_(helpers) {}
  ~ParallelPool();
  ParallelPool(const ParallelPool&) = delete;
  ParallelPool& operator=(const ParallelPool&) = delete;

  // Calls fn(ctx, i) for every i in [0, n). Returns when all calls returned.
  void ParallelFor(size_t n, void (*fn)(void* ctx, size_t i), void* ctx);

 private:
  struct Task {
    size_t n;
    void (*fn)(void*, size_t);
    void* ctx;
    std::atomic<size_t> next{0};
    std::atomic<size_t> done{0};
    int active = 0;  // GUARDED_BY(mu_): helpers inside Drain(); the caller
                     // keeps the task alive until this is 0
  };
  // Runs items of t until none is left.
  static void Drain(Task& t);
  void Start();
  void HelperLoop();

  const unsigned helpers_;
  std::once_flag started_;
  bool inline_only_ = false;  // written once in Start(), under started_
  std::mutex mu_;
  std::condition_variable work_cv_;  // helpers wait for tasks
  std::condition_variable done_cv_;  // callers wait for their task
  std::deque<Task*> tasks_;          // GUARDED_BY(mu_): tasks with items left
  bool stop_ = false;                // GUARDED_BY(mu_)
  std::vector<std::thread> threads_;
};

}  // namespace cryptex::cxfs
