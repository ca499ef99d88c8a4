#include "runtime/model/fp8_quantize.h"

#include <fmt/format.h>

#include <cstring>
#include <vector>

#include "kernels/core/fp8.h"

namespace parafuse {

bool fp8_quantizes(const std::string& name, const TensorInfo& info) {
  if (info.shape.size() != 2 || !name.starts_with("model.layers.")) return false;
  return name.ends_with("_proj.weight") || name.ends_with(".linear_attn.weight") ||
         name.ends_with(".linear_mlp.weight");
}

Fp8QuantizedWeights::Fp8QuantizedWeights(std::unique_ptr<WeightSource> inner)
    : inner_(std::move(inner)) {
  for (const auto& [name, info] : inner_->tensors()) {
    TensorInfo t = info;
    if (fp8_quantizes(name, info)) {
      t.dtype = DType::F8_E4M3;
      ++quantized_;
    }
    tensors_.emplace(name, t);
  }
}

std::string Fp8QuantizedWeights::description() const {
  return fmt::format("{}, {} linear weights quantized to FP8 E4M3 per channel at load",
                     inner_->description(), quantized_);
}

void Fp8QuantizedWeights::read_f32(const std::string& name, Range rows, Range cols,
                                   float* out) const {
  const TensorInfo& t = info(name);
  if (t.dtype != DType::F8_E4M3) return inner_->read_f32(name, rows, cols, out);
  const Slice slice = resolve_slice(t, rows, cols, description());
  const int64_t width = t.cols();
  std::vector<float> row(static_cast<size_t>(width));
  std::vector<uint8_t> codes(static_cast<size_t>(width));
  for (int64_t r = slice.row_begin; r < slice.row_end; ++r) {
    inner_->read_f32(name, Range{r, r + 1}, Range{}, row.data());
    const float scale = quantize_row_e4m3(row.data(), width, codes.data());
    float* dst = out + (r - slice.row_begin) * slice.cols();
    for (int64_t c = slice.col_begin; c < slice.col_end; ++c)
      dst[c - slice.col_begin] = f8_e4m3_to_f32(codes[size_t(c)]) * scale;
  }
}

}  // namespace parafuse
