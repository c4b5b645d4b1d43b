#include "parallel.h"

#include <system_error>

namespace cryptex::cxfs {

ParallelPool::~ParallelPool() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  work_cv_.notify_all();
  for (auto& t : threads_) t.join();
}

void ParallelPool::Start() {
  // Fewer helpers than asked (resource limits) still work; none means inline.
  try {
    for (unsigned i = 0; i < helpers_; ++i) threads_.emplace_back([this] { HelperLoop(); });
  } catch (const std::system_error&) {
  }
  inline_only_ = threads_.empty();
}

void ParallelPool::Drain(Task& t) {
  for (size_t i; (i = t.next.fetch_add(1, std::memory_order_relaxed)) < t.n;) {
    t.fn(t.ctx, i);
    t.done.fetch_add(1, std::memory_order_acq_rel);
  }
}

void ParallelPool::HelperLoop() {
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    work_cv_.wait(lock, [this] { return stop_ || !tasks_.empty(); });
    if (stop_) return;
    Task* t = tasks_.front();
    if (t->next.load(std::memory_order_relaxed) >= t->n) {
      tasks_.pop_front();  // nothing left to hand out
      continue;
    }
    ++t->active;
    lock.unlock();
    Drain(*t);
    lock.lock();
    --t->active;
    done_cv_.notify_all();
  }
}

void ParallelPool::ParallelFor(size_t n, void (*fn)(void*, size_t), void* ctx) {
  if (n == 0) return;
  if (n == 1 || helpers_ == 0) {
    for (size_t i = 0; i < n; ++i) fn(ctx, i);
    return;
  }
  std::call_once(started_, [this] { Start(); });
  if (inline_only_) {
    for (size_t i = 0; i < n; ++i) fn(ctx, i);
    return;
  }
  Task t;
  t.n = n;
  t.fn = fn;
  t.ctx = ctx;
  {
    std::lock_guard<std::mutex> lock(mu_);
    tasks_.push_back(&t);
  }
  work_cv_.notify_all();
  std::unique_lock<std::mutex> lock(mu_);
  done_cv_.wait(lock,
                [&] { return t.done.load(std::memory_order_acquire) == t.n && t.active == 0; });
  // All items are claimed and no helper is inside the task: it may still sit
  // in the queue, and must leave it before it goes out of scope.
  for (auto it = tasks_.begin(); it != tasks_.end(); ++it) {
    if (*it == &t) {
      tasks_.erase(it);
      break;
    }
  }
}

}  // namespace cryptex::cxfs
