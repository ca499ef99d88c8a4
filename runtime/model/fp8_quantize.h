// `--dtype fp8` on a bf16/f32 checkpoint: its linear weights quantized at load to FP8 E4M3
// with one scale per output channel (kernels/core/fp8.h, quantize_row_e4m3), the recipe of
// compressed-tensors' FP8 "channel" checkpoints.
//
// A wrapper around any WeightSource: the projections of every block (`*_proj.weight`, the
// Nemotron-NAS `linear_attn` / `linear_mlp` replacements) read as their FP8-rounded values,
// code * scale in F32, and report F8_E4M3 as their dtype; the embedding, the LM head and the
// norms are read unchanged (FP8 recipes keep them in high precision). A slice reads its rows
// in full, since a row's scale depends on the whole row, so every rank of a TP split sees the
// same values as one rank reading the whole tensor. A backend that multiplies by FP8 weights
// (Backend::supports_weight) reads the codes and row scales natively; the others get the
// values code * scale in F32 (the reference an FP8 GEMM is checked against).
#pragma once

#include <memory>
#include <string>

#include "runtime/model/weight_source.h"

namespace parafuse {

// Whether `--dtype fp8` quantizes this tensor (a block's 2-D linear weight).
bool fp8_quantizes(const std::string& name, const TensorInfo& info);

class Fp8QuantizedWeights final : public WeightSource {
 public:
  explicit Fp8QuantizedWeights(std::unique_ptr<WeightSource> inner);
  std::string description() const override;
  void read_f32(const std::string& name, Range rows, Range cols, float* out) const override;
  // The quantized weights natively: their codes, and one scale per row (no static activation
  // scale: a backend scales activations per token); the rest as the inner source reads them.
  bool reads_native(const std::string& name) const override;
  void read_native(const std::string& name, Range rows, Range cols, void* out) const override;
  void read_row_scales(const std::string& name, Range rows, float* out) const override;
  float input_scale(const std::string& name) const override;
  int quantized_tensors() const { return quantized_; }

 private:
  // Quantizes the whole rows of `slice` and writes what is asked: the slice's codes, the rows'
  // scales, the slice's dequantized values.
  void quantize_rows(const std::string& name, const Slice& slice, uint8_t* codes, float* scales,
                     float* values) const;

  std::unique_ptr<WeightSource> inner_;
  int quantized_ = 0;
};

}  // namespace parafuse
