// StagedCollectives (see staged_collectives.h).
#include "parallel/staged_collectives.h"

#include <chrono>

#include "kernels/core/error.h"

namespace parafuse {
namespace {

Tensor host_view(std::vector<float>& v, int64_t rows, int64_t cols) {
  v.resize(size_t(rows * cols));
  return Tensor{v.data(), DType::F32, rows, cols, cols};
}

}  // namespace

void StagedCollectives::all_reduce_sum(const Tensor& t) {
  CollectiveTimer timer(stats_);
  ++stats_.all_reduce_calls;
  stats_.bytes += int64_t(t.bytes());
  if (t.numel() == 0) return;
  Tensor h = host_view(staging_, t.rows, t.cols);
  backend_.download_f32(t, staging_.data());
  host_.all_reduce_sum(h);
  backend_.upload_f32(staging_.data(), t);
}

void StagedCollectives::all_gather_rows(const Tensor& local, const Tensor& out) {
  CollectiveTimer timer(stats_);
  ++stats_.all_gather_calls;
  PF_CHECK(local.dtype == out.dtype && local.cols == out.cols && out.rows == local.rows * size(),
           "all_gather on {}: out ({}, {}) must be ({} ranks x {} rows, {})", name(), out.rows,
           out.cols, size(), local.rows, local.cols);
  stats_.bytes += int64_t(out.bytes());
  if (out.numel() == 0) return;
  Tensor h_local = host_view(staging_, local.rows, local.cols);
  Tensor h_out = host_view(staging_out_, out.rows, out.cols);
  backend_.download_f32(local, staging_.data());
  host_.all_gather_rows(h_local, h_out);
  backend_.upload_f32(staging_out_.data(), out);
}

void StagedCollectives::broadcast_bytes(void* data, size_t bytes, int root) {
  CollectiveTimer timer(stats_);
  ++stats_.broadcast_calls;
  stats_.bytes += int64_t(bytes);
  host_.broadcast_bytes(data, bytes, root);
}

void StagedCollectives::barrier() {
  CollectiveTimer timer(stats_);
  ++stats_.barrier_calls;
  host_.barrier();
}

}  // namespace parafuse
