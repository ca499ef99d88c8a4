// Named tensors, read lazily and sliced.
//
// A rank of a TP x PP job asks for the rows [a,b) and/or columns [c,d) of a weight and only
// that slice is read from disk (the files are mmap'ed, so pages outside the slice are never
// touched). Every source presents HF tensor names ("model.layers.3.mlp.up_proj.weight") and HF
// layouts ((out, in) for linear weights). read_f32 converts to F32; read_native hands back a
// slice in the file's own storage format (quantized blocks, halves) for a backend that
// multiplies by that format directly (Backend::supports_weight). Implementations: safetensors
// (runtime/model/safetensors.h), GGUF (gguf.h), synthetic (synthetic.h).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "kernels/core/dtype.h"

namespace parafuse {

struct TensorInfo {
  std::string name;
  DType dtype = DType::F32;    // storage type in the file
  std::vector<int64_t> shape;  // row-major, outermost first (HF order); 1-D for norms
  int64_t rows() const { return shape.size() == 2 ? shape[0] : 1; }
  int64_t cols() const { return shape.empty() ? 1 : shape.back(); }
};

// "[5, 7]" for messages.
std::string shape_string(const std::vector<int64_t>& shape);

// Half-open index range; end = -1 means "to the end".
struct Range {
  int64_t begin = 0;
  int64_t end = -1;
};

// A slice resolved against a tensor's rows and columns: [row_begin, row_end) x
// [col_begin, col_end).
struct Slice {
  int64_t row_begin = 0, row_end = 0, col_begin = 0, col_end = 0;
  int64_t rows() const { return row_end - row_begin; }
  int64_t cols() const { return col_end - col_begin; }
};

// `rows` x `cols` of `info` (1-D or 2-D), or an Error from `origin` naming the tensor, the axis
// and the shape: "x.safetensors: read of tensor 'm' rows [0, 6) is out of range for shape
// [5, 7]". The one range check every source's read_f32 makes.
Slice resolve_slice(const TensorInfo& info, Range rows, Range cols, const std::string& origin);

class WeightSource {
 public:
  virtual ~WeightSource() = default;
  virtual std::string description() const = 0;  // "safetensors /path (3 files)" etc.
  // Every tensor, by HF name (sorted), as each source lists it at construction.
  const std::map<std::string, TensorInfo>& tensors() const { return tensors_; }
  std::vector<std::string> names() const;
  bool has(const std::string& name) const { return tensors_.count(name) != 0; }
  // Throws an Error naming the tensor and the source when it is missing.
  const TensorInfo& info(const std::string& name) const;
  // rows x cols slice of a 1-D or 2-D tensor as F32, row-major, contiguous, into `out`
  // ((row_end-row_begin) * (col_end-col_begin) floats). A 1-D tensor is one row.
  // Throws on an out-of-range slice (resolve_slice).
  virtual void read_f32(const std::string& name, Range rows, Range cols, float* out) const = 0;

  // Whether read_native reads `name` (the base class: F32 tensors, through read_f32).
  virtual bool reads_native(const std::string& name) const;
  // rows x cols slice of a 2-D tensor in its storage format info(name).dtype, row-major,
  // contiguous: rows * dtype_row_bytes(dtype, cols) bytes into `out`. Any row slice works; a
  // column slice of a block-quantized tensor must start and end on a 32-element block
  // (native_cols_ok), else an Error.
  virtual void read_native(const std::string& name, Range rows, Range cols, void* out) const;
  // Whether the column slice `cols` of `name` falls on its storage blocks.
  bool native_cols_ok(const std::string& name, Range cols) const;
  // FP8 weights read natively (F8_E4M3 codes): the dequantization scale of each of the rows
  // `rows` of `name`, one float per row (a per-tensor scale repeated), so that row r's values
  // are f8_e4m3_to_f32(code) * out[r] exactly as read_f32 gives them; and the weight's static
  // activation scale (ModelOpt `input_scale`), 0 where it has none. The base class reads no
  // FP8 natively: read_row_scales is an Error there.
  virtual void read_row_scales(const std::string& name, Range rows, float* out) const;
  virtual float input_scale(const std::string& name) const;

  // Convenience: the whole tensor.
  std::vector<float> read_all(const std::string& name) const;

 protected:
  // Filled by each source's constructor; never changed after.
  std::map<std::string, TensorInfo> tensors_;
};

}  // namespace parafuse
