#include "kernels/cpu/memory_bandwidth.h"

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <thread>
#include <vector>

#include "kernels/cpu/cpu_backend.h"

namespace parafuse {
namespace {

double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

}  // namespace

MemoryBandwidth measure_memory_bandwidth(int threads, size_t bytes) {
  threads = std::max(threads, 1);
  bytes = std::max<size_t>(bytes / 64 * 64, 64);
  CpuBackend host(1);
  const Buffer src_buffer = host.alloc(bytes), dst_buffer = host.alloc(bytes);
  const char* src = static_cast<const char*>(src_buffer.data());
  char* dst = static_cast<char*>(dst_buffer.data());
  std::memset(src_buffer.data(), 1, bytes);  // first touch, outside the timed rounds
  std::memset(dst_buffer.data(), 0, bytes);
  std::vector<uint64_t> sums(size_t(threads), 0);
  auto run = [&](bool copy) {
    const double t0 = now();
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; ++t) {
      pool.emplace_back([&, t] {
        const size_t begin = bytes * size_t(t) / size_t(threads) / 64 * 64;
        const size_t end = bytes * size_t(t + 1) / size_t(threads) / 64 * 64;
        if (copy) {
          std::memcpy(dst + begin, src + begin, end - begin);
          return;
        }
        uint64_t sum = 0;
        for (size_t i = begin; i < end; i += 64) {
          __builtin_prefetch(src + i + 1024);
          uint64_t line[8];
          std::memcpy(line, src + i, 64);
          sum += line[0] + line[1] + line[2] + line[3] + line[4] + line[5] + line[6] + line[7];
        }
        sums[size_t(t)] += sum;  // kept, so that the loop is not optimized away
      });
    }
    for (std::thread& th : pool) th.join();
    return double(copy ? 2 * bytes : bytes) / (now() - t0);
  };
  MemoryBandwidth best;
  for (int round = 0; round < 6; ++round) {
    const double copy = run(true), read = run(false);
    if (round > 0) {
      best.copy = std::max(best.copy, copy);
      best.read = std::max(best.read, read);
    }
  }
  return best;
}

}  // namespace parafuse
