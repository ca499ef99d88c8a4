#include "kernels/backend.h"

#include "kernels/core/error.h"
#include "kernels/core/quant.h"  // dequantize_row

namespace parafuse {

Tensor Tensor::rows_view(int64_t begin, int64_t end) const {
  PF_CHECK(0 <= begin && begin <= end && end <= rows, "rows_view [{}, {}) outside {} rows", begin,
           end, rows);
  Tensor t = *this;
  t.data = static_cast<char*>(data) + size_t(begin) * dtype_row_bytes(dtype, row_stride);
  if (scales) t.scales = scales + begin;
  t.rows = end - begin;
  return t;
}

Tensor Tensor::cols_view(int64_t begin, int64_t end) const {
  PF_CHECK(0 <= begin && begin <= end && end <= cols, "cols_view [{}, {}) outside {} cols", begin,
           end, cols);
  Tensor t = *this;
  t.data = static_cast<char*>(data) + dtype_row_bytes(dtype, begin);
  t.cols = end - begin;
  return t;
}

Buffer& Buffer::operator=(Buffer&& o) noexcept {
  if (this != &o) {
    reset();
    data_ = o.data_;
    bytes_ = o.bytes_;
    free_ = std::move(o.free_);
    o.data_ = nullptr;
    o.bytes_ = 0;
  }
  return *this;
}

void Buffer::reset() {
  if (data_ && free_) free_(data_);
  data_ = nullptr;
  bytes_ = 0;
}

std::string_view op_name(Op op) {
  switch (op) {
    case Op::Gemm: return "gemm";
    case Op::RmsNorm: return "rmsnorm";
    case Op::Rope: return "rope";
    case Op::KvStore: return "kv_store";
    case Op::Attention: return "attention";
    case Op::SwiGlu: return "swiglu";
    case Op::Add: return "add";
    case Op::Embedding: return "embedding";
    case Op::Sample: return "sample";
    case Op::Copy: return "copy";
  }
  return "?";
}

Tensor Backend::alloc_tensor(Buffer& owner, DType dtype, int64_t rows, int64_t cols) {
  PF_CHECK(rows >= 0 && cols >= 0, "alloc_tensor: negative shape ({}, {})", rows, cols);
  owner = alloc(size_t(rows) * dtype_row_bytes(dtype, cols));
  return Tensor{owner.data(), dtype, rows, cols, cols};
}

void Backend::upload_weight(const void* host, const Tensor& dst) {
  PF_CHECK(supports_weight(dst.dtype), "upload_weight: the {} backend does not take {} weights",
           name(), dtype_name(dst.dtype));
  if (dst.dtype == DType::F32) {
    upload_f32(static_cast<const float*>(host), dst);
    return;
  }
  // A backend that stores this dtype (its weight_dtype()) but has no raw upload: through F32,
  // which is exact for the half types.
  std::vector<float> values(size_t(dst.numel()));
  const size_t row_bytes = dtype_row_bytes(dst.dtype, dst.cols);
  for (int64_t r = 0; r < dst.rows; ++r)
    dequantize_row(dst.dtype, static_cast<const char*>(host) + size_t(r) * row_bytes, dst.cols,
                   values.data() + r * dst.cols);
  upload_f32(values.data(), dst);
}

}  // namespace parafuse
