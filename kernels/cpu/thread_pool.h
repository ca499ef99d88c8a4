// The CPU backend's thread pool: one per backend (one per rank), sized by --threads, used by
// every op.
//
// Decode at batch 1 runs a few hundred short ops per token (tens of microseconds each), so a
// parallel region must start and end in well under a microsecond when the machine is quiet:
// workers spin on a generation counter for a short while after each region and only then
// sleep (std::atomic wait/notify, a futex on Linux), so an idle server costs no CPU. Every wait
// turns from pause-spinning to yielding after a few hundred microseconds, so that on a machine
// with more runnable threads than cores a waiting thread hands its core to the one it waits for.
// Work is split statically — part t of T gets [n*t/T, n*(t+1)/T) — which is what GEMV over output
// rows and attention over heads want (equal items); the calling thread runs part 0. One region at a
// time: a region may not start another (ops never nest), and only one thread drives the pool.
#pragma once

#include <atomic>
#include <cstdint>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

namespace parafuse {

class ThreadPool {
 public:
  explicit ThreadPool(int threads);  // threads >= 1; threads - 1 workers are started
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int threads() const { return threads_; }

  // Calls fn(begin, end) over a split of [0, n) into at most threads() parts of at least
  // `grain` items each (fewer parts when n is small; n <= grain runs inline). Returns when every
  // part is done; the first exception any part threw is rethrown here.
  template <class Fn>
  void parallel_for(int64_t n, int64_t grain, Fn&& fn) {
    if (n <= 0) return;
    const int64_t parts = parts_for(n, grain);
    if (parts <= 1) {
      fn(int64_t(0), n);
      return;
    }
    run(
        n, int(parts), [](void* ctx, int64_t b, int64_t e) { (*static_cast<Fn*>(ctx))(b, e); },
        &fn);
  }

 private:
  using Thunk = void (*)(void* ctx, int64_t begin, int64_t end);
  int64_t parts_for(int64_t n, int64_t grain) const;
  void run(int64_t n, int parts, Thunk thunk, void* ctx);
  void worker(int index);
  void run_part(int part);

  int threads_;
  std::vector<std::thread> workers_;
  // The current region (written by the caller before the generation is bumped).
  Thunk thunk_ = nullptr;
  void* ctx_ = nullptr;
  int64_t n_ = 0;
  int parts_ = 0;
  std::atomic<uint64_t> generation_{0};
  std::atomic<int> pending_{0};  // workers that have not finished the current region
  std::atomic<bool> stop_{false};
  std::mutex error_mutex_;
  std::exception_ptr error_;
};

}  // namespace parafuse
