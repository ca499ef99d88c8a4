// The memory bandwidth a CPU rank can reach, measured: what bench_tokens and `parafuse bench`
// set decode's weight bandwidth beside.
#pragma once

#include <cstddef>

namespace parafuse {

struct MemoryBandwidth {
  double copy = 0;  // bytes/s, bytes read + bytes written (STREAM's convention)
  double read = 0;  // bytes/s, bytes read
};

// `threads` threads, each on its slice of `bytes`-byte buffers from the cpu backend's allocator
// (the 2 MiB pages that weights and the KV cache live in; 4 KiB pages copy slower on this
// project's machines, which would flatter a fraction of the figure). Copy: memcpy. Read: the
// slice summed 8 bytes at a time with a prefetch 1 KiB ahead, the most a GEMV that only streams
// its weights could reach (one core alone reads well below half of a copy's bytes: it keeps too
// few misses in flight). The best of five rounds after a warm-up; `bytes` should be well beyond
// the caches. Ranks sharing a machine may measure at once and add their figures up.
MemoryBandwidth measure_memory_bandwidth(int threads, size_t bytes);

}  // namespace parafuse
