// Internal helpers of parallel/*.cpp (not for other modules): the one polling loop, the
// timeout wording of errors, and row packing of strided tensors.
//
// Polling: MPI (without a progress thread) and UCX only move data while someone calls MPI_Test /
// ucp_worker_progress, so a waiter must keep polling; but ranks are often oversubscribed
// (4 ranks on 2 cores in CI), where a pure spin starves the peer it waits for. So: spin with
// yields first (latency of small messages), then sleep in short, growing steps capped at
// 100 us (large transfers keep being progressed).
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <thread>

#include <fmt/format.h>

#include "kernels/backend.h"

namespace parafuse {

// Calls `done()` until it returns true (returns true) or `timeout` has passed (returns false).
// `done` is always called at least once, and once more at the deadline.
template <typename Done>
bool poll_until_done(std::chrono::milliseconds timeout, Done&& done) {
  using Clock = std::chrono::steady_clock;
  const auto deadline = Clock::now() + timeout;
  std::chrono::microseconds nap{1};
  for (int spins = 0;; ++spins) {
    if (done()) return true;
    if (Clock::now() >= deadline) return done();
    if (spins < 256) {
      std::this_thread::yield();
    } else {
      std::this_thread::sleep_for(nap);
      nap = std::min(nap * 2, std::chrono::microseconds{100});
    }
  }
}

// "1.5 s" / "250 ms" for error messages.
inline std::string describe_timeout(std::chrono::milliseconds timeout) {
  char text[32];
  if (timeout.count() >= 1000) {
    std::snprintf(text, sizeof text, "%.1f s", double(timeout.count()) / 1000.0);
  } else {
    std::snprintf(text, sizeof text, "%lld ms", static_cast<long long>(timeout.count()));
  }
  return text;
}

// Copies the rows of a strided tensor to contiguous bytes (`out` holds t.bytes()), and back.
inline void pack_rows(const Tensor& t, char* out) {
  const size_t row_bytes = size_t(t.cols) * dtype_size(t.dtype);
  const size_t stride_bytes = size_t(t.row_stride) * dtype_size(t.dtype);
  const char* src = static_cast<const char*>(t.data);
  for (int64_t r = 0; r < t.rows; ++r) {
    std::memcpy(out + size_t(r) * row_bytes, src + size_t(r) * stride_bytes, row_bytes);
  }
}

inline void unpack_rows(const char* in, const Tensor& t) {
  const size_t row_bytes = size_t(t.cols) * dtype_size(t.dtype);
  const size_t stride_bytes = size_t(t.row_stride) * dtype_size(t.dtype);
  char* dst = static_cast<char*>(t.data);
  for (int64_t r = 0; r < t.rows; ++r) {
    std::memcpy(dst + size_t(r) * stride_bytes, in + size_t(r) * row_bytes, row_bytes);
  }
}

// "recv from peer 1 (tag 7, 4096 bytes, ucx)": names one point-to-point message in errors.
inline std::string describe_message(bool is_send, int peer, uint64_t tag, size_t bytes,
                                    const char* transport) {
  return fmt::format("{} peer {} (tag {}, {} bytes, {})", is_send ? "send to" : "recv from", peer,
                     tag, bytes, transport);
}

// A tensor whose rows are not back to back (a single row always is).
inline bool needs_packing(const Tensor& t) {
  return !t.contiguous() && t.rows > 1;
}

}  // namespace parafuse
