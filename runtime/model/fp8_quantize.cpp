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

void Fp8QuantizedWeights::quantize_rows(const std::string& name, const Slice& slice,
                                        uint8_t* codes_out, float* scales_out,
                                        float* values_out) const {
  const int64_t width = info(name).cols();
  std::vector<float> row(static_cast<size_t>(width));
  std::vector<uint8_t> codes(static_cast<size_t>(width));
  const bool need_codes = codes_out != nullptr || values_out != nullptr;
  for (int64_t r = slice.row_begin; r < slice.row_end; ++r) {
    inner_->read_f32(name, Range{r, r + 1}, Range{}, row.data());
    const float scale = quantize_row_e4m3(row.data(), width, need_codes ? codes.data() : nullptr);
    const size_t at = size_t(r - slice.row_begin) * size_t(slice.cols());
    if (scales_out) scales_out[r - slice.row_begin] = scale;
    if (codes_out)
      std::memcpy(codes_out + at, codes.data() + slice.col_begin, size_t(slice.cols()));
    if (values_out) {
      for (int64_t c = slice.col_begin; c < slice.col_end; ++c)
        values_out[at + size_t(c - slice.col_begin)] = f8_e4m3_to_f32(codes[size_t(c)]) * scale;
    }
  }
}

void Fp8QuantizedWeights::read_f32(const std::string& name, Range rows, Range cols,
                                   float* out) const {
  const TensorInfo& t = info(name);
  if (t.dtype != DType::F8_E4M3) return inner_->read_f32(name, rows, cols, out);
  quantize_rows(name, resolve_slice(t, rows, cols, description()), nullptr, nullptr, out);
}

bool Fp8QuantizedWeights::reads_native(const std::string& name) const {
  return info(name).dtype == DType::F8_E4M3 || inner_->reads_native(name);
}

void Fp8QuantizedWeights::read_native(const std::string& name, Range rows, Range cols,
                                      void* out) const {
  const TensorInfo& t = info(name);
  if (t.dtype != DType::F8_E4M3) return inner_->read_native(name, rows, cols, out);
  quantize_rows(name, resolve_slice(t, rows, cols, description()), static_cast<uint8_t*>(out),
                nullptr, nullptr);
}

void Fp8QuantizedWeights::read_row_scales(const std::string& name, Range rows, float* out) const {
  const TensorInfo& t = info(name);
  if (t.dtype != DType::F8_E4M3) return inner_->read_row_scales(name, rows, out);
  quantize_rows(name, resolve_slice(t, rows, Range{}, description()), nullptr, out, nullptr);
}

float Fp8QuantizedWeights::input_scale(const std::string& name) const {
  info(name);
  return 0.0f;  // activations are scaled per token
}

}  // namespace parafuse
