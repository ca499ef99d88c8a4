// ThreadPool: see thread_pool.h.
#include "kernels/cpu/thread_pool.h"

#include <chrono>

#include "kernels/core/error.h"

namespace parafuse {
namespace {

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

// How long a worker keeps spinning for the next region before it sleeps: long enough to cover
// the host-side gaps between the ops of one decode step, short enough to be invisible when idle.
constexpr auto kSpin = std::chrono::microseconds(2000);
// How long a waiting thread pause-spins before it starts yielding its core instead: longer than
// the gaps between the ops of a step, so yielding only happens when the thread it waits for has
// lost its core to another process.
constexpr auto kSpinBeforeYield = std::chrono::microseconds(300);

}  // namespace

ThreadPool::ThreadPool(int threads) : threads_(threads) {
  PF_CHECK(threads >= 1, "thread pool: threads must be >= 1, got {}", threads);
  workers_.reserve(size_t(threads - 1));
  for (int i = 1; i < threads; ++i) workers_.emplace_back([this, i] { worker(i); });
}

ThreadPool::~ThreadPool() {
  stop_.store(true);
  generation_.fetch_add(1);
  generation_.notify_all();
  for (std::thread& t : workers_) t.join();
}

int64_t ThreadPool::parts_for(int64_t n, int64_t grain) const {
  if (threads_ == 1) return 1;
  const int64_t by_grain = grain > 0 ? (n + grain - 1) / grain : n;
  return std::min<int64_t>(threads_, by_grain);
}

void ThreadPool::run_part(int part) {
  const int64_t begin = n_ * part / parts_, end = n_ * (part + 1) / parts_;
  try {
    if (begin < end) thunk_(ctx_, begin, end);
  } catch (...) {
    std::lock_guard<std::mutex> lock(error_mutex_);
    if (!error_) error_ = std::current_exception();
  }
}

void ThreadPool::run(int64_t n, int parts, Thunk thunk, void* ctx) {
  thunk_ = thunk;
  ctx_ = ctx;
  n_ = n;
  parts_ = parts;
  error_ = nullptr;
  pending_.store(threads_ - 1, std::memory_order_relaxed);  // every worker acknowledges
  generation_.fetch_add(1, std::memory_order_release);
  generation_.notify_all();
  run_part(0);
  // Spin briefly, then yield: on a busy machine a worker may be waiting for a core, and a
  // spinning caller would keep it from getting one.
  const auto yield_after = std::chrono::steady_clock::now() + kSpinBeforeYield;
  bool yielding = false;
  for (int spins = 1; pending_.load(std::memory_order_acquire) != 0; ++spins) {
    if (yielding) {
      std::this_thread::yield();
    } else {
      cpu_relax();
      if (spins % 256 == 0) yielding = std::chrono::steady_clock::now() > yield_after;
    }
  }
  if (error_) std::rethrow_exception(error_);
}

void ThreadPool::worker(int index) {
  uint64_t seen = 0;
  for (;;) {
    // Spin for the next region, then sleep until the generation changes.
    uint64_t now = generation_.load(std::memory_order_acquire);
    if (now == seen) {
      const auto start = std::chrono::steady_clock::now();
      bool yielding = false;
      int spins = 0;
      while ((now = generation_.load(std::memory_order_acquire)) == seen) {
        if (yielding) {
          std::this_thread::yield();  // let a thread that has work run on this core first
        } else {
          cpu_relax();
        }
        if (++spins % 256 == 0) {
          const auto waited = std::chrono::steady_clock::now() - start;
          yielding = waited > kSpinBeforeYield;
          if (waited > kSpin) generation_.wait(seen, std::memory_order_acquire);
        }
      }
    }
    seen = now;
    if (stop_.load()) return;
    // Parts beyond this region's count have nothing to do (a region may use fewer threads),
    // but every worker acknowledges every region, so none can lag into the next one.
    if (index < parts_) run_part(index);
    pending_.fetch_sub(1, std::memory_order_acq_rel);
  }
}

}  // namespace parafuse
