// Named tensors, read lazily and sliced.
//
// A rank of a TP x PP job asks for the rows [a,b) and/or columns [c,d) of a weight and only
// that slice is read from disk (the files are mmap'ed, so pages outside the slice are never
// touched). Every source presents HF tensor names ("model.layers.3.mlp.up_proj.weight") and HF
// layouts ((out, in) for linear weights), and converts to F32 on read: quantized and half types
// are storage formats only. Implementations: safetensors (runtime/model/safetensors.h), GGUF
// (gguf.h), synthetic (synthetic.h).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "kernels/core/dtype.h"

namespace parafuse {

struct TensorInfo {
  std::string name;
  DType dtype = DType::F32;     // storage type in the file
  std::vector<int64_t> shape;  // row-major, outermost first (HF order); 1-D for norms
  int64_t rows() const { return shape.size() == 2 ? shape[0] : 1; }
  int64_t cols() const { return shape.empty() ? 1 : shape.back(); }
};

// Half-open index range; end = -1 means "to the end".
struct Range {
  int64_t begin = 0;
  int64_t end = -1;
};

class WeightSource {
 public:
  virtual ~WeightSource() = default;
  virtual std::string description() const = 0;  // "safetensors /path (3 files)" etc.
  virtual std::vector<std::string> names() const = 0;
  virtual bool has(const std::string& name) const = 0;
  // Throws an Error naming the tensor and the source when it is missing.
  virtual TensorInfo info(const std::string& name) const = 0;
  // rows x cols slice of a 1-D or 2-D tensor as F32, row-major, contiguous, into `out`
  // ((row_end-row_begin) * (col_end-col_begin) floats). A 1-D tensor is one row.
  // Throws on an out-of-range slice.
  virtual void read_f32(const std::string& name, Range rows, Range cols, float* out) const = 0;

  // Convenience: the whole tensor.
  std::vector<float> read_all(const std::string& name) const;
};

// Opens a model path: a directory with config.json and *.safetensors (single or sharded via
// model.safetensors.index.json), or a .gguf file.
std::unique_ptr<WeightSource> open_weight_source(const std::string& path);

}  // namespace parafuse
