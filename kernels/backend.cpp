#include "kernels/backend.h"

#include "kernels/core/error.h"

namespace parafuse {

Tensor Tensor::rows_view(int64_t begin, int64_t end) const {
  PF_CHECK(0 <= begin && begin <= end && end <= rows, "rows_view [{}, {}) outside {} rows", begin,
           end, rows);
  Tensor t = *this;
  t.data = static_cast<char*>(data) + size_t(begin * row_stride) * dtype_size(dtype);
  t.rows = end - begin;
  return t;
}

Tensor Tensor::cols_view(int64_t begin, int64_t end) const {
  PF_CHECK(0 <= begin && begin <= end && end <= cols, "cols_view [{}, {}) outside {} cols", begin,
           end, cols);
  Tensor t = *this;
  t.data = static_cast<char*>(data) + size_t(begin) * dtype_size(dtype);
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
  owner = alloc(size_t(rows * cols) * dtype_size(dtype));
  return Tensor{owner.data(), dtype, rows, cols, cols};
}

}  // namespace parafuse
