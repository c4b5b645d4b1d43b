// ParallelPool: every index runs exactly once, concurrent callers do not
// interfere, and a call returns only when all of its items are done (the
// property that keeps the per-request Task on the caller's stack safe).
#include "parallel.h"

#include <gtest/gtest.h>

#include <atomic>
#include <thread>
#include <vector>

namespace cryptex::cxfs {
namespace {

struct Counts {
  std::vector<std::atomic<int>> hits;
  explicit Counts(size_t n) : hits(n) {}
};

void Bump(void* ctx, size_t i) {
  auto* c = static_cast<Counts*>(ctx);
  c->hits[i].fetch_add(1);
}

TEST(ParallelPool, RunsEveryIndexExactlyOnce) {
  ParallelPool pool(3);
  for (size_t n : {0u, 1u, 2u, 7u, 64u}) {
    Counts c(n);
    pool.ParallelFor(n, Bump, &c);
    for (size_t i = 0; i < n; ++i) EXPECT_EQ(c.hits[i].load(), 1) << "n=" << n << " i=" << i;
  }
}

TEST(ParallelPool, WithoutHelpersRunsInline) {
  ParallelPool pool(0);
  Counts c(5);
  pool.ParallelFor(5, Bump, &c);
  for (auto& h : c.hits) EXPECT_EQ(h.load(), 1);
}

TEST(ParallelPool, ConcurrentCallersEachGetAllTheirItemsDone) {
  ParallelPool pool(2);
  constexpr int kCallers = 8, kRounds = 300;
  std::atomic<int> bad{0};
  std::vector<std::thread> callers;
  for (int t = 0; t < kCallers; ++t) {
    callers.emplace_back([&, t] {
      for (int r = 0; r < kRounds; ++r) {
        const size_t n = 1 + static_cast<size_t>((t * 7 + r) % 9);
        Counts c(n);  // on this stack frame: must be finished with on return
        pool.ParallelFor(n, Bump, &c);
        for (auto& h : c.hits)
          if (h.load() != 1) bad.fetch_add(1);
      }
    });
  }
  for (auto& th : callers) th.join();
  EXPECT_EQ(bad.load(), 0);
}

}  // namespace
}  // namespace cryptex::cxfs
